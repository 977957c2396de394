// backends/cuda/cuda_exl3_gemv.cu: the fused EXL3 GEMV (exl3_gemv_k<K>_<cb>) and the Ŵ decode
// for the prefill path (exl3_decode_k<K>_<cb>); 24 variants each, one table per kernel.
//
// GEMV contract: z_s [m, n] fp32 for k-split s = Σ over the split's 16-row k-slabs of xa · Ŵ,
// m in 1..8, xa in the fragment layout of cuda_exl3_kernels.cuh. Blocks: (n/128 column groups
// of 8 tiles) x splits per linear, up to kMaxGroup linears per launch; kGemvWarps warps per block; warp w takes the slabs tk0 + w, tk0 + w + W, ...
// of its split. Deterministic: fixed slab-to-warp assignment, fixed-order reductions.
//
// How far it is from memory-bound on Hopper, and why (spec 6.8, perf/h100-anchors.md, the ncu
// profile in docs/BENCHMARKS.md):
// * Every trellis byte is read once, with 16-byte cp.async copies (L1 bypassed) of whole
//   contiguous slabs (the 8 tiles of one k-slab are adjacent in the file), into a 4-stage per-warp
//   shared-memory ring; copy addresses are compile-time strides, so the copies cost ~1 op/lane.
// * The dot products cost little on the integer/FP pipes: lanes decode straight into the
//   mma.m16n8k16 B fragments (spec 2.7) and one MMA covers 128 weights for all 8 batch rows. The
//   16 MMA rows carry fp16 hi (rows 0-7) and lo (rows 8-15) parts of the activations, so the
//   otherwise idle rows buy fp32-level accuracy for free.
// * What is left per weight is the decode, and it is the wall: cutting the 16-bit window (IMAD.SHL
//   + shift for 3INST/MCG, so that half of it runs on the FMA pipe; shift + mask for MUL1), one
//   IMAD, then per pair of weights one lop3 x2 + prmt x2 + one f16x2 add (3INST/MCG) or dp4a x2 +
//   prmt + one f16x2 FMA (MUL1): 6.1-7.5 issued instructions per weight and lane with the loop
//   (bench/sass_loop_stats.py on the sm_90 build). ncu (K=3 MCG, 8192x28672, session 5): the ALU
//   pipe is the busiest (65% of peak) and issue slots are ~55% busy, so an H100/H200 SM decodes
//   ~10-14 weights per clock: memory-bound only from K ~ 6-8 up. Closing the rest needs fewer
//   integer ops per weight than the codebooks' definitions allow (every weight needs its own
//   16-bit window and 32-bit multiply).
//   Opt-in modes (GemvMode below): kHalves hands each weight's two fp16 halves to the MMA as
//   separate products (~5.7 instead of ~6.8 instructions per weight at K=3 MCG; unrounded
//   values; measured 1.03-1.06x on MCG, session 13); the *WA modes make the weights the MMA's A
//   operand (half the MMAs and accumulator registers; bitwise the same results; the default
//   since session 17: forward 1.04-1.10x on the H100).
// * Split-k over blocks so that the grid holds about kGemvBlocksPerSm blocks per SM; partial sums
//   go to scratch and are summed in fixed order by the output transform.
#include <cuda_fp16.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <span>
#include <string>
#include <utility>

#include "backends/cuda/cuda_exl3_decode.cuh"
#include "backends/cuda/cuda_exl3_hadamard.cuh"
#include "backends/cuda/cuda_exl3_kernels.cuh"
#include "backends/cuda/cuda_launch.cuh"
#include "backends/cuda/cuda_mma.cuh"
#include "backends/cuda/cuda_norm.cuh"
#include "backends/cuda/cuda_util.h"

