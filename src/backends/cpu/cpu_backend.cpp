#include "backends/cpu/cpu_backend.h"

#include <cmath>
#include <cstring>
#include <thread>

#include "backends/cpu/cpu_common.h"
#include "backends/cpu/attention.h"
#include "backends/cpu/dense_matmul.h"
#include "backends/cpu/exl3_matmul.h"
#include "backends/cpu/gram.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/log.h"

namespace trellis {

DeviceTensor DeviceTensor::first_rows(int64_t n) const {
  DeviceTensor t = *this;
  if (!t.shape.empty()) t.shape[0] = n;
  return t;
}

void Backend::linears(std::span<const LinearWeights* const> ws, const DeviceTensor& x,
                      std::span<DeviceTensor* const> ys) {
  if (ws.size() != ys.size())
    fail(ErrorKind::kInternal, "linears: {} weights for {} outputs", ws.size(), ys.size());
  for (size_t i = 0; i < ws.size(); ++i) linear(*ws[i], x, *ys[i]);
}

void Backend::mlp(const LinearWeights& gate, const LinearWeights& up, const LinearWeights& down, const DeviceTensor& x,
                  DeviceTensor& g, DeviceTensor& u, DeviceTensor& y) {
  const LinearWeights* w[2] = {&gate, &up};
  DeviceTensor* gu[2] = {&g, &u};
  linears(w, x, gu);
  silu_mul(g, u, g);
  linear(down, g, y);
}

void Backend::embedding_host(const TensorView&, std::span<const int32_t>, DeviceTensor&) {
  fail(ErrorKind::kInternal, "the {} backend keeps no host-resident embedding tables", info().backend);
}

void Backend::gram_accumulate(const DeviceTensor&, DeviceTensor&, DeviceTensor&) {
  fail(ErrorKind::kUnsupported, "the {} backend cannot accumulate calibration Hessians (quantize with --device cpu or cuda)",
       info().backend);
}

namespace cpu {
namespace {

float load_float(const std::byte* p, DType dtype, size_t i) {
  switch (dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return fp16_to_fp32(h);
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return bf16_to_fp32(h);
    }
    default:
      fail(ErrorKind::kUnsupported, "CPU backend: cannot read dtype {} as float", dtype_name(dtype));
  }
}

class DenseLinear : public LinearWeights {
 public:
  const uint16_t* weight = nullptr;  // (out, in) fp16, in place or owned_
  std::vector<uint16_t> owned;
  std::vector<float> bias;
};

class Exl3Linear : public LinearWeights {
 public:
  exl3::Exl3LinearView view;
  std::vector<float> bias;  // [out] real width (bias of the view is applied separately)
};

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(size_t threads) : pool_(threads) {
    info_.backend = "cpu";
    info_.name = "CPU";
    info_.kind = "cpu";
    info_.threads = static_cast<int>(pool_.size());
    info_.features = {exl3_dispatch_target_name()};
  }

  const DeviceInfo& info() const override { return info_; }

  DeviceTensor alloc(DType dtype, const Shape& shape) override {
    DeviceTensor t;
    t.dtype = dtype;
    t.shape = shape;
    t.buffer = std::make_shared<CpuBuffer>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
    return t;
  }

