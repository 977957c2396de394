// backends/cuda/cuda_encode.cu: the two-pass tail-biting Viterbi tile encoder of spec 5.7 on CUDA,
// bit-identical to exl3::encode_tile.
//
// Shape of the search. A state is s = [h | m | n] (K, 16-2K, K bits); its in-edge is [h | m] and
// its out-edge [m | n]. For one middle value m the 2^K in-edges and 2^K out-edges form a complete
// bipartite group, so the minimum over h of an out-edge only needs the 2^K costs of its own
// group. Each thread owns a fixed box of states (A values of h, B of m, C of n; A*B*C = 128 at 512
// threads) for the whole kernel, which lets it keep the codebook values of its 128 states in 64
// half2 registers: no decode and no table lookup in the inner loop. Per pair of states (n even /
// odd, one half2) a step costs HSUB2 + HFMA2 + HMNMX2, plus a mask compare and a LOP3 select of
// the h code when backpointers are needed. The 2^K predecessor costs come from shared memory
// (vector loads along m for K <= 3, along h for K = 8, broadcast scalars otherwise); for K = 7, 8
// the h range is split over R = 2, 4 adjacent lanes merged by shuffles (lower h wins ties).
//
// Arithmetic is native binary16 with round-to-nearest-even (spec 5.7): d = dec - w with
// __hsub2_rn (never contracted), c = fma(d, d, prev) with one rounding (__hfma2), first strict
// minimum over h ascending (the h select happens only on "<"; the value select is a plain min,
// which is the same binary16 value because costs are never NaN or -0).
//
// Backpointers (the h of each out-edge's best state, K bits) go to global memory packed per
// thread: word w of step i of slot z is pred[((z*256 + i)*W + w)*512 + tid]; the pair j of a
// thread sits in word j / F at bit K*(j % F) (even n) and 16 + K*(j % F) (odd n), F = 16 / K.
//
// Pipeline. A CTA is persistent over pairs of tiles (A, B) and runs phases
//   [A pass 1 | trace B' pass 2]  [B pass 1 | trace A pass 1]  [A pass 2 | trace B pass 1]
//   [B pass 2 | trace A pass 2]
// where B' is the previous pair's B: the traceback of one tile (a chain of dependent global
// loads, one per step) is done by thread 0 one step per forward step of the other tile, so its
// latency hides under the forward work. Tile A uses backpointer slot 0, B slot 1.
#include "backends/cuda/cuda_encode.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/cuda_util.h"
#include "exl3/tile.h"

