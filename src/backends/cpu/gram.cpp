#include "backends/cpu/gram.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace trellis::cpu {

GramCount gram_accumulate(const float* x, int64_t rows, int64_t cols, float* acc, int64_t k, ThreadPool& pool) {
  TRELLIS_CHECK(cols <= k);
  // Finite rows are gathered in chunks of kChunk; each chunk updates the lower triangle in 4 x 16
  // register blocks, one 4-row band of the output per task.
  constexpr int64_t kChunk = 256;
  GramCount count;
  std::vector<float> buf(static_cast<size_t>(kChunk * cols));
  int64_t r = 0;
  while (r < rows) {
    int64_t filled = 0;
    for (; r < rows && filled < kChunk; ++r) {
      const float* src = x + r * cols;
      bool finite = true;
      for (int64_t c = 0; c < cols; ++c) finite &= std::isfinite(src[c]);
      if (!finite) {
        ++count.skipped;
        continue;
      }
      std::copy(src, src + cols, &buf[static_cast<size_t>(filled * cols)]);
      ++filled;
    }
    if (filled == 0) continue;
    count.added += static_cast<uint64_t>(filled);
    const int64_t iblocks = (cols + 3) / 4;
    pool.parallel_for(static_cast<size_t>(iblocks), 1, [&](size_t b0, size_t b1) {
      for (size_t ib = b0; ib < b1; ++ib) {
        const int64_t i0 = static_cast<int64_t>(ib) * 4;
        const int64_t ni = std::min<int64_t>(4, cols - i0);
        for (int64_t j0 = 0; j0 < i0 + ni; j0 += 16) {
          const int64_t nj = std::min<int64_t>(16, cols - j0);
          float a[4][16] = {};
          for (int64_t t = 0; t < filled; ++t) {
            const float* row = &buf[static_cast<size_t>(t * cols)];
            float xi[4], xj[16];
            for (int u = 0; u < 4; ++u) xi[u] = u < ni ? row[i0 + u] : 0.0f;
            for (int v = 0; v < 16; ++v) xj[v] = v < nj ? row[j0 + v] : 0.0f;
            for (int u = 0; u < 4; ++u)
              for (int v = 0; v < 16; ++v) a[u][v] += xi[u] * xj[v];
          }
          for (int64_t u = 0; u < ni; ++u)
            for (int64_t v = 0; v < nj && j0 + v <= i0 + u; ++v) acc[(i0 + u) * k + j0 + v] += a[u][v];
        }
      }
    });
  }
  return count;
}

}  // namespace trellis::cpu
