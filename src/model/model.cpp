#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "convert/linear_shapes.h"
#include "core/error.h"
#include "core/log.h"
#include "model/rope.h"

namespace trellis {

struct Model::Layer {
  DeviceTensor attn_norm, mlp_norm, q_norm, k_norm;
  std::unique_ptr<LinearWeights> q, k, v, o, gate, up, down;
  DeviceTensor k_cache, v_cache;
};

Model::Model(Backend& backend) : backend_(backend) {}
Model::~Model() = default;

const std::vector<std::string>& Model::supported_architectures() {
  static const std::vector<std::string> kArchs = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                                  "Qwen3ForCausalLM"};
  return kArchs;
}

std::unique_ptr<Model> Model::load(const std::string& dir, Backend& backend, const ModelOptions& options) {
  std::unique_ptr<Model> m(new Model(backend));
  m->dir_ = ModelDir::open(dir);
  m->config_ = m->dir_->config();
  const auto& archs = supported_architectures();
  const std::string arch = m->config_.architectures.empty() ? "" : m->config_.architectures.front();
  if (std::find(archs.begin(), archs.end(), arch) == archs.end()) {
    std::string list;
    for (const auto& a : archs) list += (list.empty() ? "" : ", ") + a;
    fail(ErrorKind::kUnsupported, "{}: architecture '{}' is not supported (supported: {})", m->config_.path,
         arch.empty() ? m->config_.model_type : arch, list);
  }
  m->load_weights(options);
  return m;
}

DeviceTensor Model::load_vector(const std::string& name, int64_t length) {
  const TensorStore& store = dir_->tensors();
  if (!store.contains(name)) fail(ErrorKind::kFormat, "{}: missing tensor {}", dir_->dir(), name);
  const TensorView v = store.view(name);
  if (v.numel() != length)
    fail(ErrorKind::kFormat, "{}: tensor {} has shape {}, expected [{}]", dir_->dir(), name, shape_to_string(v.shape),
         length);
  return backend_.upload(v, DType::kF32);
}

std::unique_ptr<LinearWeights> Model::load_linear(const std::string& key, int64_t in, int64_t out, bool required) {
  LinearSource src;
  src.name = key;
  src.in_features = in;
  src.out_features = out;
  const TensorStore& store = dir_->tensors();
  if (const Exl3Layer* layer = dir_->find_exl3_layer(key)) {
    if (layer->k != round_up_128(in) || layer->n != round_up_128(out))
      fail(ErrorKind::kFormat, "{}: EXL3 layer {} is {}x{} (padded in x out), expected {}x{} for a {}x{} linear",
           dir_->dir(), key, layer->k, layer->n, round_up_128(in), round_up_128(out), in, out);
    scratch_.emplace_back();
    src.exl3 = dir_->exl3_view(*layer, scratch_.back());
    if (layer->has_bias) src.bias = store.view(key + ".bias");
  } else if (store.contains(key + ".weight")) {
    const TensorView w = store.view(key + ".weight");
    if (w.shape != Shape{out, in})
      fail(ErrorKind::kFormat, "{}: tensor {}.weight has shape {}, expected [{}, {}]", dir_->dir(), key,
           shape_to_string(w.shape), out, in);
    if (w.dtype != DType::kF16 && w.dtype != DType::kBF16 && w.dtype != DType::kF32)
      fail(ErrorKind::kUnsupported, "{}: tensor {}.weight has dtype {}; supported: F16, BF16, F32", dir_->dir(), key,
           dtype_name(w.dtype));
    src.dense = w;
    if (store.contains(key + ".bias")) {
      src.bias = store.view(key + ".bias");
      if (src.bias->numel() != out)
        fail(ErrorKind::kFormat, "{}: tensor {}.bias has shape {}, expected [{}]", dir_->dir(), key,
             shape_to_string(src.bias->shape), out);
    }
  } else {
    if (!required) return nullptr;
    fail(ErrorKind::kFormat, "{}: missing weights for linear layer {} (neither EXL3 tensors nor {}.weight)",
         dir_->dir(), key, key);
  }
  return backend_.prepare_linear(src);
}

