// convert/inspect.cpp: `trellis inspect`: describe and validate a model directory.
#include <algorithm>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "convert/linear_shapes.h"
#include "core/error.h"
#include "exl3/codebook.h"
#include "format/model_dir.h"
#include "trellis/model_tools.h"

namespace trellis {

InspectReport inspect_model(const std::string& dir) {
  const auto model = ModelDir::open(dir);
  const ModelConfig& c = model->config();
  InspectReport r;
  r.dir = dir;
  r.architecture = c.architectures.empty() ? "" : c.architectures.front();
  r.model_type = c.model_type;
  r.num_layers = c.num_hidden_layers;
  r.hidden_size = c.hidden_size;
  r.intermediate_size = c.intermediate_size;
  r.num_heads = c.num_attention_heads;
  r.num_kv_heads = c.num_key_value_heads;
  r.head_dim = c.head_dim;
  r.vocab_size = c.vocab_size;
  r.max_position_embeddings = c.max_position_embeddings;
  r.rope_theta = c.rope_theta;
  r.rope_type = c.rope_scaling.type;
  r.tie_word_embeddings = c.tie_word_embeddings;
  if (c.quantization) {
    r.quant_method = c.quantization->quant_method;
    if (c.quantization->bits > 0) r.config_bits = c.quantization->bits;
    if (c.quantization->head_bits > 0) r.config_head_bits = c.quantization->head_bits;
  }
  r.files = model->aux_files();

  const TensorStore& store = model->tensors();
  std::map<std::string, uint64_t> layer_bytes;
  for (const std::string& name : store.names()) {
    const TensorInfo& info = store.info(name);
    InspectedTensor t;
    t.name = name;
    t.kind = tensor_kind_name(model->kind_of(name));
    t.dtype = std::string(dtype_name(info.dtype));
    t.shape = info.shape;
    t.file = store.file_of(name);
    t.nbytes = info.end - info.begin;
    r.total_bytes += t.nbytes;
    if (model->kind_of(name) == TensorKind::kUnknown)
      r.warnings.push_back(fmt::format("tensor {} is not part of a complete EXL3 layer and not a plain tensor", name));
    r.tensors.push_back(std::move(t));
  }

  double decoder_bits = 0, decoder_weights = 0, decoder_storage = 0;
  bool head_found = false;
  for (const Exl3Layer& layer : model->exl3_layers()) {
    InspectedLayer l;
    l.key = layer.key;
    l.in_features = layer.k;
    l.out_features = layer.n;
    l.K = layer.K;
    l.codebook = std::string(exl3::codebook_name(layer.codebook));
    l.is_head = is_head_key(layer.key);
    l.legacy_signs = layer.legacy_signs;
    l.has_bias = layer.has_bias;
    for (const char* suffix : {".trellis", ".suh", ".svh", ".su", ".sv", ".mcg", ".mul1", ".bias"}) {
      const std::string name = layer.key + suffix;
      if (store.contains(name)) l.nbytes += store.info(name).end - store.info(name).begin;
    }
    r.exl3_bytes += l.nbytes;
    const double weights = static_cast<double>(layer.k) * static_cast<double>(layer.n);
    if (l.is_head) {
      r.head_bpw = layer.K;
      head_found = true;
    } else {
      decoder_bits += weights * layer.K;
      decoder_weights += weights;
      decoder_storage += static_cast<double>(l.nbytes) * 8;
    }
    r.layers.push_back(std::move(l));
  }
  if (decoder_weights > 0) {
    r.decoder_bpw = decoder_bits / decoder_weights;
    r.decoder_bpw_storage = decoder_storage / decoder_weights;
  }
  if (!head_found) {
    for (const char* name : {"lm_head.weight"}) {
      if (store.contains(name)) r.head_bpw = 8.0 * static_cast<double>(dtype_size(store.info(name).dtype));
    }
    if (r.head_bpw == 0 && c.tie_word_embeddings && store.contains("model.embed_tokens.weight"))
      r.head_bpw = 8.0 * static_cast<double>(dtype_size(store.info("model.embed_tokens.weight").dtype));
  }
  if (r.quant_method == "exl3" && model->exl3_layers().empty())
    r.warnings.push_back("config.json says quant_method exl3 but the directory holds no EXL3 layers");
  if (r.config_bits && decoder_weights > 0 && std::abs(*r.config_bits - r.decoder_bpw) > 0.01)
    r.warnings.push_back(fmt::format("quantization_config.bits is {} but the layers average {:.3f} bits per weight",
                                     *r.config_bits, r.decoder_bpw));
  // Every EXL3 layer the config can size must have the padded shape of its real shape.
  for (const Exl3Layer& layer : model->exl3_layers()) {
    const auto dims = llama_linear_dims(c, layer.key);
    if (!dims) continue;
    if (round_up_128(dims->in_features) != layer.k || round_up_128(dims->out_features) != layer.n)
      fail(ErrorKind::kFormat,
           "{}: layer {} has shape {}x{} (in x out, padded) but config.json implies {}x{} (padded {}x{})", dir,
           layer.key, layer.k, layer.n, dims->in_features, dims->out_features, round_up_128(dims->in_features),
           round_up_128(dims->out_features));
  }
  return r;
}

std::string inspect_report_json(const InspectReport& r) {
  nlohmann::ordered_json j;
  j["dir"] = r.dir;
  j["architecture"] = r.architecture;
  j["model_type"] = r.model_type;
  j["config"] = {{"num_hidden_layers", r.num_layers}, {"hidden_size", r.hidden_size},
                 {"intermediate_size", r.intermediate_size}, {"num_attention_heads", r.num_heads},
                 {"num_key_value_heads", r.num_kv_heads}, {"head_dim", r.head_dim},
                 {"vocab_size", r.vocab_size}, {"max_position_embeddings", r.max_position_embeddings},
                 {"rope_theta", r.rope_theta}, {"rope_type", r.rope_type},
                 {"tie_word_embeddings", r.tie_word_embeddings}};
  nlohmann::ordered_json q;
  q["quant_method"] = r.quant_method.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(r.quant_method);
  q["config_bits"] = r.config_bits ? nlohmann::ordered_json(*r.config_bits) : nlohmann::ordered_json();
  q["config_head_bits"] = r.config_head_bits ? nlohmann::ordered_json(*r.config_head_bits) : nlohmann::ordered_json();
  q["decoder_bpw"] = r.decoder_bpw;
  q["decoder_bpw_storage"] = r.decoder_bpw_storage;
  q["head_bpw"] = r.head_bpw;
  j["quantization"] = q;
  j["total_bytes"] = r.total_bytes;
  j["exl3_bytes"] = r.exl3_bytes;
  j["files"] = r.files;
  auto& layers = j["layers"] = nlohmann::ordered_json::array();
  for (const auto& l : r.layers)
    layers.push_back({{"key", l.key}, {"in_features", l.in_features}, {"out_features", l.out_features},
                      {"K", l.K}, {"codebook", l.codebook}, {"is_head", l.is_head},
                      {"legacy_signs", l.legacy_signs}, {"has_bias", l.has_bias}, {"nbytes", l.nbytes}});
  auto& tensors = j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& t : r.tensors)
    tensors.push_back({{"name", t.name}, {"kind", t.kind}, {"dtype", t.dtype}, {"shape", t.shape},
                       {"file", t.file}, {"nbytes", t.nbytes}});
  j["warnings"] = r.warnings;
  return j.dump(2);
}