namespace trellis::cuda::exl3k {
namespace {

constexpr int kStages = 4;
constexpr int kGemvMaxSplits = CudaExl3Linear::kMaxGemvSplits;  // the fused output's merge holds them all
constexpr int kGemvOccupancyBlocks = 10;  // per-warp ring depth (slabs); 6 measured no faster
constexpr int kActBytesMax = 8 * 64;

// Shared-memory loads at 32-bit shared-window addresses. The GEMV's loop addresses its ring and
// activations through these, from bases computed once: with generic pointers ptxas rebuilt the
// shared window's base and the lane's offsets in every iteration.
__device__ __forceinline__ uint32_t lds32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
// old = *p, *p += v, with acquire and release semantics at GPU scope (PTX memory model).
__device__ __forceinline__ unsigned atomic_add_acq_rel_gpu(unsigned* p, unsigned v) {
  unsigned old;
  asm volatile("atom.add.acq_rel.gpu.global.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

// A tile's words in shared memory, indexed as the decode functions index a pointer.
struct SharedWords {
  uint32_t base;
  __device__ __forceinline__ uint32_t operator[](int i) const { return lds32(base + 4u * static_cast<uint32_t>(i)); }
};

// Up to kMaxGroup linears with the same K, codebook and k in one launch: blocks [0, blocks_0) are
// linear 0's (group-major within each split, as a 2-D grid would order them), and so on.
struct GemvGroupArgs {
  GemvItem item[kMaxGroup];
  int count, m, k_tiles;
#ifdef TRELLIS_CUDA_GEMV_TIMELINE
  int tl_slot;  // which g_tl slot this launch records into, or -1
#endif
};

#ifdef TRELLIS_CUDA_GEMV_TIMELINE
// Diagnostic builds only (-DTRELLIS_CUDA_GEMV_TIMELINE; bench/gemv_timeline.py reads the file):
// thread 0 of every block of kTlSlots chosen launches records when the block started
// (%globaltimer, ns) and the SM clocks elapsed at each phase of the kernel, to find where a
// decode-sized launch spends the time that the loop does not explain. Launches are numbered in
// the order gemv_group() enqueues them (graph captures included: a replay overwrites its slots);
// TRELLIS_GEMV_TIMELINE_FIRST picks the first recorded one (default 129: the second decode step of
// an 8B model) and the records go to TRELLIS_GEMV_TIMELINE_OUT at exit.
constexpr int kTlSlots = 8, kTlBlocks = 4096, kTlMarks = 6;
struct TlRecord {
  unsigned long long t0, t1;  // %globaltimer at entry and at exit
  unsigned clk[kTlMarks];     // clock64() - entry: after pdl_begin, input transform, first slab, loop, count, merge
  unsigned smid, last;
};
__device__ TlRecord g_tl[kTlSlots][kTlBlocks];
__device__ __forceinline__ unsigned long long tl_gtimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ unsigned tl_smid() {
  unsigned v;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(v));
  return v;
}
#define TRELLIS_TL_MARK(i)                                                                          \
  do {                                                                                             \
    if (tl) tl->clk[i] = static_cast<unsigned>(clock64() - tl_c0);                                 \
  } while (0)
#else
#define TRELLIS_TL_MARK(i) \
  do {                     \
  } while (0)
#endif

// How lanes turn decoded weights into MMA operands (cuda_util.h gemv_halves / gemv_weights_a):
// kPairs, two weights' fp16 values per word (the default); kHalves, one weight per word as its two
// unrounded halves (or MUL1's 1024 + bytesum), against duplicated activations. Both hand the
// weights to mma.m16n8k16 as B (16 k x 8 columns, two MMAs per 16x16 tile) against A = the
// activations (rows 0-7 hi, 8-15 lo: 14 of 16 rows are zero at m = 1). The *WA modes (m <= 4)
// swap the roles: a lane's 8 decoded words of a tile are exactly one A fragment of the tile as a
// 16 (output columns) x 16 (k) matrix (a0 = (col g, k 2t..), a1 = (col g+8, k 2t..), a2 = (col g,
// k 2t+8..), a3 = (col g+8, k 2t+8..): kPairs's b[0], b[2], b[1], b[3]), and B = the activations,
// column 2r + h = batch row r's hi (h = 0) or lo (h = 1) part, so one MMA covers a whole tile (two
// in kHalvesWA) and the accumulators take half the registers. The products and the hi + lo sums
// are the same; only the tensor cores' operand roles differ.
enum GemvMode : int { kPairs = 0, kHalves = 1, kPairsWA = 2, kHalvesWA = 3 };
constexpr bool weights_as_a(int mode) { return mode == kPairsWA || mode == kHalvesWA; }

// Fuse: 0 none, 1 the output transform, 2 the input and output transforms (GemvItem).
// MinBlocks: __launch_bounds__'s minimum of resident blocks per SM. 1 leaves ptxas free (~110-120
// registers: 8 blocks of 64 threads per SM on Hopper, under kGemvBlocksPerSm); 10 caps the default
// kernel at 96 registers, no spills except 4 bytes at K = 7 (cuda_util.h gemv_occupancy).
template <int K, int CB, int Mode, int Fuse, int MinBlocks = 1>
__global__ void __launch_bounds__(kGemvWarps * 32, MinBlocks) gemv_kernel(const __grid_constant__ GemvGroupArgs args) {
  constexpr int G = gemv_tiles(K);
  constexpr int kTileBytes = 32 * K;
  constexpr int kChunksT = 2 * K * G;  // 16-byte chunks of trellis per slab
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#ifdef TRELLIS_CUDA_GEMV_TIMELINE
  TlRecord* const tl = args.tl_slot >= 0 && threadIdx.x == 0 && blockIdx.x < kTlBlocks ? &g_tl[args.tl_slot][blockIdx.x] : nullptr;
  const long long tl_c0 = clock64();
  if (tl) tl->t0 = tl_gtimer(), tl->smid = tl_smid(), tl->last = 0;
#endif
  int b = static_cast<int>(blockIdx.x), li = 0;
  while (li + 1 < args.count && b >= args.item[li].blocks) b -= args.item[li].blocks, ++li;
  const GemvItem& item = args.item[li];
  const uint32_t* __restrict__ trellis = item.trellis;
  const uint16_t* __restrict__ xa = item.xa;
  float* __restrict__ z = item.z;
  const int m = args.m, k_tiles = args.k_tiles, n_tiles = item.n_tiles, splits = item.splits;
  const int group = b % (n_tiles / G), split = b / (n_tiles / G);
  const int stage_bytes = (kChunksT + 4 * m) * 16;
  unsigned char* ring = smem + warp * kStages * stage_bytes;

  const int per = gemv_split_slabs(k_tiles, splits);
  const int tk0 = split * per, tk1 = min(k_tiles, tk0 + per);
  const int first = tk0 + warp;
  const int iters = first < tk1 ? (tk1 - first + kGemvWarps - 1) / kGemvWarps : 0;

  // Each lane copies chunks lane, lane + 32, ... of the slab's trellis (a compile-time count) and
  // at most one 16-byte chunk of activations; its source pointers step by a fixed stride per slab.
  const size_t stride_t = static_cast<size_t>(kGemvWarps) * n_tiles * kTileBytes;
  const size_t stride_a = static_cast<size_t>(kGemvWarps) * m * 64;
  const char* src_t = reinterpret_cast<const char*>(trellis) +
                      (static_cast<size_t>(first) * n_tiles + static_cast<size_t>(group) * G) * kTileBytes + lane * 16;
  const char* src_a = reinterpret_cast<const char*>(xa) + static_cast<size_t>(first) * m * 64 + lane * 16;
  const bool copies_act = Fuse != 2 && lane < 4 * m;
  unsigned char* act_area = smem + kGemvWarps * kStages * stage_bytes;  // Fuse 2: [per][m][4][16 B]
  int issued = 0;
  auto issue = [&]() {
    if (issued < iters) {
      unsigned char* dst = ring + (issued % kStages) * stage_bytes + lane * 16;
#pragma unroll
      for (int c = 0; c < kChunksT; c += 32)
        if (kChunksT % 32 == 0 || c + lane < kChunksT) cp_async16(dst + c * 16, src_t + c * 16);
      if (copies_act) cp_async16(dst + kChunksT * 16, src_a);
      src_t += stride_t;
      src_a += stride_a;
    }
    ++issued;
    cp_async_commit();  // possibly empty: keeps the group count uniform
  };

  float acc[G][2][4];
#pragma unroll
  for (int i = 0; i < G; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][h][e] = 0.0f;
  float acc_sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // halves + MUL1: Σ of the activations (every column)

  const int g = lane >> 2, q = lane & 3;
  // Prologue. The first stages' trellis is constant data, so it is requested before pdl_begin()
  // (while the previous kernel, e.g. the input transform, may still be running); the activations
  // only after. Group 0 holds all of the prologue's trellis and stage 0's activations. (Requesting
  // only stage 0 early and the rest after the fused input transform's loads measured no faster:
  // session 20, docs/BENCHMARKS.md.)
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < iters) {
      unsigned char* dst = ring + s * stage_bytes + lane * 16;
#pragma unroll
      for (int c = 0; c < kChunksT; c += 32)
        if (kChunksT % 32 == 0 || c + lane < kChunksT) cp_async16(dst + c * 16, src_t + s * stride_t + c * 16);
    }
  }
  pdl_begin();
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < iters && copies_act) cp_async16(ring + s * stage_bytes + lane * 16 + kChunksT * 16, src_a + s * stride_a);
    cp_async_commit();
  }
  TRELLIS_TL_MARK(0);
  if constexpr (Fuse == 2) {
    // The input transform of the 128-blocks that overlap this block's k range (slabs tk0 .. tk1 - 1):
    // warp w takes (row, 128-block) pairs w, w + W, ...; hadamard_in's arithmetic, into the
    // fragment layout at act_area. A split need not start or end on a 128-block: its edge blocks
    // are transformed whole and only the slabs inside kept, so the k ranges (and the fp32 sums of
    // the products) are exactly those of the separate transform's GEMV.
    const int hb0 = tk0 / 8, hb1 = tk1 > tk0 ? (tk1 + 7) / 8 : hb0;
    const int nhb = hb1 - hb0;
    auto* xs = reinterpret_cast<uint16_t*>(act_area);
    const bool writes_norm = item.fusion.norm_out && li == 0 && group == 0;
    for (int idx = warp; idx < m * nhb; idx += kGemvWarps) {
      const int row = idx / nhb, e0 = (hb0 + idx - row * nhb) * 128 + 4 * lane;
      const bool inside = (e0 >> 4) >= tk0 && (e0 >> 4) < tk1;  // this lane's slab is the split's
      const float* xr = item.x + static_cast<int64_t>(row) * item.in_features;
      const float4 sv = ld4(item.suh + e0);
      const float su[4] = {sv.x, sv.y, sv.z, sv.w};
      float v[4];
      if (item.fusion.norm_w) {  // in_features == k: every element is inside
        const float4 xv = ld4(xr + e0), wv = ld4(item.fusion.norm_w + e0);
        // Fused RMSNorm: the row's group sums of squares added in group order (cuda_norm.cuh). Every
        // lane loads all of them along with x and adds them itself, so the norm costs no round
        // trip of its own (it was a load, then 32 shuffles in a chain, then a barrier).
        const int groups = item.in_features / 128;  // <= 32 (kExl3FusedNormMaxCols)
        const float* ss = item.fusion.norm_sumsq + static_cast<int64_t>(row) * groups;
        float part[32];
#pragma unroll
        for (int i = 0; i < 32; ++i) part[i] = i < groups ? ss[i] : 0.0f;
        float total = 0.0f;
#pragma unroll
        for (int i = 0; i < 32; ++i)
          if (i < groups) total = __fadd_rn(total, part[i]);
        const float inv = rms_inv(total, item.in_features, item.fusion.norm_eps);
        const float h[4] = {rms_apply(xv.x, inv, wv.x), rms_apply(xv.y, inv, wv.y), rms_apply(xv.z, inv, wv.z),
                            rms_apply(xv.w, inv, wv.w)};
        if (writes_norm && inside)
          *reinterpret_cast<float4*>(item.fusion.norm_out + static_cast<int64_t>(row) * item.in_features + e0) =
              make_float4(h[0], h[1], h[2], h[3]);
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = __fmul_rn(h[j], su[j]);
      } else if (item.up) {  // silu(x) · up, silu_mul's expression operation for operation
        const float* ur = item.up + static_cast<int64_t>(row) * item.in_features;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          float t = 0.0f;
          if (e0 + j < item.in_features) t = xr[e0 + j] / (1.0f + expf(-xr[e0 + j])) * ur[e0 + j];
          v[j] = __fmul_rn(t, su[j]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = __fmul_rn(e0 + j < item.in_features ? xr[e0 + j] : 0.0f, su[j]);
      }
      fwht128(v, lane);
      uint16_t hi[4], lo[4];
      hi_lo4(v, hi, lo);
      if (inside) store_fragments4(hi, lo, xs, m, row, e0 - tk0 * 16);
    }
    __syncthreads();
  }
  TRELLIS_TL_MARK(1);
  issued = kStages - 1;
  src_t += (kStages - 1) * stride_t;
  src_a += (kStages - 1) * stride_a;
  // The lane's window positions (lane_words) and its activation fragment's offset, computed once
  // and passed through an identity shuffle, which ptxas cannot recompute: without it ptxas
  // rederived them from %tid in every iteration (K=3 MCG loop: 471 instructions against 429,
  // session 18, bench/sass_loop_stats.py).
  auto pin = [&](int v) { return __shfl_sync(0xFFFFFFFFu, v, lane); };
  LaneWords lw = lane_words<K>(lane);
#pragma unroll
  for (int gi = 0; gi < (K <= 6 ? 1 : 2); ++gi) {
    lw.w0[gi] = pin(lw.w0[gi]);
    lw.w1[gi] = pin(lw.w1[gi]);
    lw.w2[gi] = pin(lw.w2[gi]);
    lw.off[gi] = pin(lw.off[gi]);
  }
  const int a_row = weights_as_a(Mode) ? g >> 1 : g;
  const bool has_a_row = pin(weights_as_a(Mode) ? g < 2 * m : g < m) != 0;
  // Shared addresses: this warp's ring, and its first slab's activation fragment (Fuse 2: the
  // transformed activations; otherwise the ring slot's activation chunk).
  const uint32_t ring_s = static_cast<uint32_t>(pin(static_cast<int>(static_cast<uint32_t>(__cvta_generic_to_shared(ring)))));
  const uint32_t act_s = static_cast<uint32_t>(pin(static_cast<int>(
      Fuse == 2 ? static_cast<uint32_t>(__cvta_generic_to_shared(act_area)) + (first - tk0) * m * 64 + (a_row * 4 + q) * 16
                : static_cast<uint32_t>(__cvta_generic_to_shared(ring)) + kChunksT * 16 + (a_row * 4 + q) * 16)));
  const uint32_t act_step = static_cast<uint32_t>(pin(Fuse == 2 ? kGemvWarps * m * 64 : 0));
  const bool odd_g = pin(g & 1) != 0;  // weights as A: B column g holds the lo parts
  uint32_t act_at = act_s;
  // lds32/lds128 are volatile asm without a memory clobber (a clobber would make ptxas reload the
  // launch arguments after every load): this compiler fence keeps them after the input
  // transform's shared-memory stores and __syncthreads above, and volatile asm stays in order
  // with the cp.async waits.
  asm volatile("" ::: "memory");
  for (int it = 0; it < iters; ++it) {
    issue();
    cp_async_wait<kStages - 1>();
    __syncwarp();
#ifdef TRELLIS_CUDA_GEMV_TIMELINE
    if (it == 0) TRELLIS_TL_MARK(2);
#endif
    const uint32_t slot = static_cast<uint32_t>((it % kStages) * stage_bytes);
    // The activations' A fragment of batch row a_row (g, or g / 2 when they are B) for quad q.
    uint4 a = make_uint4(0, 0, 0, 0);
    if (has_a_row) a = lds128(Fuse == 2 ? act_at : act_s + slot);
    act_at += act_step;
    const uint32_t tw0 = ring_s + slot;
    if constexpr (weights_as_a(Mode)) {
      // B column g = batch row g / 2, its hi part (even g: A's a0, a2) or lo part (odd g: a1, a3):
      // b0 = elements 2t, 2t+1 and b1 = 2t+8, 2t+9 of the slab.
      const uint32_t b0 = odd_g ? a.y : a.x, b1 = odd_g ? a.w : a.z;
      if constexpr (Mode == kHalvesWA) {
        // Each weight word stands for two k positions of one input: B repeats each activation.
        const uint32_t be0 = __byte_perm(b0, 0u, 0x1010), be1 = __byte_perm(b1, 0u, 0x1010);
        const uint32_t bo0 = __byte_perm(b0, 0u, 0x3232), bo1 = __byte_perm(b1, 0u, 0x3232);
        if constexpr (CB == 2) {
          const uint32_t ones[4] = {0x3C003C00u, 0x3C003C00u, 0x3C003C00u, 0x3C003C00u};  // A = 1.0
          mma_m16n8k16(acc_sum, ones, b0, b1);
        }
#pragma unroll
        for (int i = 0; i < G; ++i) {
          uint32_t y[8];
          decode_lane_halves<K, CB>(SharedWords{tw0 + 32u * K * i}, lw, y);
          const uint32_t ae[4] = {y[0], y[4], y[2], y[6]};  // tile rows 2t, 2t+8
          const uint32_t ao[4] = {y[1], y[5], y[3], y[7]};  // tile rows 2t+1, 2t+9
          mma_m16n8k16(acc[i][0], ae, be0, be1);
          mma_m16n8k16(acc[i][0], ao, bo0, bo1);
        }
      } else {
#pragma unroll
        for (int i = 0; i < G; ++i) {
          uint32_t w[4];
          decode_lane<K, CB>(SharedWords{tw0 + 32u * K * i}, lw, w);
          const uint32_t wa[4] = {w[0], w[2], w[1], w[3]};
          mma_m16n8k16(acc[i][0], wa, b0, b1);
        }
      }
    } else if constexpr (Mode == kHalves) {
      // Each weight is one 32-bit word of two fp16 halves standing for two k positions of the
      // same input, so the A fragments repeat each activation: ae holds elements 2t, 2t+8 (the
      // low halves of a) twice, ao elements 2t+1, 2t+9 (the high halves).
      const uint32_t ar[4] = {a.x, a.y, a.z, a.w};
      uint32_t ae[4], ao[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        ae[j] = __byte_perm(ar[j], 0u, 0x1010);
        ao[j] = __byte_perm(ar[j], 0u, 0x3232);
      }
      if constexpr (CB == 2) mma_m16n8k16(acc_sum, ar, 0x3C003C00u, 0x3C003C00u);  // B = 1.0
#pragma unroll
      for (int i = 0; i < G; ++i) {
        uint32_t y[8];
        decode_lane_halves<K, CB>(SharedWords{tw0 + 32u * K * i}, lw, y);
        mma_m16n8k16(acc[i][0], ae, y[0], y[2]);  // tile rows 2t, 2t+8
        mma_m16n8k16(acc[i][0], ao, y[1], y[3]);  // tile rows 2t+1, 2t+9
        mma_m16n8k16(acc[i][1], ae, y[4], y[6]);
        mma_m16n8k16(acc[i][1], ao, y[5], y[7]);
      }
    } else {
#pragma unroll
      for (int i = 0; i < G; ++i) {
        uint32_t b[4];
        decode_lane<K, CB>(SharedWords{tw0 + 32u * K * i}, lw, b);
        mma_m16n8k16(acc[i][0], a, b[0], b[1]);
        mma_m16n8k16(acc[i][1], a, b[2], b[3]);
      }
    }
    __syncwarp();  // every lane is done with this slot before it is refilled
  }
  cp_async_wait<0>();
  __syncthreads();
  TRELLIS_TL_MARK(3);

  // Rows 0-7 of D are the hi products, rows 8-15 the lo products of the same batch rows.
  constexpr int kCols = 16 * G;
  float* red = reinterpret_cast<float*>(smem);  // [warps][m][kCols]
  if constexpr (weights_as_a(Mode)) {
    // D (16 tile columns x 8): d0, d1 = (column g, batch row q's hi and lo), d2, d3 = column g + 8.
    if (q < m) {
      const float bias_sum = kMul1Bias * (acc_sum[0] + acc_sum[1]);  // kHalvesWA + MUL1: Σ x of row q
#pragma unroll
      for (int i = 0; i < G; ++i) {
        float* r = red + (warp * m + q) * kCols + 16 * i + g;
        if constexpr (Mode == kHalvesWA && CB == 2) {
          r[0] = fmaf(kMul1Inv, acc[i][0][0] + acc[i][0][1], bias_sum);
          r[8] = fmaf(kMul1Inv, acc[i][0][2] + acc[i][0][3], bias_sum);
        } else {
          r[0] = acc[i][0][0] + acc[i][0][1];
          r[8] = acc[i][0][2] + acc[i][0][3];
        }
      }
    }
  } else if (g < m) {
    // Halves + MUL1: the sums are of h = 1024 + bytesum; Σ value·x = kInv·Σ h·x + kBias·Σ x.
    const float bias_sum = kMul1Bias * (acc_sum[0] + acc_sum[2]);
#pragma unroll
    for (int i = 0; i < G; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float* r = red + (warp * m + g) * kCols + 16 * i + 8 * h + 2 * q;
        if constexpr (Mode == kHalves && CB == 2) {
          r[0] = fmaf(kMul1Inv, acc[i][h][0] + acc[i][h][2], bias_sum);
          r[1] = fmaf(kMul1Inv, acc[i][h][1] + acc[i][h][3], bias_sum);
        } else {
          r[0] = acc[i][h][0] + acc[i][h][2];
          r[1] = acc[i][h][1] + acc[i][h][3];
        }
      }
  }
  __syncthreads();
  const int64_t n = static_cast<int64_t>(n_tiles) * 16;
  for (int idx = threadIdx.x; idx < m * kCols; idx += blockDim.x) {
    const int row = idx / kCols, col = idx % kCols;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kGemvWarps; ++w) sum += red[(w * m + row) * kCols + col];
    z[(static_cast<int64_t>(split) * m + row) * n + static_cast<int64_t>(group) * kCols + col] = sum;
  }
  if constexpr (Fuse != 0) {
    // Fused output transform: the last of the group's `splits` blocks to be counted reads every
    // partial back from L2 and runs hadamard_out's arithmetic on them.
    static_assert(kCols == 128, "one column group is one Hadamard block");
    // Counting: thread 0's acq_rel atomic releases the block's partials (ordered before it by the
    // barrier) and, in the last block, acquires everyone else's (the barrier after it orders the
    // other threads' loads after it): no device-wide fence by every thread.
    __shared__ unsigned last;
    __syncthreads();
    if (threadIdx.x == 0) last = atomic_add_acq_rel_gpu(item.done + group, 1u) == static_cast<unsigned>(splits - 1);
    __syncthreads();
    TRELLIS_TL_MARK(4);
#ifdef TRELLIS_CUDA_GEMV_TIMELINE
    if (tl) tl->last = last;
#endif
    if (last) {
      const int e0 = group * kCols + 4 * lane;
      // svh and bias of the lane's 4 outputs, loaded before the sums so that they are in flight with them.
      float svh[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) svh[j] = item.svh[e0 + j];  // svh has n entries
      float bias[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (item.bias)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (e0 + j < item.out_features) bias[j] = item.bias[e0 + j];
      // The split sums, in split order as hadamard_out adds its parts, one row at a time: the whole
      // block copies every split's 128 partials of the row into shared memory with all copies in
      // flight at once (gemv_merge_smem_bytes), then warp row % kGemvWarps adds them. The plain loop
      // went out 16 loads at a time (two L2 round trips on the launch's critical path at 32 splits);
      // holding all 32 in registers took ptxas to 176 registers.
      const char* zg = reinterpret_cast<const char*>(z + static_cast<int64_t>(group) * kCols);
      for (int row = 0; row < m; ++row) {
        const bool mine = warp == row % kGemvWarps;
        float* xres = item.fusion.resid ? item.fusion.resid + static_cast<int64_t>(row) * item.out_features + e0 : nullptr;
        const float4 xold = mine && xres ? ld4(xres) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);  // in flight with the copies
        for (int c = static_cast<int>(threadIdx.x); c < splits * 32; c += kGemvWarps * 32)
          cp_async16(smem + c * 16, zg + (static_cast<int64_t>(c >> 5) * m + row) * n * 4 + (c & 31) * 16);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        if (mine) {
          float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          for (int p = 0; p < splits; ++p) {
            const float4 t = *reinterpret_cast<const float4*>(smem + p * 512 + lane * 16);
            v[0] += t.x;
            v[1] += t.y;
            v[2] += t.z;
            v[3] += t.w;
          }
          fwht128(v, lane);
          float r[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) r[j] = out_value(v[j], svh[j], item.bias && e0 + j < item.out_features, bias[j]);
          store_out4(r, e0, item.out_features, item.y + static_cast<int64_t>(row) * item.out_features + e0);
          if (xres) {  // out_features == n: every element is inside
            float4 xv = xold;
            xv.x += r[0];
            xv.y += r[1];
            xv.z += r[2];
            xv.w += r[3];
            *reinterpret_cast<float4*>(xres) = xv;
            const float ss = warp_sum_xor(sumsq4(xv.x, xv.y, xv.z, xv.w));
            if (lane == 0) item.fusion.resid_sumsq[static_cast<int64_t>(row) * (n / kCols) + group] = ss;
          }
        }
        __syncthreads();  // the next row's copies reuse the staging area
      }
      if (threadIdx.x == 0) item.done[group] = 0;  // ready for the next launch (graph replays)
    }
  }
