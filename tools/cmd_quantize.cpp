// `trellis quantize -i HF_DIR -o OUT_DIR -b BITS ...`: Hugging Face model -> EXL3 (spec 5).
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "commands.h"
#include "trellis/quantize.h"

namespace trellis::cli {

Handler add_quantize(CLI::App& app) {
  auto job = std::make_shared<QuantizeJob>();
  CLI::App* cmd = app.add_subcommand("quantize", "Quantize a Hugging Face model to EXL3 (loads in trellis and ExLlamaV3)");
  cmd->add_option("-i,--input", job->input_dir, "Hugging Face model directory (safetensors, config.json, tokenizer)")
      ->required();
  cmd->add_option("-o,--output", job->output_dir, "Output directory (must not exist; appears only when complete)")
      ->required();
  cmd->add_option("-b,--bits", job->bits, "Target bits per weight, 1..8; fractional targets mix K per tensor")
      ->check(CLI::Range(1.0, 8.0))
      ->capture_default_str();
  cmd->add_option("--head-bits", job->head_bits, "Bits of the output head: 1..8, or 16 to keep it fp16")
      ->capture_default_str();
  cmd->add_option("--codebook", job->codebook, "Trellis codebook")
      ->check(CLI::IsMember({"mul1", "mcg", "3inst"}))
      ->capture_default_str();
  cmd->add_option("--out-scales", job->out_scales, "Output channel scales")
      ->check(CLI::IsMember({"always", "never", "auto"}))
      ->capture_default_str();
  cmd->add_option("--cal-rows", job->cal_rows, "Calibration rows")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--cal-cols", job->cal_cols, "Tokens per calibration row")
      ->check(CLI::Range(16, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--cal-data", job->cal_data_dir, "Directory with prose.txt, code.txt and multilingual.txt (default: the project's)");
  cmd->add_option("--work-dir", job->work_dir, "Checkpoint directory (default: OUT_DIR.work)");
  cmd->add_option("--seed", job->seed,
                  "Calibration-set and sign-vector seed; other seeds give other, equally good conversions")
      ->capture_default_str();
  cmd->add_flag("--resume", job->resume, "Continue an interrupted run from its work directory (same settings)");
  cmd->add_option("--device", job->device, "Device for calibration, Hessians and tile encoding: auto (the first CUDA GPU if there is one), cpu, cuda[:N]")->capture_default_str();
  cmd->add_option("-t,--threads", job->threads, "CPU threads (0 = all)")->capture_default_str();
  auto shard_gib = std::make_shared<double>(8.0);
  cmd->add_option("--shard-size", *shard_gib, "Start a new safetensors shard past this many GiB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->footer(
      "Defaults follow ExLlamaV3's converter: mul1 codebook, 6-bit head, 250 x 2048 calibration tokens.\n"
      "Progress is checkpointed per layer in the work directory; after an interruption (even kill -9),\n"
      "run the same command with --resume. Example:\n"
      "  trellis quantize -i SmolLM2-135M-Instruct -o smol-3bpw -b 3");
  return [job, cmd, shard_gib]() -> int {
    if (!cmd->parsed()) return -1;
    job->shard_bytes = static_cast<uint64_t>(*shard_gib * (1ull << 30));
    const QuantizeSummary s = quantize_model(*job);
    std::fprintf(stderr, "quantized to %s: %.2f bits per weight, %.1f MiB of tensors, %llu tiles in %.1f s (%.0f tiles/s)\n",
                 job->output_dir.c_str(), s.bits, static_cast<double>(s.output_bytes) / (1 << 20),
                 static_cast<unsigned long long>(s.tiles), s.seconds, s.seconds > 0 ? s.tiles / s.seconds : 0.0);
    std::string stages;
    for (const auto& [name, sec] : s.stages)
      if (sec >= 0.05) stages += fmt::format("{}{} {:.1f} s", stages.empty() ? "" : ", ", name, sec);
    std::fprintf(stderr, "time by stage: %s\n", stages.c_str());
    return 0;
  };
}

}  // namespace trellis::cli