namespace trellis::cuda {

namespace {

constexpr int kThreads = 512;
constexpr int kSteps = 256;  // trellis steps per tile
constexpr int kStatesPerThread = 65536 / kThreads;

// The box of states a thread owns for bit width K, and the packing of its backpointers.
template <int K>
struct Layout {
  static constexpr int kEdges = 1 << (16 - K);
  static constexpr int kH = 1 << K;                 // values of h (= values of n)
  static constexpr int kGroups = 1 << (16 - 2 * K);  // values of m
  static constexpr int kInShift = 16 - 2 * K;        // in-edge = h << kInShift | m
  static constexpr int A = K <= 6 ? kH : 64;         // h per thread
  static constexpr int R = kH / A;                   // lanes sharing one out-edge box
  static constexpr int C = K == 1 ? 2 : K == 2 ? 4 : K <= 4 ? 8 : K == 5 ? 4 : 2;  // n per thread
  static constexpr int NB = kH / C;
  static constexpr int B = kStatesPerThread / (A * C);  // m per thread
  static constexpr int MB = kGroups / B;
  static constexpr int P = B * C / 2;  // out-edge pairs per thread
  static constexpr int F = 16 / K;     // backpointer fields per 16-bit half
  static constexpr int W = (P + F - 1) / F;  // backpointer words per thread and step
  static constexpr int BC = B < 8 ? B : 8;   // m chunk of one vector load
  static constexpr int kChains = P >= 4 ? 1 : P == 2 ? 2 : 4;  // independent min chains per pair
  static_assert(A * B * C == kStatesPerThread);
  static_assert(MB * NB * R == kThreads);
  static_assert(R == 1 || P == 1);
};

// Codebook decode (spec 3), exact: integer hash then one binary16 add (3INST, MCG) or FMA (MUL1).
template <int CB>
__device__ __forceinline__ __half decode_state(uint32_t s) {
  if constexpr (CB == 2) {
    const uint32_t x = s * 0x83DCD12Du;
    const uint32_t sum = (x & 0xFFu) + ((x >> 8) & 0xFFu) + ((x >> 16) & 0xFFu) + (x >> 24);
    return __hfma(__ushort_as_half(static_cast<unsigned short>(0x6400u + sum)),
                  __ushort_as_half(0x1EEE), __ushort_as_half(0xC931));
  } else {
    const uint32_t x = CB == 0 ? s * 89226354u + 64248484u : s * 0xCBAC1FEDu;
    const uint32_t y = (x & 0x8FFF8FFFu) ^ 0x3B603B60u;
    return __hadd_rn(__ushort_as_half(static_cast<unsigned short>(y & 0xFFFFu)),
                     __ushort_as_half(static_cast<unsigned short>(y >> 16)));
  }
}

__device__ __forceinline__ uint32_t rev5(uint32_t v) { return __brev(v) >> 27; }

// Spec 5.7 start-edge tie order (ExLlamaV3's two-level reduction): smaller key wins. A bijection
// on 15-bit edges.
__device__ __forceinline__ uint32_t tie_key(uint32_t e) {
  const uint32_t t = e & 1023u;
  const uint32_t j = (t >= 512 ? 16u : 0u) + (t & 511u) / 32u, l = t & 31u;
  return rev5(j) << 10 | rev5(l) << 5 | (e >> 10);
}
__device__ __forceinline__ uint32_t edge_of_tie_key(uint32_t key) {
  const uint32_t j = rev5((key >> 10) & 31u), l = rev5((key >> 5) & 31u);
  const uint32_t t = (j >= 16 ? 512u : 0u) + (j & 15u) * 32u + l;
  return (key & 31u) << 10 | t;
}

__device__ __forceinline__ uint32_t h2_bits(__half2 v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}
__device__ __forceinline__ __half2 bits_h2(uint32_t u) {
  __half2 v;
  memcpy(&v, &u, 4);
  return v;
}

struct Params {
  const uint16_t* x;   // [n_tiles][256] binary16
  uint16_t* states;    // [n_tiles][256]
  uint16_t* decoded;   // [n_tiles][256] or null
  uint32_t* pred;      // [gridDim.x][2 slots][256 steps][W][kThreads]
  int n_tiles;
};

// Traceback of one pass of one tile, run by thread 0 one step at a time.
struct Trace {
  int step = -1;  // next step to trace; < 0: idle
  int tile = 0;
  int slot = 0;
  int pass = 0;
  uint32_t edge = 0;  // out-edge of `step` on the path
  uint32_t word = 0;  // backpointer word of `step`, loaded by issue()
};

template <int K, int CB>
struct Encoder {
  using L = Layout<K>;
  static constexpr uint32_t kHMask = (1u << K) - 1;

  __half2 dec[L::A][L::B][L::C / 2];
  int tid, r, nb, mb;
  __half* cost;        // [2][kEdges] ping-pong cost buffers (shared)
  uint32_t* pred_cta;  // this CTA's [2][256][W][kThreads]
  uint16_t* states;
  uint16_t* decoded;

  __device__ void init(const Params& params, __half* cost_smem) {
    states = params.states;
    decoded = params.decoded;
    cost = cost_smem;
    tid = threadIdx.x;
    r = tid % L::R;
    nb = (tid / L::R) % L::NB;
    mb = tid / (L::R * L::NB);
    pred_cta = params.pred + static_cast<size_t>(blockIdx.x) * 2 * kSteps * L::W * kThreads;
#pragma unroll
    for (int a = 0; a < L::A; ++a)
#pragma unroll
      for (int bi = 0; bi < L::B; ++bi)
#pragma unroll
        for (int cp = 0; cp < L::C / 2; ++cp) {
          const uint32_t h = r * L::A + a, m = mb * L::B + bi, n = nb * L::C + 2 * cp;
          const uint32_t s = h << (16 - K) | m << K | n;
          dec[a][bi][cp] = __halves2half2(decode_state<CB>(s), decode_state<CB>(s + 1));
        }
  }