#ifdef TRELLIS_CUDA_GEMV_TIMELINE
  __syncthreads();
  TRELLIS_TL_MARK(5);
  if (tl) tl->t1 = tl_gtimer();
#endif
}

constexpr int kDecodeTiles = 4;  // tile rows per warp of decode_kernel; divides k/16 (k % 128 == 0)

// One block per TILES x 16-row x 128-column strip of Ŵ (8 tile columns, one warp each, TILES
// tile rows per warp): decode into a shared row-major strip, then 16-byte coalesced stores. With
// TILES > 1 every warp has all its tiles' trellis loads in flight before the first decode (with
// one tile per warp the kernel was latency-bound at ~2.4 TB/s on the H200, docs/BENCHMARKS.md
// session 9).
template <int K, int CB, int TILES>
__global__ void __launch_bounds__(256) decode_kernel(const uint32_t* __restrict__ trellis, int n_tiles, int tn0, int cols,
                                                     uint16_t* __restrict__ what) {
  constexpr int kPitch = 128 + 8;  // halves; keeps 16-byte row alignment, staggers banks
  __shared__ __align__(16) uint16_t strip[TILES * 16 * kPitch];
  pdl_begin();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tk0 = blockIdx.y * TILES, tn = tn0 + blockIdx.x * 8 + warp;
  uint32_t b[TILES][4];
#pragma unroll
  for (int t = 0; t < TILES; ++t)
    decode_lane<K, CB>(trellis + (static_cast<size_t>(tk0 + t) * n_tiles + tn) * (8 * K), lane, b[t]);
  const int r0 = 2 * (lane & 3), c0 = lane >> 2;
#pragma unroll
  for (int t = 0; t < TILES; ++t)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int row = 16 * t + r0 + (j & 1) + ((j & 2) ? 8 : 0), col = c0 + ((j & 4) ? 8 : 0);
      const uint32_t word = b[t][j >> 1];
      strip[row * kPitch + warp * 16 + col] = static_cast<uint16_t>((j & 1) ? word >> 16 : word & 0xFFFFu);
    }
  __syncthreads();
