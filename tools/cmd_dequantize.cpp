// `trellis dequantize IN_DIR OUT_DIR [--dtype fp16|bf16|fp32]`
#include <cstdio>
#include <map>
#include <memory>

#include "commands.h"
#include "trellis/model_tools.h"

namespace trellis::cli {

Handler add_dequantize(CLI::App& app) {
  struct Options {
    std::string in_dir, out_dir, dtype = "fp16";
    bool overwrite = false;
    double shard_gib = 8.0;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "dequantize", "Turn an EXL3 model into an ordinary Hugging Face directory usable by any engine");
  cmd->add_option("IN_DIR", opt->in_dir, "EXL3 model directory")->required();
  cmd->add_option("OUT_DIR", opt->out_dir, "Output directory (must not exist unless --overwrite)")->required();
  cmd->add_option("--dtype", opt->dtype, "Dtype of reconstructed weights")
      ->check(CLI::IsMember({"fp16", "bf16", "fp32"}))
      ->capture_default_str();
  cmd->add_flag("--overwrite", opt->overwrite, "Replace OUT_DIR if it exists");
  cmd->add_option("--shard-size", opt->shard_gib, "Start a new safetensors shard past this many GiB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->footer(
      "Linear weights are reconstructed in (out, in) layout with padding removed; every other tensor and\n"
      "file is copied; quantization_config is removed. Works layer by layer, and OUT_DIR appears only\n"
      "when complete.");
  return [opt, cmd]() {
    if (!cmd->parsed()) return -1;
    static const std::map<std::string, OutputDType> kTypes = {
        {"fp16", OutputDType::kF16}, {"bf16", OutputDType::kBF16}, {"fp32", OutputDType::kF32}};
    DequantizeOptions options;
    options.dtype = kTypes.at(opt->dtype);
    options.overwrite = opt->overwrite;
    options.shard_bytes = static_cast<uint64_t>(opt->shard_gib * (1ull << 30));
    dequantize_model(opt->in_dir, opt->out_dir, options);
    std::fprintf(stderr, "wrote %s\n", opt->out_dir.c_str());
    return 0;
  };
}

}  // namespace trellis::cli
