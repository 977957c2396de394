// trellis/model_tools.h: whole-directory operations behind `trellis inspect` and
// `trellis dequantize`. This is public API: it exposes no internal headers.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace trellis {

// One tensor of a model directory as `inspect` reports it.
struct InspectedTensor {
  std::string name;
  std::string kind;    // "exl3.trellis", "exl3.suh", ..., "dense", "unknown"
  std::string dtype;   // safetensors tag
  std::vector<int64_t> shape;
  std::string file;    // shard holding it
  uint64_t nbytes = 0;
};

// One EXL3 linear layer as `inspect` reports it.
struct InspectedLayer {
  std::string key;     // module key, e.g. model.layers.0.mlp.down_proj
  int64_t in_features = 0, out_features = 0;  // padded (k, n)
  int K = 0;
  std::string codebook;  // "3inst", "mcg", "mul1"
  bool is_head = false;
  bool legacy_signs = false;
  bool has_bias = false;
  uint64_t nbytes = 0;   // all of the layer's tensors
};

struct InspectReport {
  std::string dir;
  std::string architecture;  // first entry of config.json "architectures"
  std::string model_type;
  int64_t num_layers = 0, hidden_size = 0, intermediate_size = 0, num_heads = 0, num_kv_heads = 0,
          head_dim = 0, vocab_size = 0, max_position_embeddings = 0;
  double rope_theta = 0;
  std::string rope_type;
  bool tie_word_embeddings = false;
  std::string quant_method;  // "exl3", or "" for an unquantized model
  std::optional<double> config_bits;  // quantization_config.bits as recorded
  std::optional<int> config_head_bits;
  // Nominal bits per weight over the decoder's EXL3 linears (K weighted by k*n), the head's K
  // (16 for an fp16 head, 0 when absent), and the same counting every byte of the layers' tensors
  // (suh, svh, bias included) per weight.
  double decoder_bpw = 0, decoder_bpw_storage = 0, head_bpw = 0;
  uint64_t total_bytes = 0;    // all tensor bytes in the directory
  uint64_t exl3_bytes = 0;     // bytes of EXL3 layers
  std::vector<std::string> files;  // auxiliary files (tokenizer etc.)
  std::vector<InspectedLayer> layers;
  std::vector<InspectedTensor> tensors;
  std::vector<std::string> warnings;
};

// Opens and validates a model directory. Throws trellis::Error on any problem.
InspectReport inspect_model(const std::string& dir);
// The report as a JSON document (pretty-printed).
std::string inspect_report_json(const InspectReport& report);
// The report as human-readable text; `verbose` lists every tensor, otherwise layers summarised.
std::string inspect_report_text(const InspectReport& report, bool verbose);

enum class OutputDType { kF16, kBF16, kF32 };

struct DequantizeOptions {
  OutputDType dtype = OutputDType::kF16;
  bool overwrite = false;       // replace an existing OUT_DIR
  uint64_t shard_bytes = 8ull << 30;  // start a new shard past this size
  bool progress = true;
};

// Turns an EXL3 model directory into an ordinary Hugging Face directory: every EXL3 linear
// reconstructed as `<key>.weight` in (out, in) layout with padding removed, every other tensor
// copied unchanged, every auxiliary file copied, `quantization_config` removed from config.json.
// Streams one layer at a time; writes into a temporary directory renamed to out_dir at the end,
// so out_dir is either complete or absent. Throws trellis::Error.
void dequantize_model(const std::string& in_dir, const std::string& out_dir, const DequantizeOptions& options);

}  // namespace trellis