#pragma unroll
  for (int t = 0; t < TILES; ++t) {
    const int row = 16 * t + (threadIdx.x >> 4), chunk = threadIdx.x & 15;  // 16 rows x 16 chunks of 8 halves
    const uint4 v = *reinterpret_cast<const uint4*>(strip + row * kPitch + chunk * 8);
    *reinterpret_cast<uint4*>(what + (static_cast<size_t>(tk0) * 16 + row) * cols + blockIdx.x * 128 + chunk * 8) = v;
  }
}

using GemvFn = void (*)(GemvGroupArgs);
using DecodeFn = void (*)(const uint32_t*, int, int, int, uint16_t*);

template <int CB, int Mode, int Fuse, int... Ks>
constexpr auto gemv_row(std::integer_sequence<int, Ks...>) {
  return std::array<GemvFn, 8>{&gemv_kernel<Ks + 1, CB, Mode, Fuse>...};
}
template <int CB, int... Ks>
constexpr auto decode_row(std::integer_sequence<int, Ks...>) {
  return std::array<DecodeFn, 8>{&decode_kernel<Ks + 1, CB, kDecodeTiles>...};
}

using GemvRows = std::array<std::array<GemvFn, 8>, 3>;
template <int Mode, int Fuse>
constexpr GemvRows gemv_rows() {
  constexpr auto ks = std::make_integer_sequence<int, 8>{};
  return {gemv_row<0, Mode, Fuse>(ks), gemv_row<1, Mode, Fuse>(ks), gemv_row<2, Mode, Fuse>(ks)};
}
template <int CB, int... Ks>
constexpr auto gemv_occupancy_row(std::integer_sequence<int, Ks...>) {
  return std::array<GemvFn, 8>{&gemv_kernel<Ks + 1, CB, kPairs, 0, kGemvOccupancyBlocks>...};
}
// The default kernels (kPairs, nothing fused) at kGemvOccupancyBlocks blocks per SM.
const GemvRows kGemvOccupancyTable = {gemv_occupancy_row<0>(std::make_integer_sequence<int, 8>{}),
                                      gemv_occupancy_row<1>(std::make_integer_sequence<int, 8>{}),
                                      gemv_occupancy_row<2>(std::make_integer_sequence<int, 8>{})};