  // One trellis step: next[e] = min over h of fma(d, d, prev[in-edge]); with kTrack, also the
  // backpointer words of this thread (written to pred_step).
  template <bool kTrack>
  __device__ __forceinline__ void step(const __half* __restrict__ prev, __half* __restrict__ next,
                                       __half w, uint32_t* pred_step) {
    const __half2 w2 = __half2half2(w);
    uint32_t words[L::W];
#pragma unroll
    for (int i = 0; i < L::W; ++i) words[i] = 0;
    __half2 out[L::P];
#pragma unroll
    for (int b0 = 0; b0 < L::B; b0 += L::BC) {
      // Predecessor costs prev[(r*A + a) << kInShift | m] for this chunk of m.
      __half pv[L::A][L::BC];
      if constexpr (L::B >= 2) {
#pragma unroll
        for (int a = 0; a < L::A; ++a) {
          const __half* src = prev + ((r * L::A + a) << L::kInShift) + mb * L::B + b0;
          if constexpr (L::BC == 8) {
            const uint4 v = *reinterpret_cast<const uint4*>(src);
            memcpy(&pv[a][0], &v, 16);
          } else {
            static_assert(L::BC == 2);
            const uint32_t v = *reinterpret_cast<const uint32_t*>(src);
            memcpy(&pv[a][0], &v, 4);
          }
        }
      } else if constexpr (L::kInShift == 0) {  // K = 8: contiguous in h
#pragma unroll
        for (int a = 0; a < L::A; a += 8) {
          const uint4 v = *reinterpret_cast<const uint4*>(prev + r * L::A + a);
          __half tmp[8];
          memcpy(tmp, &v, 16);
#pragma unroll
          for (int i = 0; i < 8; ++i) pv[a + i][0] = tmp[i];
        }
      } else {
#pragma unroll
        for (int a = 0; a < L::A; ++a) pv[a][0] = prev[((r * L::A + a) << L::kInShift) + mb];
      }
#pragma unroll
      for (int bc = 0; bc < L::BC; ++bc) {
        const int bi = b0 + bc;
#pragma unroll
        for (int cp = 0; cp < L::C / 2; ++cp) {
          const int j = bi * (L::C / 2) + cp;  // pair index
          const int shift = K * (j % L::F);
          // G independent minimum chains over contiguous h ranges (instruction-level
          // parallelism when a thread has few pairs), merged in h order: a later range wins
          // only when strictly smaller, which keeps the first strict minimum.
          constexpr int G = L::kChains, AG = L::A / G;
          __half2 bests[G];
          uint32_t bhs[G];
#pragma unroll
          for (int a = 0; a < L::A; ++a) {
            const int g = a / AG;
            const __half2 d = __hsub2_rn(dec[a][bi][cp], w2);
            const __half2 c = __hfma2(d, d, __half2half2(pv[a][bc]));
            const uint32_t code = (static_cast<uint32_t>(a) * 0x10001u) << shift;
            if (a % AG == 0) {
              bests[g] = c;
              bhs[g] = code;
            } else {
              if constexpr (kTrack) {
                const uint32_t lt = __hlt2_mask(c, bests[g]);
                bhs[g] = (code & lt) | (bhs[g] & ~lt);
              }
              bests[g] = __hmin2(c, bests[g]);
            }
          }
          __half2 best = bests[0];
          uint32_t bh = bhs[0];
#pragma unroll
          for (int g = 1; g < G; ++g) {
            if constexpr (kTrack) {
              const uint32_t lt = __hlt2_mask(bests[g], best);
              bh = (bhs[g] & lt) | (bh & ~lt);
            }
            best = __hmin2(bests[g], best);
          }
          if constexpr (L::R > 1) {
            if constexpr (kTrack) bh += (static_cast<uint32_t>(r * L::A) * 0x10001u);
#pragma unroll
            for (int off = 1; off < L::R; off <<= 1) {
              const __half2 oc = bits_h2(__shfl_xor_sync(0xFFFFFFFFu, h2_bits(best), off));
              const bool lower = (r & off) == 0;
              const __half2 lo_c = lower ? best : oc, up_c = lower ? oc : best;
              if constexpr (kTrack) {
                const uint32_t oh = __shfl_xor_sync(0xFFFFFFFFu, bh, off);
                const uint32_t lo_h = lower ? bh : oh, up_h = lower ? oh : bh;
                const uint32_t lt = __hlt2_mask(up_c, lo_c);
                bh = (up_h & lt) | (lo_h & ~lt);
              }
              best = __hmin2(lo_c, up_c);
            }
          }
          out[j] = best;
          if constexpr (kTrack) words[j / L::F] |= bh;
          // The thread's out-edges are contiguous: [mb*B .. +B) x [nb*C .. +C) with NB == 1 or
          // B == 1; pair j is at 2*j. Stored as soon as a 16-byte chunk is complete.
          __half* dst = next + ((mb * L::B) << K) + nb * L::C;
          if constexpr (L::P % 4 == 0) {
            if (j % 4 == 3) {
              uint4 v;
              memcpy(&v, &out[j - 3], 16);
              *reinterpret_cast<uint4*>(dst + 2 * (j - 3)) = v;
            }
          } else if constexpr (L::P == 2) {
            if (j == 1) {
              uint2 v;
              memcpy(&v, &out[0], 8);
              *reinterpret_cast<uint2*>(dst) = v;
            }
          } else {
            if (L::R == 1 || r == 0) *reinterpret_cast<__half2*>(dst) = out[0];
          }
        }
      }
    }
    if constexpr (kTrack) {
#pragma unroll
      for (int i = 0; i < L::W; ++i) pred_step[i * kThreads + tid] = words[i];
    }
  }

