// trellis/quantize.h: `trellis quantize` as a library call (spec 5): a Hugging Face model
// directory in, an EXL3 model directory that ExLlamaV3 and trellis load out.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace trellis {

struct QuantizeJob {
  std::string input_dir;
  std::string output_dir;
  std::string work_dir;        // checkpoints; default: <output_dir>.work
  double bits = 4.0;           // target average bits per weight, 1..8 (fractional allowed)
  int head_bits = 6;           // 1..8, or 16 = keep the output head fp16
  std::string codebook = "mul1";    // mul1 | mcg | 3inst
  std::string out_scales = "always";  // always | never | auto
  int cal_rows = 250;
  int cal_cols = 2048;
  std::string cal_data_dir;    // default: the project's data/calibration
  std::string device = "auto";  // auto (CUDA device 0 when present), cpu or cuda[:N]
  size_t threads = 0;          // 0: all hardware threads
  bool resume = false;         // continue from work_dir's checkpoints
  uint64_t seed = 0;           // random calibration rows and sign vectors; 0 = the default set
  uint64_t shard_bytes = 8192ull << 20;
};

struct QuantizeSummary {
  double bits = 0;             // recorded average K over the budgeted tensors
  uint64_t output_bytes = 0;   // bytes of tensors written
  uint64_t tiles = 0;          // tiles encoded (final encodes, not the scale search)
  double seconds = 0;
  // Wall time by stage (name, seconds). The stages are disjoint, so they add up to about
  // `seconds`; the tile encoder's calls are their own stages, not part of their callers'.
  std::vector<std::pair<std::string, double>> stages;
};

// Runs the job. Throws trellis::Error with a clear message on bad input (unsupported
// architecture, missing or non-finite weights, an output directory that exists, settings that
// conflict with a work directory being resumed, I/O failure); never leaves a partial output
// directory under the output name.
QuantizeSummary quantize_model(const QuantizeJob& job);

}  // namespace trellis
