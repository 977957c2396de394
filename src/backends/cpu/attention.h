// backends/cpu/attention.h: causal grouped-query attention over an fp16 KV cache on the CPU.
//
// Goals: one kernel for prefill (many query rows) and decode (one row), flash-style so memory
// does not grow with the context: work items are (kv head, block of query rows); each streams the
// cache in tiles of keys, widening each fp16 tile to fp32 once for every query row and every
// query head of the group, with an online (running max / running sum) softmax in fp32. SIMD via
// Highway runtime dispatch. Non-goals: quantized caches, ALiBi, soft-capping.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace trellis::cpu {

struct AttentionShape {
  int64_t rows = 0;        // query rows (tokens in the batch)
  int64_t n_heads = 0;     // query heads; a multiple of n_kv_heads
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  float scale = 0;
  int64_t sliding_window = 0;  // 0: full causal attention
};

// out[r, h*d : (h+1)*d] = softmax_t(q[r,h]·k[t,kvh]·scale) · v[t,kvh] over t in
// [first(r), positions[r]] where first(r) = 0, or positions[r] - sliding_window + 1 when a window
// is set; kvh = h / (n_heads / n_kv_heads). q, out: [rows, n_heads*d] fp32; k_cache, v_cache:
// [>= max(positions)+1, n_kv_heads*d] binary16. out must not alias q.
void attention_f16_cache(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, const int32_t* positions,
                         const AttentionShape& shape, float* out, ThreadPool& pool);

}  // namespace trellis::cpu