// [fuse][mode][codebook][K - 1]
template <int Fuse>
constexpr std::array<GemvRows, 4> gemv_modes() {
  return {gemv_rows<kPairs, Fuse>(), gemv_rows<kHalves, Fuse>(), gemv_rows<kPairsWA, Fuse>(),
          gemv_rows<kHalvesWA, Fuse>()};
}
const std::array<std::array<GemvRows, 4>, 3> kGemvTable = {gemv_modes<0>(), gemv_modes<1>(), gemv_modes<2>()};
const std::array<std::array<DecodeFn, 8>, 3> kDecodeTable = {decode_row<0>(std::make_integer_sequence<int, 8>{}),
                                                             decode_row<1>(std::make_integer_sequence<int, 8>{}),
                                                             decode_row<2>(std::make_integer_sequence<int, 8>{})};

const char* const kCbNames[3] = {"3inst", "mcg", "mul1"};

#ifdef TRELLIS_CUDA_GEMV_TIMELINE
// At exit (before the CUDA runtime tears down: registered after it initialised), the recorded
// blocks as text: "slot block smid last t0 t1 clk0 .. clk5", one line each.
void timeline_dump() {
  const char* path = std::getenv("TRELLIS_GEMV_TIMELINE_OUT");
  static TlRecord host[kTlSlots][kTlBlocks];
  if (!path || cudaDeviceSynchronize() != cudaSuccess || cudaMemcpyFromSymbol(host, g_tl, sizeof(host)) != cudaSuccess) {
    std::fprintf(stderr, "gemv timeline: nothing written\n");
    return;
  }
  std::FILE* f = std::fopen(path, "w");
  if (!f) return;
  for (int s = 0; s < kTlSlots; ++s)
    for (int b = 0; b < kTlBlocks; ++b) {
      const TlRecord& r = host[s][b];
      if (r.t0 == 0) continue;
      std::fprintf(f, "%d %d %u %u %llu %llu", s, b, r.smid, r.last, r.t0, r.t1);
      for (unsigned c : r.clk) std::fprintf(f, " %u", c);
      std::fprintf(f, "\n");
    }
  std::fclose(f);
}