  __device__ uint32_t* pred_row(int slot, int step) const {
    return pred_cta + (static_cast<size_t>(slot) * kSteps + step) * L::W * kThreads;
  }

  // Traceback, thread 0 only: issue() loads the backpointer word of the current step, finish()
  // follows it (called after the forward work of the step so that the load latency is hidden).
  __device__ void trace_issue(Trace& t) const {
    if (t.step < 0) return;
    const uint32_t e = t.edge, m = e >> K, n = e & kHMask;
    const uint32_t owner = ((m / L::B) * L::NB + n / L::C) * L::R;
    const uint32_t j = (m % L::B) * (L::C / 2) + (n % L::C) / 2;
    t.word = pred_row(t.slot, t.step)[(j / L::F) * kThreads + owner];
  }
  __device__ void trace_finish(Trace& t, int* estar) const {
    if (t.step < 0) return;
    const uint32_t e = t.edge, n = e & kHMask;
    const uint32_t j = ((e >> K) % L::B) * (L::C / 2) + (n % L::C) / 2;
    const uint32_t h = (t.word >> ((n & 1) * 16 + K * (j % L::F))) & kHMask;
    const uint32_t e_prev = h << L::kInShift | e >> K;
    if (t.pass == 2) {
      const uint32_t s = (e_prev << K | e) & 0xFFFFu;
      const size_t at = static_cast<size_t>(t.tile) * kSteps + t.step;
      states[at] = static_cast<uint16_t>(s);
      if (decoded) decoded[at] = __half_as_ushort(decode_state<CB>(s));
    }
    t.edge = e_prev;
    if (--t.step < 0 && t.pass == 1) estar[t.slot] = static_cast<int>(e_prev);
  }

  // One forward pass of the tile whose inputs are in w (shared), backpointers to `slot`, with
  // thread 0 advancing trace `t` one step per forward step. Pass 1 leaves the costs of step 126
  // in cost buffer 1.
  __device__ void forward(int pass, int slot, const __half* w, int start_edge, Trace& t,
                          int* estar) {
    const __half zero = __ushort_as_half(0), inf = __ushort_as_half(0x7C00);
    for (int e = tid; e < L::kEdges; e += kThreads)
      cost[e] = (pass == 1 || e == start_edge) ? zero : inf;
    __syncthreads();
    for (int q = 0; q < kSteps; ++q) {
      const int step = pass == 1 ? (q + kSteps / 2) % kSteps : q;
      if (tid == 0) trace_issue(t);
      const __half* prev = cost + (q & 1) * L::kEdges;
      __half* next = cost + ((q + 1) & 1) * L::kEdges;
      if (pass == 2 || q >= kSteps / 2)
        this->template step<true>(prev, next, w[step], pred_row(slot, step) + 0);
      else
        this->template step<false>(prev, next, w[step], nullptr);
      if (tid == 0) trace_finish(t, estar);
      __syncthreads();
    }
  }