namespace {

// Rows of logits computed per head call when every row's logits are wanted (perplexity): bounds
// the logits buffer independently of the prefill chunk (a 128K vocabulary costs 0.5 MiB a row).
constexpr int64_t kLogitsRows = 512;

std::string human_bytes(uint64_t b) {
  const double mib = static_cast<double>(b) / (1 << 20);
  return mib >= 1024 ? fmt::format("{:.2f} GiB", mib / 1024) : fmt::format("{:.0f} MiB", mib);
}

// Device bytes the model will take before anything is uploaded (issue: plan memory up front and
// say clearly when the model does not fit). Weights: every tensor as the backends store it (2-D
// floats as fp16, vectors as fp32, EXL3 and other integer tensors as stored), less the embedding
// when it stays on the host; KV cache: fp16 K and V per layer and position; buffers: the
// activations of one chunk plus the EXL3 prefill scratch (at most the 64 MiB Ŵ slice and the
// hi/lo activations and partial sums of the widest linear) and a margin for allocator slack.
struct MemoryPlan {
  uint64_t weights = 0, kv_per_token = 0, buffers = 0;
  uint64_t total(int64_t ctx) const { return weights + kv_per_token * static_cast<uint64_t>(ctx) + buffers; }
};

MemoryPlan plan_memory(const ModelConfig& c, const TensorStore& store, int64_t max_batch, bool embed_on_host,
                       bool tied_head) {
  MemoryPlan p;
  for (const std::string& name : store.names()) {
    const bool embedding = name == "model.embed_tokens.weight";
    if (embed_on_host && embedding) continue;
    const TensorView v = store.view(name);
    const bool floating = v.dtype == DType::kF32 || v.dtype == DType::kF16 || v.dtype == DType::kBF16;
    const uint64_t bytes = floating ? static_cast<uint64_t>(v.numel()) * (v.shape.size() == 1 ? 4 : 2) : v.nbytes();
    p.weights += embedding && tied_head ? 2 * bytes : bytes;  // a tied head holds its own copy
  }
  const auto kv_width = static_cast<uint64_t>(c.num_key_value_heads * c.head_dim);
  p.kv_per_token = static_cast<uint64_t>(c.num_hidden_layers) * 2 * kv_width * 2;
  const auto b = static_cast<uint64_t>(max_batch);
  const auto lb = static_cast<uint64_t>(std::min(max_batch, kLogitsRows));  // head rows per call
  const auto q_width = static_cast<uint64_t>(c.num_attention_heads * c.head_dim);
  const auto hidden = static_cast<uint64_t>(c.hidden_size), inter = static_cast<uint64_t>(c.intermediate_size);
  const auto vocab = static_cast<uint64_t>(c.vocab_size);
  const uint64_t widest = std::max({hidden, inter, q_width});
  p.buffers = b * (3 * hidden + 2 * q_width + 2 * kv_width + 2 * inter) * 4 + lb * vocab * 4 +
              b * (std::max(hidden, inter) + 2 * widest) * 4 + lb * (hidden + 2 * vocab) * 4 + (uint64_t{64} << 20);
  p.buffers += (p.weights + p.buffers) / 50 + (uint64_t{64} << 20);  // 2% + 64 MiB of slack
  return p;
}

// TRELLIS_MEMORY_LIMIT_MIB caps what a model may plan to use (to leave room for other programs,
// and for tests); otherwise the device's free memory when the backend reports it (GPUs).
uint64_t memory_budget(const DeviceInfo& info) {
  if (const char* env = std::getenv("TRELLIS_MEMORY_LIMIT_MIB"); env && *env) {
    char* end = nullptr;
    const unsigned long long mib = std::strtoull(env, &end, 10);
    if (end && *end == '\0' && mib > 0) return static_cast<uint64_t>(mib) << 20;
    log_warn("ignoring TRELLIS_MEMORY_LIMIT_MIB='{}' (expected a positive number of MiB)", env);
  }
  return info.backend == "cpu" ? 0 : info.free_bytes;
}

}  // namespace