int timeline_slot(int K, int codebook, std::span<const GemvItem> items, int64_t m, int64_t k, int64_t blocks) {
  static int seq = 0;
  static const int first = [] {
    const char* v = std::getenv("TRELLIS_GEMV_TIMELINE_FIRST");
    std::atexit(timeline_dump);
    return v ? std::atoi(v) : 129;
  }();
  const int slot = seq - first;
  ++seq;
  if (slot < 0 || slot >= kTlSlots) return -1;
  std::fprintf(stderr, "gemv timeline slot %d: K %d cb %d m %lld k %lld blocks %lld items", slot, K, codebook,
               static_cast<long long>(m), static_cast<long long>(k), static_cast<long long>(blocks));
  for (const GemvItem& it : items) std::fprintf(stderr, " [n %d splits %d fused %d]", it.n_tiles * 16, it.splits, it.x ? 2 : it.done ? 1 : 0);
  std::fprintf(stderr, "\n");
  return slot;
}
#endif

// Shared memory the fused output's merge stages the split partials of one row in.
size_t gemv_merge_smem_bytes(int splits) { return static_cast<size_t>(splits) * 128 * sizeof(float); }

}  // namespace

size_t gemv_ring_bytes(int K, int64_t m) {
  return static_cast<size_t>(kGemvWarps) * kStages * (2 * K * gemv_tiles(K) + 4 * m) * 16;
}