  // Runs trace t to completion with no forward work.
  __device__ void drain(Trace& t, int* estar) {
    if (tid == 0) {
      while (t.step >= 0) {
        trace_issue(t);
        trace_finish(t, estar);
      }
    }
    __syncthreads();
  }

  // Start edge of pass 1 (spec 5.7 quirks): argmin of step 126's costs (buffer 1), ties by
  // tie_key; every thread returns it.
  __device__ uint32_t start_edge(uint32_t* red) {
    const __half* c = cost + L::kEdges;
    uint32_t best = 0xFFFFFFFFu;
    for (int e = tid; e < L::kEdges; e += kThreads)
      best = min(best, static_cast<uint32_t>(__half_as_ushort(c[e])) << 15 | tie_key(e));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) best = min(best, __shfl_xor_sync(0xFFFFFFFFu, best, off));
    if (tid % 32 == 0) red[tid / 32] = best;
    __syncthreads();
    best = red[0];
#pragma unroll
    for (int i = 1; i < kThreads / 32; ++i) best = min(best, red[i]);
    __syncthreads();
    return edge_of_tie_key(best & 0x7FFFu);
  }
};

template <int K, int CB>
__global__ void __launch_bounds__(kThreads, 1) encode_kernel(Params params) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ __half w_s[2][kSteps];
  __shared__ uint32_t red[kThreads / 32];
  __shared__ int estar[2];

  Encoder<K, CB> enc;
  enc.init(params, reinterpret_cast<__half*>(smem));
  Trace t;  // meaningful in thread 0 only
  const int n_pairs = (params.n_tiles + 1) / 2;
  for (int pair = blockIdx.x; pair < n_pairs; pair += gridDim.x) {
    const int tile_a = 2 * pair, tile_b = 2 * pair + 1;
    const bool has_b = tile_b < params.n_tiles;
    for (int i = threadIdx.x; i < 2 * kSteps; i += kThreads) {
      const int tile = i < kSteps ? tile_a : tile_b;
      if (tile < params.n_tiles)
        w_s[i / kSteps][i % kSteps] =
            __ushort_as_half(params.x[static_cast<size_t>(tile) * kSteps + i % kSteps]);
    }
    __syncthreads();

    enc.forward(1, 0, w_s[0], 0, t, estar);  // [A pass 1 | previous B pass 2]
    Trace trace_a1{kSteps / 2 - 1, tile_a, 0, 1, enc.start_edge(red), 0};
    if (has_b) {
      enc.forward(1, 1, w_s[1], 0, trace_a1, estar);  // [B pass 1 | A pass 1]
    } else {
      enc.drain(t, estar);
      enc.drain(trace_a1, estar);
    }
    Trace trace_b1{kSteps / 2 - 1, tile_b, 1, 1, has_b ? enc.start_edge(red) : 0, 0};
    if (!has_b) trace_b1.step = -1;
    enc.forward(2, 0, w_s[0], estar[0], trace_b1, estar);  // [A pass 2 | B pass 1]
    Trace trace_a2{kSteps - 1, tile_a, 0, 2, static_cast<uint32_t>(estar[0]), 0};
    if (has_b) {
      enc.forward(2, 1, w_s[1], estar[1], trace_a2, estar);  // [B pass 2 | A pass 2]
      t = Trace{kSteps - 1, tile_b, 1, 2, static_cast<uint32_t>(estar[1]), 0};
    } else {
      enc.drain(trace_a2, estar);
      t = Trace{};
    }
  }
  enc.drain(t, estar);
}

using KernelFn = void (*)(Params);

template <int K>
KernelFn kernel_for_k(exl3::Codebook cb) {
  switch (cb) {
    case exl3::Codebook::k3Inst: return encode_kernel<K, 0>;
    case exl3::Codebook::kMcg: return encode_kernel<K, 1>;
    case exl3::Codebook::kMul1: return encode_kernel<K, 2>;
  }
  return nullptr;
}

struct Variant {
  KernelFn fn = nullptr;
  int words = 0;              // backpointer words per thread and step
  size_t smem = 0;            // dynamic shared memory (cost buffers)
};

template <int K>
Variant variant_k(exl3::Codebook cb) {
  return Variant{kernel_for_k<K>(cb), Layout<K>::W, 2 * Layout<K>::kEdges * sizeof(__half)};
}

