// runtime/engine.cpp: the public Engine: a model, its tokenizer and a backend, wired together.
#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/registry.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "model/model.h"
#include "runtime/engine_impl.h"
#include "runtime/eval.h"
#include "runtime/tokenizer.h"
#include "trellis/runtime.h"

namespace trellis {
namespace {

// "cpu (16 threads, AVX3)", "cuda:0 (NVIDIA H200)", "vulkan:1 (AMD Radeon RX 7900 XTX)".
std::string describe(const DeviceInfo& info) {
  if (info.backend == "cpu")
    return fmt::format("cpu ({} threads{}{})", info.threads, info.features.empty() ? "" : ", ",
                       info.features.empty() ? "" : info.features.front());
  return fmt::format("{} ({})", device_id(info), info.name);
}

}  // namespace

Engine::Engine() : impl_(std::make_unique<Impl>()) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::open(const std::string& model_dir, const EngineOptions& options) {
  std::unique_ptr<Engine> e(new Engine());
  Impl& impl = *e->impl_;
  impl.backend = make_backend(options.device);
  log_info("device: {}", describe(impl.backend->info()));
  ModelOptions mo;
  mo.max_context = options.context;
  impl.model = Model::load(model_dir, *impl.backend, mo);
  impl.tokenizer = Tokenizer::load(model_dir);
  impl.model_dir = model_dir;
  if (impl.tokenizer->vocab_size() > impl.model->vocab_size())
    fail(ErrorKind::kFormat, "{}: the tokenizer has {} tokens but the model's vocabulary is {}", model_dir,
         impl.tokenizer->vocab_size(), impl.model->vocab_size());
  return e;
}

std::vector<int32_t> Engine::tokenize(std::string_view text, bool add_special_tokens) const {
  return impl_->tokenizer->encode(text, add_special_tokens);
}
std::string Engine::detokenize(std::span<const int32_t> ids) const { return impl_->tokenizer->decode(ids); }
int64_t Engine::context() const { return impl_->model->max_context(); }
int64_t Engine::vocab_size() const { return impl_->model->vocab_size(); }
std::string Engine::device_name() const { return describe(impl_->backend->info()); }
std::string Engine::architecture() const {
  const auto& a = impl_->model->config().architectures;
  return a.empty() ? "" : a.front();
}

PerplexityResult Engine::perplexity(std::span<const int32_t> ids, int64_t ctx, int64_t chunks, bool progress) {
  const int64_t planned = plan_windows(static_cast<int64_t>(ids.size()), ctx, chunks, context());
  ProgressBar bar("perplexity", static_cast<uint64_t>(planned), "chunks");
  return evaluate_perplexity(*impl_->model, ids, ctx, chunks, [&](int64_t done, int64_t total) {
    if (!progress) return;
    if (done == total) bar.finish();
    else bar.update(static_cast<uint64_t>(done));
  });
}

KldResult Engine::kld(Engine& reference, std::span<const int32_t> ids, int64_t ctx, int64_t chunks, bool progress) {
  const int64_t planned =
      plan_windows(static_cast<int64_t>(ids.size()), ctx, chunks, std::min(context(), reference.context()));
  ProgressBar bar("kl-divergence", static_cast<uint64_t>(planned), "chunks");
  return evaluate_kld(*impl_->model, *reference.impl_->model, ids, ctx, chunks, [&](int64_t done, int64_t total) {
    if (!progress) return;
    if (done == total) bar.finish();
    else bar.update(static_cast<uint64_t>(done));
  });
}

void Engine::write_logits(std::span<const int32_t> ids, const std::string& path) {
  if (static_cast<int64_t>(ids.size()) > context())
    fail(ErrorKind::kInvalidArgument, "{} tokens exceed the context of {} (use --ctx)", ids.size(), context());
  write_logits_file(*impl_->model, ids, path);
}

}  // namespace trellis