void Model::load_weights(const ModelOptions& options) {
  const ModelConfig& c = config_;
  if (c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.num_key_value_heads <= 0 || c.head_dim <= 0 ||
      c.num_attention_heads % c.num_key_value_heads != 0 || c.head_dim % 2 != 0 || c.intermediate_size <= 0)
    fail(ErrorKind::kFormat, "{}: inconsistent attention shape (hidden {}, heads {}, kv heads {}, head_dim {})", c.path,
         c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
  if (c.hidden_act != "silu")
    fail(ErrorKind::kUnsupported, "{}: hidden_act '{}' is not supported (only silu)", c.path, c.hidden_act);
  const int64_t max_pos = c.max_position_embeddings > 0 ? c.max_position_embeddings : 8192;
  max_context_ = options.max_context > 0 ? std::min(options.max_context, max_pos) : std::min<int64_t>(max_pos, 8192);
  if (options.max_context > max_pos)
    log_warn("{}: a context of {} tokens was asked for; the model's max_position_embeddings is {}, so the KV cache "
             "holds {}",
             c.path, options.max_context, max_pos, max_context_);
  const int64_t batch = options.max_batch > 0 ? options.max_batch : backend_.preferred_batch();
  max_batch_ = std::max<int64_t>(1, std::min(batch, max_context_));
  rope_ = make_rope_params(c);
  bool stored_head = false;  // a stored lm_head (EXL3 or dense) wins over tying (spec 2.13)
  for (const std::string& name : dir_->tensors().names()) stored_head = stored_head || name.rfind("lm_head.", 0) == 0;
  embed_on_host_ = stored_head && backend_.host_embedding();
  {
    const MemoryPlan plan = plan_memory(c, dir_->tensors(), max_batch_, embed_on_host_, !stored_head);
    const uint64_t budget = memory_budget(backend_.info());
    const uint64_t need = plan.total(max_context_);
    const uint64_t kv = plan.kv_per_token * static_cast<uint64_t>(max_context_);
    const std::string breakdown = fmt::format("weights {}, KV cache {} for a context of {} tokens, buffers {}",
                                              human_bytes(plan.weights), human_bytes(kv), max_context_,
                                              human_bytes(plan.buffers));
    log_info("{}: planned device memory {} ({})", dir_->dir(), human_bytes(need), breakdown);
    if (budget > 0 && need > budget) {
      const uint64_t fixed = plan.weights + plan.buffers;
      const int64_t fit = fixed < budget ? static_cast<int64_t>((budget - fixed) / plan.kv_per_token) : 0;
      std::string hint;
      if (fit >= 256)
        hint = fmt::format("a context of up to {} tokens would fit (--ctx {})", fit, fit / 256 * 256);
      else if (plan.buffers > plan.weights)  // a smaller quantization would not help
        hint = "even a short context does not fit, and the activation buffers are the larger part: free memory on the "
               "device or use another device";
      else
        hint = "even a short context does not fit: use a smaller quantization or another device";
      fail(ErrorKind::kOutOfMemory, "{}: the model needs about {} on {} ({}; {}) but only {} {}; {}", dir_->dir(),
           human_bytes(need), backend_.info().name, backend_.info().backend, breakdown, human_bytes(budget),
           std::getenv("TRELLIS_MEMORY_LIMIT_MIB") ? "are allowed (TRELLIS_MEMORY_LIMIT_MIB)" : "are free", hint);
    }
  }
  attn_.n_heads = c.num_attention_heads;
  attn_.n_kv_heads = c.num_key_value_heads;
  attn_.head_dim = c.head_dim;
  attn_.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  if (c.raw.contains("sliding_window") && c.raw["sliding_window"].is_number_integer() &&
      c.raw.value("use_sliding_window", true))
    attn_.sliding_window = c.raw["sliding_window"].get<int64_t>();

  const TensorStore& store = dir_->tensors();
  if (!store.contains("model.embed_tokens.weight"))
    fail(ErrorKind::kFormat, "{}: missing tensor model.embed_tokens.weight", dir_->dir());
  const TensorView embed = store.view("model.embed_tokens.weight");
  if (embed.shape != Shape{c.vocab_size, c.hidden_size})
    fail(ErrorKind::kFormat, "{}: model.embed_tokens.weight has shape {}, expected [{}, {}] (vocab_size, hidden_size)",
         dir_->dir(), shape_to_string(embed.shape), c.vocab_size, c.hidden_size);
  final_norm_ = load_vector("model.norm.weight", c.hidden_size);

  const int64_t q_width = c.num_attention_heads * c.head_dim, kv_width = c.num_key_value_heads * c.head_dim;
  const bool qk_norm = c.architectures.front() == "Qwen3ForCausalLM";
  layers_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer& l = layers_[static_cast<size_t>(i)];
    const std::string p = fmt::format("model.layers.{}.", i);
    l.attn_norm = load_vector(p + "input_layernorm.weight", c.hidden_size);
    l.mlp_norm = load_vector(p + "post_attention_layernorm.weight", c.hidden_size);
    if (qk_norm) {
      l.q_norm = load_vector(p + "self_attn.q_norm.weight", c.head_dim);
      l.k_norm = load_vector(p + "self_attn.k_norm.weight", c.head_dim);
    }
    l.q = load_linear(p + "self_attn.q_proj", c.hidden_size, q_width);
    l.k = load_linear(p + "self_attn.k_proj", c.hidden_size, kv_width);
    l.v = load_linear(p + "self_attn.v_proj", c.hidden_size, kv_width);
    l.o = load_linear(p + "self_attn.o_proj", q_width, c.hidden_size);
    l.gate = load_linear(p + "mlp.gate_proj", c.hidden_size, c.intermediate_size);
    l.up = load_linear(p + "mlp.up_proj", c.hidden_size, c.intermediate_size);
    l.down = load_linear(p + "mlp.down_proj", c.intermediate_size, c.hidden_size);
    l.k_cache = backend_.alloc(DType::kF16, {max_context_, kv_width});
    l.v_cache = backend_.alloc(DType::kF16, {max_context_, kv_width});
  }
  head_ = load_linear("lm_head", c.hidden_size, c.vocab_size, /*required=*/false);
  if (!head_) {
    if (!c.tie_word_embeddings)
      fail(ErrorKind::kFormat, "{}: no lm_head tensors and tie_word_embeddings is false", dir_->dir());
    LinearSource src;
    src.name = "lm_head (tied to model.embed_tokens)";
    src.in_features = c.hidden_size;
    src.out_features = c.vocab_size;
    src.dense = embed;
    head_ = backend_.prepare_linear(src);
  }
  if (embed_on_host_)
    embed_host_ = embed;
  else
    embed_ = backend_.upload(embed, DType::kF16);
  for (const std::string& name : store.names())
    if (dir_->kind_of(name) == TensorKind::kUnknown) log_warn("{}: ignoring tensor {}", dir_->dir(), name);

  const int64_t b = max_batch_;
  x_ = backend_.alloc(DType::kF32, {b, c.hidden_size});
  h_ = backend_.alloc(DType::kF32, {b, c.hidden_size});
  tmp_ = backend_.alloc(DType::kF32, {b, c.hidden_size});
  q_ = backend_.alloc(DType::kF32, {b, q_width});
  o_ = backend_.alloc(DType::kF32, {b, q_width});
  k_ = backend_.alloc(DType::kF32, {b, kv_width});
  v_ = backend_.alloc(DType::kF32, {b, kv_width});
  gate_ = backend_.alloc(DType::kF32, {b, c.intermediate_size});
  up_ = backend_.alloc(DType::kF32, {b, c.intermediate_size});
  logits_ = backend_.alloc(DType::kF32, {std::min(b, kLogitsRows), c.vocab_size});
}

