// `trellis run` (one prompt, streamed) and `trellis chat` (interactive, with the model's chat
// template and history).
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "core/log.h"
#include "trellis/error.h"
#include "trellis/runtime.h"

namespace trellis::cli {

namespace {

struct RunOptions {
  std::string model, prompt, prompt_file, system, device = "auto";
  int64_t ctx = 0;
  bool chat_format = false;
  bool raw = false;  // run: no BOS / special tokens added to the prompt
  GenerationOptions gen;
  int64_t seed = -1;
};

void add_generation_options(CLI::App* cmd, RunOptions& o) {
  cmd->add_option("-m,--model", o.model, "Model directory (EXL3 or fp16/bf16/fp32 Hugging Face)")->required();
  cmd->add_option("--device", o.device,
                  "auto (CUDA, else a discrete Vulkan GPU, else the CPU), cpu, cuda[:N], vulkan[:N] "
                  "(see `trellis devices`)")
      ->capture_default_str();
  cmd->add_option("--ctx", o.ctx, "Context length (KV cache); default: the model's, capped at 8192")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-n,--max-tokens", o.gen.max_tokens, "Tokens to generate at most (-1: until the context is full)")
      ->capture_default_str();
  auto& s = o.gen.sampling;
  cmd->add_option("-t,--temperature", s.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", s.top_k, "Keep the k most likely tokens; 0 = off")->capture_default_str();
  cmd->add_option("--top-p", s.top_p, "Nucleus sampling mass, in (0, 1]; 1 = off")->capture_default_str();
  cmd->add_option("--min-p", s.min_p, "Drop tokens below min-p x the top probability; 0 = off")->capture_default_str();
  cmd->add_option("--repeat-penalty", s.repetition_penalty, "Repetition penalty; 1 = off")->capture_default_str();
  cmd->add_option("--presence-penalty", s.presence_penalty, "OpenAI-style presence penalty")->capture_default_str();
  cmd->add_option("--frequency-penalty", s.frequency_penalty, "OpenAI-style frequency penalty")->capture_default_str();
  cmd->add_option("--penalty-last-n", s.penalty_last_n, "Tokens the penalties look back at (-1: all)")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Random seed (default: a fresh one, printed with -v)");
  cmd->add_option("--stop", o.gen.stop, "Stop string (repeatable); cut from the output");
  cmd->add_flag("--ignore-eos{false}", o.gen.stop_at_eos, "Keep generating past end-of-turn tokens (benchmarks)");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<Engine> open_engine(RunOptions& o) {
  if (o.seed < 0) {
    o.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
    log_info("seed: {} (--seed {} repeats this output)", o.seed, o.seed);
  }
  o.gen.sampling.seed = static_cast<uint64_t>(o.seed);
  EngineOptions eo;
  eo.device = o.device;
  eo.context = o.ctx;
  auto engine = Engine::open(o.model, eo);
  return engine;
}

void print_stats(const GenerationResult& r, bool show_reason) {
  std::fprintf(stderr, "\n[%lld prompt tokens%s, %.1f tok/s prefill | %lld tokens, %.1f tok/s decode%s%s]\n",
               static_cast<long long>(r.prompt_tokens),
               r.reused_tokens > 0 ? fmt::format(" ({} cached)", r.reused_tokens).c_str() : "", r.prefill_tok_s,
               static_cast<long long>(r.generated_tokens), r.decode_tok_s,
               show_reason ? ", stopped: " : "", show_reason ? r.stop_reason.c_str() : "");
  if (!r.message.empty()) std::fprintf(stderr, "%s\n", r.message.c_str());
}

// Ctrl-C: while a reply is being generated it stops the reply; otherwise it ends the program.
std::atomic<bool> g_generating{false};
std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) {
  if (g_generating.load()) {
    g_interrupted.store(true);
    return;
  }
  const char msg[] = "\n";
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  _exit(130);
}

void install_sigint() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
}

bool stream_piece(std::string_view piece) {
  std::fwrite(piece.data(), 1, piece.size(), stdout);
  std::fflush(stdout);
  return !g_interrupted.load();
}

}  // namespace

Handler add_run(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  o->gen.max_tokens = 256;
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt, streamed to stdout");
  add_generation_options(cmd, *o);
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
  cmd->add_option("-f,--file", o->prompt_file, "Read the prompt from a file ('-' = stdin)");
  CLI::Option* chat = cmd->add_flag("--chat", o->chat_format,
                                     "Wrap the prompt in the model's chat template as one user turn");
  cmd->add_option("--system", o->system, "System message (with --chat)")->needs(chat);
  cmd->add_flag("--raw", o->raw, "Do not add BOS or other special tokens to a plain prompt")->excludes(chat);
  cmd->footer(
      "Examples:\n"
      "  trellis run -m MODEL -p \"The capital of France is\" -n 32 -t 0\n"
      "  trellis run -m MODEL --chat -p \"Write a haiku about trellises\"\n"
      "Speed (prefill and decode tokens/s) is printed to stderr at the end. Ctrl-C stops generation.");
  return [o, cmd]() {
    if (!cmd->parsed()) return -1;
    if (o->prompt.empty() == o->prompt_file.empty())
      throw Error(ErrorKind::kInvalidArgument, "give exactly one of -p/--prompt or -f/--file");
    std::string prompt = o->prompt;
    if (!o->prompt_file.empty()) {
      if (o->prompt_file == "-") {
        std::ostringstream ss;
        ss << std::cin.rdbuf();
        prompt = ss.str();
      } else {
        prompt = read_file(o->prompt_file);
      }
    }
    auto engine = open_engine(*o);
    std::vector<int32_t> ids;
    if (o->chat_format) {
      std::vector<ChatTurn> turns;
      if (!o->system.empty()) turns.push_back({"system", o->system});
      turns.push_back({"user", prompt});
      ids = engine->chat_prompt(turns, true);
    } else {
      ids = engine->tokenize(prompt, /*add_special_tokens=*/!o->raw);
    }
    if (ids.empty()) throw Error(ErrorKind::kInvalidArgument, "the prompt is empty after tokenization");
    if (static_cast<int64_t>(ids.size()) >= engine->context())
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("the prompt has {} tokens but the context holds {} (raise --ctx, up to the model's "
                              "maximum, or shorten the prompt)",
                              ids.size(), engine->context()));
    install_sigint();
    g_generating.store(true);
    const GenerationResult r = engine->generate(ids, o->gen, stream_piece);
    g_generating.store(false);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    print_stats(r, true);
    return 0;
  };
}