size_t gemv_smem_bytes(int K, int64_t m) {
  const size_t ring = gemv_ring_bytes(K, m);
  const size_t red = static_cast<size_t>(kGemvWarps) * m * 16 * gemv_tiles(K) * sizeof(float);
  return ring > red ? ring : red;
}

const char* gemv_name(int K, int codebook) {
  static const auto names = [] {
    std::array<std::array<std::string, 8>, 3> n;
    for (int cb = 0; cb < 3; ++cb)
      for (int k = 1; k <= 8; ++k) n[cb][k - 1] = "exl3_gemv_k" + std::to_string(k) + "_" + kCbNames[cb];
    return n;
  }();
  return names[codebook][K - 1].c_str();
}

void gemv(int K, int codebook, const uint32_t* trellis, const uint16_t* xa, int64_t m, int64_t k, int64_t n,
          int splits, float* z, cudaStream_t stream) {
  const GemvItem item{trellis, xa, z, static_cast<int>(n / 16), splits, 0};
  gemv_group(K, codebook, std::span<const GemvItem>(&item, 1), m, k, stream);
}

void gemv_group(int K, int codebook, std::span<const GemvItem> items, int64_t m, int64_t k, cudaStream_t stream) {
  if (items.empty() || items.size() > kMaxGroup)
    throw Error(ErrorKind::kInternal, "exl3_gemv: group of " + std::to_string(items.size()) + " linears");
  GemvGroupArgs args{};
  args.count = static_cast<int>(items.size());
  args.m = static_cast<int>(m);
  args.k_tiles = static_cast<int>(k / 16);
  int64_t blocks = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    args.item[i] = items[i];
    args.item[i].blocks = items[i].n_tiles / gemv_tiles(K) * items[i].splits;
    blocks += args.item[i].blocks;
  }
  static_assert(kActBytesMax == 512, "8 rows of 64 bytes");
  const int fuse = items[0].x ? 2 : items[0].done ? 1 : 0;
  size_t smem = gemv_smem_bytes(K, m);
  for (const GemvItem& it : items) {
    if ((it.x ? 2 : it.done ? 1 : 0) != fuse || (it.x && !it.done))
      throw Error(ErrorKind::kInternal, "exl3_gemv: group mixes fused and separate transforms");
    if (fuse != 0) {
      if (it.splits > kGemvMaxSplits)
        throw Error(ErrorKind::kInternal, "exl3_gemv: " + std::to_string(it.splits) +
                                              " k-splits (the fused output merges at most " +
                                              std::to_string(kGemvMaxSplits) + ")");
      smem = std::max(smem, gemv_merge_smem_bytes(it.splits));
    }
    if (fuse == 2) {
      const size_t act = static_cast<size_t>(m) * gemv_split_slabs(args.k_tiles, it.splits) * 64;
      if (act > kFusedInActBytes) throw Error(ErrorKind::kInternal, "exl3_gemv: fused input range too large");
      smem = std::max(smem, gemv_ring_bytes(K, m) + act);
    }
  }
  const int mode = (gemv_halves() ? kHalves : kPairs) + (m <= 4 && gemv_weights_a() ? kPairsWA : 0);
  const bool occ = mode == kPairs && fuse == 0 && gemv_occupancy();
  const GemvFn fn = occ ? kGemvOccupancyTable[codebook][K - 1] : kGemvTable[fuse][mode][codebook][K - 1];
  // The most dynamic shared memory any launch of this kernel asks for, opted in once per kernel
  // whatever this launch's size (as the other kernels do): the default limit counts the kernel's
  // static shared memory too, so a launch just under 48 KiB dynamic failed without it.
  static std::once_flag once[2][3][4][3][8];
  std::call_once(once[occ][fuse][mode][codebook][K - 1], [&] {
    const size_t merge = fuse != 0 ? gemv_merge_smem_bytes(kGemvMaxSplits) : 0;
    const size_t most = std::max(std::max(gemv_smem_bytes(K, 8), merge),
                                 fuse == 2 ? gemv_ring_bytes(K, 8) + kFusedInActBytes : size_t{0});
    check(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(most)),
          "cudaFuncSetAttribute (EXL3 GEMV shared memory)");
  });
#ifdef TRELLIS_CUDA_GEMV_TIMELINE
  args.tl_slot = timeline_slot(K, codebook, items, m, k, blocks);
#endif
  launch(gemv_name(K, codebook), fn, dim3(static_cast<unsigned>(blocks)), dim3(kGemvWarps * 32), smem, stream, args);
}

void decode(int K, int codebook, const uint32_t* trellis, int64_t k, int64_t n, int64_t col0, int64_t cols,
            uint16_t* what, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(cols / 128), static_cast<unsigned>(k / 16 / kDecodeTiles));  // k % 128 == 0
  launch("exl3_decode", kDecodeTable[codebook][K - 1], grid, dim3(256), 0, stream, trellis, static_cast<int>(n / 16),
         static_cast<int>(col0 / 16), static_cast<int>(cols), what);
}

}  // namespace trellis::cuda::exl3k