void Model::forward(std::span<const int32_t> tokens, int64_t start, bool all_logits, std::vector<float>& logits) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) fail(ErrorKind::kInvalidArgument, "forward: no tokens");
  if (start < 0 || start + n > max_context_)
    fail(ErrorKind::kInvalidArgument, "forward: positions {}..{} exceed the context of {} tokens", start, start + n - 1,
         max_context_);
  for (int32_t t : tokens)
    if (t < 0 || t >= config_.vocab_size)
      fail(ErrorKind::kInvalidArgument, "forward: token id {} is outside the vocabulary (0..{})", t,
           config_.vocab_size - 1);
  const int64_t vocab = config_.vocab_size;
  logits.resize(static_cast<size_t>((all_logits ? n : 1) * vocab));
  for (int64_t done = 0; done < n; done += max_batch_) {
    const int64_t rows = std::min(max_batch_, n - done);
    const bool last_chunk = done + rows == n;
    float* out = all_logits ? logits.data() + done * vocab : (last_chunk ? logits.data() : nullptr);
    forward_chunk(tokens.subspan(static_cast<size_t>(done), static_cast<size_t>(rows)), start + done, all_logits, out);
  }
}

void Model::forward_chunk(std::span<const int32_t> tokens, int64_t start, bool all_logits, float* logits) {
  const int64_t rows = static_cast<int64_t>(tokens.size());
  std::vector<int32_t> positions(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) positions[static_cast<size_t>(r)] = static_cast<int32_t>(start + r);
  const float eps = static_cast<float>(config_.rms_norm_eps);
  DeviceTensor x = x_.first_rows(rows), h = h_.first_rows(rows), tmp = tmp_.first_rows(rows);
  DeviceTensor q = q_.first_rows(rows), k = k_.first_rows(rows), v = v_.first_rows(rows), o = o_.first_rows(rows);
  DeviceTensor gate = gate_.first_rows(rows), up = up_.first_rows(rows);
  Backend& be = backend_;
  if (embed_on_host_)
    be.embedding_host(embed_host_, tokens, x);
  else
    be.embedding(embed_, tokens, x);
  for (size_t li = 0; li < layers_.size(); ++li) {
    Layer& l = layers_[li];
    be.rms_norm(x, l.attn_norm, eps, config_.hidden_size, h);
    {
      const LinearWeights* w[3] = {l.q.get(), l.k.get(), l.v.get()};
      DeviceTensor* y[3] = {&q, &k, &v};
      be.linears(w, h, y);
    }
    if (l.q_norm.buffer) {
      be.rms_norm(q, l.q_norm, eps, config_.head_dim, q);
      be.rms_norm(k, l.k_norm, eps, config_.head_dim, k);
    }
    be.rope(q, config_.head_dim, positions, rope_);
    be.rope(k, config_.head_dim, positions, rope_);
    be.kv_store(k, v, positions, l.k_cache, l.v_cache);
    be.attention(q, l.k_cache, l.v_cache, positions, attn_, o);
    // The device starts on the first layers while the host still calls the rest (a backend that
    // records ops would otherwise idle for the whole time the host takes to call a step's ops):
    // after layer 0's attention, then after layer 3's. No backend fuses across this cut.
    if (li == 0 || li == 3) be.submit();
    be.linear(*l.o, o, tmp);
    be.add(x, tmp);
    be.rms_norm(x, l.mlp_norm, eps, config_.hidden_size, h);
    be.mlp(*l.gate, *l.up, *l.down, h, gate, up, tmp);
    be.add(x, tmp);
  }
  if (!logits) return;
  if (all_logits) {
    // The head in slices of at most kLogitsRows rows: the logits buffer (rows x vocab) need not
    // grow with the prefill chunk.
    be.rms_norm(x, final_norm_, eps, config_.hidden_size, h);
    for (int64_t r0 = 0; r0 < rows; r0 += kLogitsRows) {
      const int64_t n = std::min(kLogitsRows, rows - r0);
      DeviceTensor hs = h.first_rows(n);
      hs.offset += static_cast<size_t>(r0 * config_.hidden_size) * dtype_size(hs.dtype);
      DeviceTensor out = logits_.first_rows(n);
      be.linear(*head_, hs, out);
      be.download(out, logits + r0 * config_.vocab_size);
    }
  } else {
    // Only the last row's logits are needed: norm and project that row alone.
    DeviceTensor last = x_;
    last.offset += static_cast<size_t>((rows - 1) * config_.hidden_size) * dtype_size(last.dtype);
    last.shape[0] = 1;
    DeviceTensor hl = h_.first_rows(1), out = logits_.first_rows(1);
    be.rms_norm(last, final_norm_, eps, config_.hidden_size, hl);
    be.linear(*head_, hl, out);
    be.download(out, logits);
  }
}

}  // namespace trellis
