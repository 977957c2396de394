// `trellis ppl`, `trellis kld`, `trellis logits`: evaluation over a text file.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include <fmt/format.h>

#include "commands.h"
#include "trellis/error.h"
#include "trellis/runtime.h"

namespace trellis::cli {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct EvalOptions {
  std::string model, file, device = "auto";
  int64_t ctx = 512, chunks = 0;
  bool json = false;
};

void add_common(CLI::App* cmd, EvalOptions& o) {
  cmd->add_option("-m,--model", o.model, "Model directory")->required();
  cmd->add_option("-f,--file", o.file, "Text file (UTF-8), tokenized without BOS")->required();
  cmd->add_option("--device", o.device,
                  "auto (CUDA, else a discrete Vulkan GPU, else the CPU), cpu, cuda[:N], vulkan[:N]")
      ->capture_default_str();
}

}  // namespace

Handler add_ppl(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand("ppl", "Perplexity of a model on a text file");
  add_common(cmd, *o);
  cmd->add_option("--ctx", o->ctx, "Window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--chunks", o->chunks, "Number of windows (default: all that fit)")
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->footer(
      "The text is cut into non-overlapping windows of --ctx tokens; each window is scored on all\n"
      "tokens but its first. Example: trellis ppl -m MODEL -f wiki.test.raw --ctx 512 --chunks 16");
  return [o, cmd]() {
    if (!cmd->parsed()) return -1;
    const std::string text = read_file(o->file);
    EngineOptions eo;
    eo.device = o->device;
    eo.context = o->ctx;
    auto engine = Engine::open(o->model, eo);
    const auto ids = engine->tokenize(text, false);
    const PerplexityResult r = engine->perplexity(ids, o->ctx, o->chunks, !o->json);
    if (o->json) {
      std::printf("{\"ppl\": %.6f, \"nll\": %.8f, \"tokens\": %lld, \"chunks\": %lld, \"ctx\": %lld, \"seconds\": %.3f, "
                  "\"tokens_per_second\": %.1f}\n",
                  r.ppl, r.nll, static_cast<long long>(r.tokens), static_cast<long long>(r.chunks),
                  static_cast<long long>(r.ctx), r.seconds, static_cast<double>(r.chunks * r.ctx) / r.seconds);
    } else {
      std::printf("perplexity %.4f over %lld tokens (%lld window%s of %lld) in %.1f s, %.0f tokens/s\n", r.ppl,
                  static_cast<long long>(r.tokens), static_cast<long long>(r.chunks), r.chunks == 1 ? "" : "s",
                  static_cast<long long>(r.ctx), r.seconds, static_cast<double>(r.chunks * r.ctx) / r.seconds);
    }
    return 0;
  };
}

Handler add_kld(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  auto ref = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("kld", "KL divergence and top-1 agreement of a model against a reference model");
  add_common(cmd, *o);
  cmd->add_option("--ref", *ref, "Reference model directory (e.g. the unquantized model)")->required();
  cmd->add_option("--ctx", o->ctx, "Window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--chunks", o->chunks, "Number of windows (default: all that fit)")
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->footer(
      "Both models score the same non-overlapping windows of --ctx tokens as `trellis ppl` (all tokens\n"
      "but each window's first): mean KL(reference || model) in nats per token, the share of tokens\n"
      "whose top-1 prediction agrees, and both perplexities. Both run on --device.\n"
      "Example: trellis kld -m MODEL-3bpw --ref MODEL -f wiki.test.raw --ctx 512 --chunks 16");
  return [o, ref, cmd]() {
    if (!cmd->parsed()) return -1;
    const std::string text = read_file(o->file);
    EngineOptions eo;
    eo.device = o->device;
    eo.context = o->ctx;
    auto engine = Engine::open(o->model, eo);
    auto reference = Engine::open(*ref, eo);
    const auto ids = engine->tokenize(text, false);
    if (reference->tokenize(text.substr(0, std::min<size_t>(text.size(), 4096)), false) !=
        engine->tokenize(text.substr(0, std::min<size_t>(text.size(), 4096)), false))
      throw Error(ErrorKind::kInvalidArgument, "the model and the reference tokenize the text differently");
    const KldResult r = engine->kld(*reference, ids, o->ctx, o->chunks, !o->json);
    if (o->json) {
      std::printf("{\"kld\": %.8f, \"top1_agreement\": %.6f, \"ppl\": %.6f, \"ref_ppl\": %.6f, \"tokens\": %lld, "
                  "\"chunks\": %lld, \"ctx\": %lld}\n",
                  r.mean_kld, r.top1_agreement, r.ppl, r.ref_ppl, static_cast<long long>(r.tokens),
                  static_cast<long long>(r.chunks), static_cast<long long>(r.ctx));
    } else {
      std::printf("mean KL divergence %.6f nats, top-1 agreement %.2f%%, ppl %.4f (reference %.4f), %lld tokens\n",
                  r.mean_kld, 100 * r.top1_agreement, r.ppl, r.ref_ppl, static_cast<long long>(r.tokens));
    }
    return 0;
  };
}

Handler add_logits(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  auto n = std::make_shared<int64_t>(256);
  auto out = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("logits", "Write a model's logits for the first N tokens of a file (safetensors)");
  add_common(cmd, *o);
  cmd->add_option("--tokens", *n, "Number of tokens")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-o,--out", *out, "Output .safetensors (input_ids int32 [1,N], logits fp32 [1,N,vocab])")
      ->required();
  return [o, n, out, cmd]() {
    if (!cmd->parsed()) return -1;
    const std::string text = read_file(o->file);
    EngineOptions eo;
    eo.device = o->device;
    eo.context = *n;
    auto engine = Engine::open(o->model, eo);
    auto ids = engine->tokenize(text, false);
    if (static_cast<int64_t>(ids.size()) < *n)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("{}: has {} tokens, fewer than --tokens {}", o->file, ids.size(), *n));
    ids.resize(static_cast<size_t>(*n));
    engine->write_logits(ids, *out);
    std::fprintf(stderr, "wrote %s\n", out->c_str());
    return 0;
  };
}

}  // namespace trellis::cli