namespace {
std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.2f} {}", v, units[u]);
}
}  // namespace

std::string inspect_report_text(const InspectReport& r, bool verbose) {
  std::string s;
  s += fmt::format("model        {}\n", r.dir);
  s += fmt::format("architecture {} ({})\n", r.architecture, r.model_type);
  s += fmt::format("shape        {} layers, hidden {}, intermediate {}, heads {}/{} kv, head_dim {}, vocab {}\n",
                   r.num_layers, r.hidden_size, r.intermediate_size, r.num_heads, r.num_kv_heads, r.head_dim,
                   r.vocab_size);
  s += fmt::format("rope         theta {}, scaling {}, max positions {}\n", r.rope_theta, r.rope_type,
                   r.max_position_embeddings);
  s += fmt::format("embeddings   {}\n", r.tie_word_embeddings ? "tied" : "untied");
  if (r.layers.empty()) {
    s += "format       unquantized\n";
  } else {
    std::map<std::string, int> codebooks;
    std::map<int, int> ks;
    for (const auto& l : r.layers) {
      codebooks[l.codebook]++;
      if (!l.is_head) ks[l.K]++;
    }
    std::string cb, kmix;
    for (const auto& [name, count] : codebooks) cb += fmt::format("{}{} ({})", cb.empty() ? "" : ", ", name, count);
    for (const auto& [k, count] : ks) kmix += fmt::format("{}K={} x{}", kmix.empty() ? "" : ", ", k, count);
    s += fmt::format("format       EXL3, {} layers, codebook {}\n", r.layers.size(), cb);
    s += fmt::format("bits         decoder {:.3f} bpw ({}), {:.3f} bpw with scales; head {} bpw\n", r.decoder_bpw,
                     kmix, r.decoder_bpw_storage, r.head_bpw);
    if (r.config_bits)
      s += fmt::format("recorded     bits {} head_bits {}\n", *r.config_bits,
                       r.config_head_bits ? fmt::format("{}", *r.config_head_bits) : std::string("-"));
  }
  s += fmt::format("size         {} in {} tensors ({} in EXL3 layers)\n", human_bytes(r.total_bytes),
                   r.tensors.size(), human_bytes(r.exl3_bytes));
  std::string files;
  for (const auto& f : r.files) files += (files.empty() ? "" : ", ") + f;
  s += fmt::format("files        {}\n", files.empty() ? "(none)" : files);
  if (!r.layers.empty()) {
    s += "\nEXL3 layers (in x out padded, K, codebook):\n";
    for (const auto& l : r.layers)
      s += fmt::format("  {:<48} {:>6} x {:<6} K={} {}{}{}\n", l.key, l.in_features, l.out_features, l.K, l.codebook,
                       l.is_head ? " [head]" : "", l.has_bias ? " +bias" : "");
  }
  if (verbose) {
    s += "\ntensors:\n";
    for (const auto& t : r.tensors) {
      std::string shape = "[";
      for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
      shape += "]";
      s += fmt::format("  {:<56} {:<14} {:<5} {:<20} {}\n", t.name, t.kind, t.dtype, shape, t.file);
    }
  }
  for (const auto& w : r.warnings) s += fmt::format("warning: {}\n", w);
  return s;
}

}  // namespace trellis