Handler add_chat(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  o->gen.max_tokens = 1024;
  CLI::App* cmd = app.add_subcommand("chat", "Chat with a model interactively (uses its chat template)");
  add_generation_options(cmd, *o);
  cmd->add_option("--system", o->system, "System message");
  cmd->footer(
      "Type a message and press Enter. Commands: /reset (forget the conversation), /exit (or Ctrl-D).\n"
      "Ctrl-C stops the current reply; at the prompt it quits. Reads plain lines when stdin is not a\n"
      "terminal, so a conversation can be piped in.");
  return [o, cmd]() {
    if (!cmd->parsed()) return -1;
    auto engine = open_engine(*o);
    if (!engine->has_chat_template())
      throw Error(ErrorKind::kFormat, o->model + ": the model has no chat template; use `trellis run` instead");
    const bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    std::vector<ChatTurn> history;
    if (!o->system.empty()) history.push_back({"system", o->system});
    const size_t base = history.size();
    install_sigint();
    if (tty)
      std::fprintf(stderr, "trellis chat: %s on %s (context %lld). /reset, /exit, Ctrl-C stops a reply.\n",
                   o->model.c_str(), engine->device_name().c_str(), static_cast<long long>(engine->context()));
    std::string line;
    for (;;) {
      if (tty) {
        std::fputs("\n> ", stdout);
        std::fflush(stdout);
      }
      if (!std::getline(std::cin, line)) break;
      if (line == "/exit" || line == "/quit") break;
      if (line == "/reset") {
        history.resize(base);
        engine->reset_history();
        std::fputs(tty ? "(conversation cleared)\n" : "[reset]\n", stdout);
        std::fflush(stdout);
        continue;
      }
      if (line.empty()) continue;
      history.push_back({"user", line});
      std::vector<int32_t> ids = engine->chat_prompt(history, true);
      if (static_cast<int64_t>(ids.size()) >= engine->context()) {
        std::fprintf(stderr, "the conversation (%zu tokens) no longer fits the context (%lld); use /reset\n",
                     ids.size(), static_cast<long long>(engine->context()));
        history.pop_back();
        continue;
      }
      g_interrupted.store(false);
      g_generating.store(true);
      const GenerationResult r = engine->generate(ids, o->gen, stream_piece);
      g_generating.store(false);
      std::fputs("\n", stdout);
      std::fflush(stdout);
      if (r.stop_reason == "cancelled") std::fputs("[stopped]\n", stderr);
      if (!r.message.empty()) std::fprintf(stderr, "%s\n", r.message.c_str());
      history.push_back({"assistant", r.text});
      if (tty) print_stats(r, false);
    }
    return 0;
  };
}

}  // namespace trellis::cli