Variant variant_for(int K, exl3::Codebook cb) {
  switch (K) {
    case 1: return variant_k<1>(cb);
    case 2: return variant_k<2>(cb);
    case 3: return variant_k<3>(cb);
    case 4: return variant_k<4>(cb);
    case 5: return variant_k<5>(cb);
    case 6: return variant_k<6>(cb);
    case 7: return variant_k<7>(cb);
    case 8: return variant_k<8>(cb);
  }
  return {};
}

// Per-device state: the stream and the buffers, grown on demand and kept between calls.
struct DeviceContext {
  std::mutex mu;
  bool ready = false;
  cudaStream_t stream = nullptr;
  int sms = 0;
  int smem_optin = 0;
  uint16_t* io = nullptr;  // [3][cap_tiles][256]: inputs, states, decoded
  size_t cap_tiles = 0;
  uint32_t* pred = nullptr;
  size_t pred_bytes = 0;
  cudaEvent_t kernel_start = nullptr, kernel_end = nullptr;
  double last_kernel_ms = 0;
};

DeviceContext& device_context(int device) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<DeviceContext>> contexts;  // never destroyed (see cuda_test_util.h)
  std::lock_guard<std::mutex> lock(mu);
  if (contexts.size() <= static_cast<size_t>(device)) contexts.resize(device + 1);
  if (!contexts[device]) contexts[device] = std::make_unique<DeviceContext>();
  return *contexts[device];
}

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "encode_tiles: cudaGetDevice");
    check(cudaSetDevice(device), "encode_tiles: cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

constexpr size_t kChunkTiles = 65536;  // tiles per launch (inputs + outputs: 96 MiB)

}  // namespace

bool encoder_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