  DeviceTensor upload(const TensorView& host, DType dtype) override {
    DeviceTensor t = alloc(dtype, host.shape);
    const size_t n = static_cast<size_t>(host.numel());
    if (dtype == host.dtype) {
      std::memcpy(static_cast<CpuBuffer*>(t.buffer.get())->data(), host.data, host.nbytes());
    } else if (dtype == DType::kF32) {
      float* dst = f32(t);
      pool_.parallel_for(n, 1 << 16, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) dst[i] = load_float(host.data, host.dtype, i);
      });
    } else if (dtype == DType::kF16) {
      uint16_t* dst = u16(t);
      pool_.parallel_for(n, 1 << 16, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) dst[i] = fp32_to_fp16(load_float(host.data, host.dtype, i));
      });
    } else {
      fail(ErrorKind::kUnsupported, "CPU backend: cannot upload as {}", dtype_name(dtype));
    }
    return t;
  }

  void download(const DeviceTensor& t, float* host) override {
    const size_t n = static_cast<size_t>(shape_numel(t.shape));
    if (t.dtype == DType::kF32) {
      std::memcpy(host, f32(t), n * 4);
    } else if (t.dtype == DType::kF16) {
      fp16_to_fp32(u16(t), host, n);
    } else {
      fail(ErrorKind::kInternal, "CPU backend: download of {}", dtype_name(t.dtype));
    }
  }

  std::unique_ptr<LinearWeights> prepare_linear(const LinearSource& src) override {
    auto read_bias = [&](std::vector<float>& out, int64_t n) {
      if (!src.bias) return;
      out.resize(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) out[static_cast<size_t>(j)] = load_float(src.bias->data, src.bias->dtype, static_cast<size_t>(j));
    };
    if (src.exl3) {
      auto l = std::make_unique<Exl3Linear>();
      l->view = *src.exl3;
      l->view.bias = nullptr;
      l->in_features = src.in_features;
      l->out_features = src.out_features;
      read_bias(l->bias, src.out_features);
      return l;
    }
    TRELLIS_CHECK(src.dense.has_value());
    auto l = std::make_unique<DenseLinear>();
    l->in_features = src.in_features;
    l->out_features = src.out_features;
    const TensorView& w = *src.dense;
    if (w.dtype == DType::kF16) {
      l->weight = reinterpret_cast<const uint16_t*>(w.data);  // the kernel takes any alignment
    } else {
      const size_t n = static_cast<size_t>(w.numel());
      l->owned.resize(n);
      for (size_t i = 0; i < n; ++i) l->owned[i] = fp32_to_fp16(load_float(w.data, w.dtype, i));
      l->weight = l->owned.data();
      l->device_bytes = n * 2;
      log_warn_once("cpu-dense-convert", fmt::format("CPU backend: converting {} weights to fp16", dtype_name(w.dtype)));
    }
    read_bias(l->bias, src.out_features);
    return l;
  }

  void embedding(const DeviceTensor& table, std::span<const int32_t> ids, DeviceTensor& out) override {
    const int64_t dim = table.shape[1];
    float* dst = f32(out);
    for (size_t r = 0; r < ids.size(); ++r) {
      if (table.dtype == DType::kF16)
        fp16_to_fp32(u16(table) + ids[r] * dim, dst + static_cast<int64_t>(r) * dim, static_cast<size_t>(dim));
      else
        std::memcpy(dst + static_cast<int64_t>(r) * dim, f32(table) + ids[r] * dim, static_cast<size_t>(dim) * 4);
    }
  }

  void rms_norm(const DeviceTensor& x, const DeviceTensor& weight, float eps, int64_t group,
                DeviceTensor& out) override {
    const int64_t groups = x.rows() * (x.cols() / group);
    const float* src = f32(x);
    const float* w = f32(weight);
    float* dst = f32(out);
    pool_.parallel_for(static_cast<size_t>(groups), 8, [&](size_t b, size_t e) {
      for (size_t g = b; g < e; ++g) {
        const float* v = src + static_cast<int64_t>(g) * group;
        float* o = dst + static_cast<int64_t>(g) * group;
        double ss = 0;
        for (int64_t i = 0; i < group; ++i) ss += static_cast<double>(v[i]) * v[i];
        const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(group)) + eps);
        for (int64_t i = 0; i < group; ++i) o[i] = v[i] * inv * w[i];
      }
    });
  }

  void linear(const LinearWeights& w, const DeviceTensor& x, DeviceTensor& y) override {
    const int64_t m = x.rows();
    if (const auto* d = dynamic_cast<const DenseLinear*>(&w)) {
      dense_matmul_f16(d->weight, f32(x), m, d->in_features, d->out_features, f32(y), pool_);
      add_bias(d->bias, y);
      return;
    }
    const auto* e = static_cast<const Exl3Linear*>(&w);
    const int64_t k = e->view.k, n = e->view.n;
    const float* xin = f32(x);
    if (k != e->in_features) {  // zero-extend the input to the padded width (spec 2.4)
      float* xp = pad_in_.reserve(static_cast<size_t>(m * k));
      for (int64_t r = 0; r < m; ++r) {
        std::memcpy(xp + r * k, xin + r * e->in_features, static_cast<size_t>(e->in_features) * 4);
        std::memset(xp + r * k + e->in_features, 0, static_cast<size_t>(k - e->in_features) * 4);
      }
      xin = xp;
    }
    if (n != e->out_features) {  // padded outputs are dropped
      float* yp = pad_out_.reserve(static_cast<size_t>(m * n));
      exl3_matmul(e->view, xin, m, yp, pool_);
      float* dst = f32(y);
      for (int64_t r = 0; r < m; ++r)
        std::memcpy(dst + r * e->out_features, yp + r * n, static_cast<size_t>(e->out_features) * 4);
    } else {
      exl3_matmul(e->view, xin, m, f32(y), pool_);
    }
    add_bias(e->bias, y);
  }

  void rope(DeviceTensor& x, int64_t head_dim, std::span<const int32_t> positions, const RopeParams& rope) override {
    const int64_t half = head_dim / 2, heads = x.cols() / head_dim;
    float* data = f32(x);
    pool_.parallel_for(positions.size(), 1, [&](size_t b, size_t e) {
      std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
      for (size_t r = b; r < e; ++r) {
        for (int64_t i = 0; i < half; ++i) {
          // fp32 angle, as the reference implementation computes position * inv_freq in fp32.
          const float angle = static_cast<float>(positions[r]) * rope.inv_freq[static_cast<size_t>(i)];
          cs[static_cast<size_t>(i)] = std::cos(angle) * rope.attention_scaling;
          sn[static_cast<size_t>(i)] = std::sin(angle) * rope.attention_scaling;
        }
        float* row = data + static_cast<int64_t>(r) * x.cols();
        for (int64_t h = 0; h < heads; ++h) {
          float* v = row + h * head_dim;
          for (int64_t i = 0; i < half; ++i) {
            const float x1 = v[i], x2 = v[i + half];
            v[i] = x1 * cs[static_cast<size_t>(i)] - x2 * sn[static_cast<size_t>(i)];
            v[i + half] = x2 * cs[static_cast<size_t>(i)] + x1 * sn[static_cast<size_t>(i)];
          }
        }
      }
    });
  }

  void kv_store(const DeviceTensor& k, const DeviceTensor& v, std::span<const int32_t> positions,
                DeviceTensor& k_cache, DeviceTensor& v_cache) override {
    const int64_t width = k.cols();
    for (size_t r = 0; r < positions.size(); ++r) {
      fp32_to_fp16(f32(k) + static_cast<int64_t>(r) * width, u16(k_cache) + positions[r] * width, static_cast<size_t>(width));
      fp32_to_fp16(f32(v) + static_cast<int64_t>(r) * width, u16(v_cache) + positions[r] * width, static_cast<size_t>(width));
    }
  }

  void attention(const DeviceTensor& q, const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                 std::span<const int32_t> positions, const AttentionParams& p, DeviceTensor& out) override {
    AttentionShape shape;
    shape.rows = static_cast<int64_t>(positions.size());
    shape.n_heads = p.n_heads;
    shape.n_kv_heads = p.n_kv_heads;
    shape.head_dim = p.head_dim;
    shape.scale = p.scale;
    shape.sliding_window = p.sliding_window;
    attention_f16_cache(f32(q), u16(k_cache), u16(v_cache), positions.data(), shape, f32(out), pool_);
  }

  void silu_mul(const DeviceTensor& gate, const DeviceTensor& up, DeviceTensor& out) override {
    const size_t n = static_cast<size_t>(shape_numel(gate.shape));
    const float* g = f32(gate);
    const float* u = f32(up);
    float* o = f32(out);
    pool_.parallel_for(n, 1 << 14, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    });
  }

  void add(DeviceTensor& x, const DeviceTensor& y) override {
    const size_t n = static_cast<size_t>(shape_numel(x.shape));
    float* a = f32(x);
    const float* b2 = f32(y);
    for (size_t i = 0; i < n; ++i) a[i] += b2[i];
  }

  void gram_accumulate(const DeviceTensor& x, DeviceTensor& acc, DeviceTensor& stats) override {
    const int64_t k = acc.rows();
    if (x.dtype != DType::kF32 || acc.dtype != DType::kF32 || stats.dtype != DType::kF32 || acc.cols() != k ||
        x.cols() > k || shape_numel(stats.shape) < 2)
      fail(ErrorKind::kInternal, "CPU gram_accumulate: bad shapes x {} acc {} stats {}", shape_to_string(x.shape),
           shape_to_string(acc.shape), shape_to_string(stats.shape));
    const GramCount c = cpu::gram_accumulate(f32(x), x.rows(), x.cols(), f32(acc), k, pool_);
    float* st = f32(stats);
    st[0] += static_cast<float>(c.added);
    st[1] += static_cast<float>(c.skipped);
  }

 private:
  void add_bias(const std::vector<float>& bias, DeviceTensor& y) {
    if (bias.empty()) return;
    float* d = f32(y);
    const int64_t n = static_cast<int64_t>(bias.size());
    for (int64_t r = 0; r < y.rows(); ++r)
      for (int64_t j = 0; j < n; ++j) d[r * n + j] += bias[static_cast<size_t>(j)];
  }

  ThreadPool pool_;
  DeviceInfo info_;
  AlignedFloats pad_in_, pad_out_;
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(size_t threads) { return std::make_unique<cpu::CpuBackend>(threads); }

}  // namespace trellis
