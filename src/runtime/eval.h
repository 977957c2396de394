// runtime/eval.h: perplexity, KL divergence and raw logits over a token stream.
//
// Window scheme (fixtures README, `trellis ppl`): the first ctx*chunks tokens of the text are cut
// into `chunks` non-overlapping windows of `ctx` tokens; each window is one causal forward from
// an empty cache and scores all of its tokens but the first (ctx-1 predictions per window).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"
#include "trellis/runtime.h"

namespace trellis {

using ProgressFn = std::function<void(int64_t done, int64_t total)>;

// Clamps chunks so that ctx*chunks <= ids.size() (chunks <= 0: as many as fit). Throws
// kInvalidArgument when not even one window fits or ctx < 2 or ctx > the model's context.
int64_t plan_windows(int64_t n_tokens, int64_t ctx, int64_t chunks, int64_t max_context);

PerplexityResult evaluate_perplexity(Model& model, std::span<const int32_t> ids, int64_t ctx, int64_t chunks,
                                     const ProgressFn& progress = {});

KldResult evaluate_kld(Model& model, Model& reference, std::span<const int32_t> ids, int64_t ctx, int64_t chunks,
                       const ProgressFn& progress = {});

// One causal forward over `ids`; writes `input_ids` int32 [1, n] and `logits` fp32 [1, n, vocab]
// (the format of the fixtures' reference files) atomically to `path`.
void write_logits_file(Model& model, std::span<const int32_t> ids, const std::string& path);

}  // namespace trellis