void encode_tiles(const uint16_t* x, size_t n_tiles, int K, exl3::Codebook cb, uint16_t* states,
                  uint16_t* decoded, int device) {
  if (K < exl3::kMinK || K > exl3::kMaxK)
    raise(ErrorKind::kInvalidArgument,
          "cuda::encode_tiles: K = " + std::to_string(K) + "; expected 1..8");
  const int cb_id = static_cast<int>(cb);
  if (cb_id < 0 || cb_id > 2)
    raise(ErrorKind::kInvalidArgument, "cuda::encode_tiles: unknown codebook " + std::to_string(cb_id));
  if (n_tiles == 0) return;
  if (!x || !states)
    raise(ErrorKind::kInvalidArgument, "cuda::encode_tiles: null input or states pointer");
  for (size_t i = 0; i < n_tiles * kSteps; ++i) {
    if ((x[i] & 0x7C00u) == 0x7C00u) {
      char bits[8];
      std::snprintf(bits, sizeof bits, "%04x", x[i]);
      raise(ErrorKind::kInvalidArgument, "cuda::encode_tiles: input " + std::to_string(i % kSteps) +
                                             " of tile " + std::to_string(i / kSteps) +
                                             " is not finite (bits " + bits + ")");
    }
  }
  int count = 0;
  check(cudaGetDeviceCount(&count), "cuda::encode_tiles: cudaGetDeviceCount");
  if (device < 0 || device >= count)
    raise(ErrorKind::kUnsupported, "cuda::encode_tiles: no CUDA device " + std::to_string(device));

  DeviceContext& ctx = device_context(device);
  std::lock_guard<std::mutex> lock(ctx.mu);
  DeviceGuard guard(device);
  if (!ctx.ready) {
    check(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking), "cuda::encode_tiles: stream");
    check(cudaDeviceGetAttribute(&ctx.sms, cudaDevAttrMultiProcessorCount, device),
          "cuda::encode_tiles: SM count");
    check(cudaDeviceGetAttribute(&ctx.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
          "cuda::encode_tiles: shared memory size");
    check(cudaEventCreate(&ctx.kernel_start), "cuda::encode_tiles: event");
    check(cudaEventCreate(&ctx.kernel_end), "cuda::encode_tiles: event");
    ctx.ready = true;
  }
  const Variant v = variant_for(K, cb);
  const size_t static_smem = 2 * kSteps * sizeof(__half) + 64 * sizeof(uint32_t);
  if (v.smem + static_smem > static_cast<size_t>(ctx.smem_optin))
    raise(ErrorKind::kUnsupported,
          "cuda::encode_tiles: K = " + std::to_string(K) + " needs " +
              std::to_string(v.smem + static_smem) + " bytes of shared memory per block; device " +
              std::to_string(device) + " has " + std::to_string(ctx.smem_optin));
  check(cudaFuncSetAttribute(v.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(v.smem)),
        "cuda::encode_tiles: shared memory attribute");
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, v.fn, kThreads, v.smem),
        "cuda::encode_tiles: occupancy");
  if (per_sm < 1) raise(ErrorKind::kUnsupported, "cuda::encode_tiles: kernel does not fit on an SM");

  // Tiles in flight: two per CTA; their backpointers dominate the memory.
  const size_t pred_per_cta = static_cast<size_t>(2) * kSteps * v.words * kThreads * sizeof(uint32_t);
  size_t grid = static_cast<size_t>(ctx.sms) * per_sm;
  grid = std::min(grid, (std::min(n_tiles, kChunkTiles) + 1) / 2);
  const size_t chunk = std::min(n_tiles, kChunkTiles);
  if (ctx.cap_tiles < chunk) {
    if (ctx.io) check(cudaFree(ctx.io), "cuda::encode_tiles: free");
    ctx.io = nullptr;
    ctx.cap_tiles = 0;
    ctx.io = static_cast<uint16_t*>(
        device_malloc(3 * chunk * kSteps * sizeof(uint16_t), "tile encoder inputs/outputs"));
    ctx.cap_tiles = chunk;
  }
  if (ctx.pred_bytes < grid * pred_per_cta) {
    if (ctx.pred) check(cudaFree(ctx.pred), "cuda::encode_tiles: free");
    ctx.pred = nullptr;
    ctx.pred_bytes = 0;
    size_t free_bytes = 0, total = 0;
    check(cudaMemGetInfo(&free_bytes, &total), "cuda::encode_tiles: cudaMemGetInfo");
    const size_t fit = free_bytes / 10 * 8 / pred_per_cta;
    grid = std::max<size_t>(1, std::min(grid, fit));
    ctx.pred = static_cast<uint32_t*>(device_malloc(grid * pred_per_cta, "tile encoder backpointers"));
    ctx.pred_bytes = grid * pred_per_cta;
  }
  grid = std::min(grid, ctx.pred_bytes / pred_per_cta);

  uint16_t* d_x = ctx.io;
  uint16_t* d_states = ctx.io + ctx.cap_tiles * kSteps;
  uint16_t* d_decoded = ctx.io + 2 * ctx.cap_tiles * kSteps;
  ctx.last_kernel_ms = 0;
  for (size_t first = 0; first < n_tiles; first += chunk) {
    const size_t n = std::min(chunk, n_tiles - first);
    const size_t bytes = n * kSteps * sizeof(uint16_t);
    check(cudaMemcpyAsync(d_x, x + first * kSteps, bytes, cudaMemcpyHostToDevice, ctx.stream),
          "cuda::encode_tiles: copy inputs");
    Params params{d_x, d_states, decoded ? d_decoded : nullptr, ctx.pred, static_cast<int>(n)};
    const unsigned blocks = static_cast<unsigned>(std::min(grid, (n + 1) / 2));
    check(cudaEventRecord(ctx.kernel_start, ctx.stream), "cuda::encode_tiles: event");
    v.fn<<<blocks, kThreads, v.smem, ctx.stream>>>(params);
    check_launch("cuda::encode_tiles: encode kernel launch");
    check(cudaEventRecord(ctx.kernel_end, ctx.stream), "cuda::encode_tiles: event");
    check(cudaMemcpyAsync(states + first * kSteps, d_states, bytes, cudaMemcpyDeviceToHost, ctx.stream),
          "cuda::encode_tiles: copy states");
    if (decoded)
      check(cudaMemcpyAsync(decoded + first * kSteps, d_decoded, bytes, cudaMemcpyDeviceToHost,
                            ctx.stream),
            "cuda::encode_tiles: copy decoded");
    check(cudaStreamSynchronize(ctx.stream), "cuda::encode_tiles: encode kernel");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, ctx.kernel_start, ctx.kernel_end), "cuda::encode_tiles: event");
    ctx.last_kernel_ms += ms;
  }
}

double last_encode_kernel_ms(int device) {
  DeviceContext& ctx = device_context(device);
  std::lock_guard<std::mutex> lock(ctx.mu);
  return ctx.last_kernel_ms;
}

}  // namespace trellis::cuda
