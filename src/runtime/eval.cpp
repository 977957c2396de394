#include "runtime/eval.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "format/safetensors.h"

namespace trellis {

namespace {

// log-softmax normaliser of one row, in double.
double log_sum_exp(const float* logits, int64_t n) {
  float mx = logits[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, logits[j]);
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(logits[j]) - mx);
  return mx + std::log(sum);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int64_t plan_windows(int64_t n_tokens, int64_t ctx, int64_t chunks, int64_t max_context) {
  if (ctx < 2) fail(ErrorKind::kInvalidArgument, "--ctx must be at least 2 (got {})", ctx);
  if (ctx > max_context)
    fail(ErrorKind::kInvalidArgument, "--ctx {} exceeds the model's context of {} tokens", ctx, max_context);
  const int64_t fit = n_tokens / ctx;
  if (fit < 1)
    fail(ErrorKind::kInvalidArgument, "the text has {} tokens, fewer than one window of {} tokens", n_tokens, ctx);
  return chunks <= 0 ? fit : std::min(chunks, fit);
}

PerplexityResult evaluate_perplexity(Model& model, std::span<const int32_t> ids, int64_t ctx, int64_t chunks,
                                     const ProgressFn& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  chunks = plan_windows(static_cast<int64_t>(ids.size()), ctx, chunks, model.max_context());
  const int64_t vocab = model.vocab_size();
  std::vector<float> logits;
  double nll = 0;
  int64_t scored = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    const auto window = ids.subspan(static_cast<size_t>(c * ctx), static_cast<size_t>(ctx));
    model.forward(window, 0, true, logits);
    // Rows in parallel (a large vocabulary makes this as costly as the forward pass), summed in
    // row order so the result does not depend on the thread count.
    std::vector<double> row_nll(static_cast<size_t>(ctx - 1));
    ThreadPool::global().parallel_for(row_nll.size(), 8, [&](size_t b, size_t e) {
      for (size_t t = b; t < e; ++t) {
        const float* row = logits.data() + static_cast<int64_t>(t) * vocab;
        row_nll[t] = log_sum_exp(row, vocab) - row[window[t + 1]];
      }
    });
    for (const double v : row_nll) nll += v;
    scored += ctx - 1;
    if (progress) progress(c + 1, chunks);
  }
  PerplexityResult r;
  r.nll = nll / static_cast<double>(scored);
  r.ppl = std::exp(r.nll);
  r.tokens = scored;
  r.chunks = chunks;
  r.ctx = ctx;
  r.seconds = seconds_since(t0);
  return r;
}

KldResult evaluate_kld(Model& model, Model& reference, std::span<const int32_t> ids, int64_t ctx, int64_t chunks,
                       const ProgressFn& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  if (model.vocab_size() != reference.vocab_size())
    fail(ErrorKind::kInvalidArgument, "the model's vocabulary ({}) differs from the reference's ({})",
         model.vocab_size(), reference.vocab_size());
  chunks = plan_windows(static_cast<int64_t>(ids.size()), ctx, chunks,
                        std::min(model.max_context(), reference.max_context()));
  const int64_t vocab = model.vocab_size();
  std::vector<float> logits, ref_logits;
  double kld = 0, nll = 0, ref_nll = 0;
  int64_t agree = 0, scored = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    const auto window = ids.subspan(static_cast<size_t>(c * ctx), static_cast<size_t>(ctx));
    model.forward(window, 0, true, logits);
    reference.forward(window, 0, true, ref_logits);
    // Rows in parallel, summed in row order (see evaluate_perplexity).
    struct Row {
      double kld, nll, ref_nll;
      bool agree;
    };
    std::vector<Row> rows(static_cast<size_t>(ctx - 1));
    ThreadPool::global().parallel_for(rows.size(), 8, [&](size_t b, size_t e) {
      for (size_t t = b; t < e; ++t) {
        const float* p = ref_logits.data() + static_cast<int64_t>(t) * vocab;
        const float* q = logits.data() + static_cast<int64_t>(t) * vocab;
        const double lp = log_sum_exp(p, vocab), lq = log_sum_exp(q, vocab);
        double k = 0;
        int64_t ap = 0, aq = 0;
        for (int64_t j = 0; j < vocab; ++j) {
          const double log_p = p[j] - lp, log_q = q[j] - lq;
          k += std::exp(log_p) * (log_p - log_q);
          if (p[j] > p[ap]) ap = j;
          if (q[j] > q[aq]) aq = j;
        }
        const int32_t next = window[t + 1];
        rows[t] = {k, lq - q[next], lp - p[next], ap == aq};
      }
    });
    for (const Row& r : rows) {
      kld += r.kld;
      nll += r.nll;
      ref_nll += r.ref_nll;
      agree += r.agree;
    }
    scored += ctx - 1;
    if (progress) progress(c + 1, chunks);
  }
  KldResult r;
  r.mean_kld = kld / static_cast<double>(scored);
  r.top1_agreement = static_cast<double>(agree) / static_cast<double>(scored);
  r.ppl = std::exp(nll / static_cast<double>(scored));
  r.ref_ppl = std::exp(ref_nll / static_cast<double>(scored));
  r.tokens = scored;
  r.chunks = chunks;
  r.ctx = ctx;
  r.seconds = seconds_since(t0);
  return r;
}

void write_logits_file(Model& model, std::span<const int32_t> ids, const std::string& path) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < 1) fail(ErrorKind::kInvalidArgument, "no tokens to run");
  std::vector<float> logits;
  model.forward(ids, 0, true, logits);
  const int64_t vocab = model.vocab_size();
  SafetensorsWriter::write_file(
      path, {{"input_ids", DType::kI32, {1, n}, std::as_bytes(ids)},
             {"logits", DType::kF32, {1, n, vocab}, std::as_bytes(std::span<const float>(logits))}});
}

}  // namespace trellis
