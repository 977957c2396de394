// quantize/pipeline.cpp: `trellis quantize` (spec 5.1), see include/trellis/quantize.h.
//
// Flow: open the source, allocate bits (5.11), build calibration rows (5.2), embed them; then
// per decoder block: run the unquantized block over every row capturing the inputs of its
// linears (Hessians, 5.3), quantize q/k/v (shared Hessian), o, gate/up (shared), down
// (5.4-5.10), checkpoint the block's tensors, and advance the calibration state through the
// *quantized* block; finally the head on the final-normed state. Forward passes use the CPU
// backend's ops, one calibration row (an independent sequence) at a time.
//
// Resume: the work directory holds job.json (the settings) and one safetensors file per
// finished module, each written atomically. A resumed run recomputes the calibration state by
// running the rows through the finished (quantized) blocks, so the state itself is never saved.
// Output: written into a hidden sibling directory and renamed into place at the end.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/registry.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/log.h"
#include "core/mmap_file.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "exl3/linear.h"
#include "exl3/tile.h"
#include "format/model_dir.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "model/rope.h"
#include "quantize/allocation.h"
#include "quantize/quantize_linear.h"
#include "runtime/tokenizer.h"
#include "trellis/quantize.h"

namespace fs = std::filesystem;

namespace trellis {
namespace {

constexpr size_t kRefRows = 5;  // calibration rows whose block outputs measure each block's error

using quant::FinalHessian;
using quant::HessianAccumulator;
using quant::QuantizedLinear;

// Wall time per pipeline stage, for the summary. `Scope` charges its lifetime to one stage; the
// encoder's calls are charged to their own stage and subtracted from the caller's.
class StageClock {
 public:
  enum Stage { kSetup, kCapture, kHessian, kQuantHost, kEncodeSearch, kEncodeLdlq, kCheck, kAdvance, kOutput, kCount };
  using clock = std::chrono::steady_clock;
  double& at(Stage s) { return t_[s]; }
  class Scope {
   public:
    Scope(StageClock& c, Stage s) : c_(c), s_(s), start_(clock::now()) {}
    ~Scope() { c_.t_[s_] += std::chrono::duration<double>(clock::now() - start_).count(); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    StageClock& c_;
    Stage s_;
    clock::time_point start_;
  };
  std::vector<std::pair<std::string, double>> report() const {
    static const char* names[kCount] = {"setup", "calibration forward + Hessians", "Hessian finalisation",
                                        "regularisation + LDLQ (host)", "tile encoder (scale search)",
                                        "tile encoder (LDLQ)", "reference check + checkpoint", "advance", "output"};
    std::vector<std::pair<std::string, double>> out;
    for (int i = 0; i < kCount; ++i) out.emplace_back(names[i], t_[i]);
    return out;
  }

 private:
  double t_[kCount] = {};
};

constexpr const char* kVersion = "1.4.1";  // the ExLlamaV3 format version our files follow
constexpr uint32_t kMcgValue = 0xCBAC1FEDu, kMul1Value = 0x83DCD12Du;

int64_t round_up_128(int64_t v) { return (v + 127) / 128 * 128; }

exl3::Codebook parse_codebook(const std::string& s) {
  if (s == "mul1") return exl3::Codebook::kMul1;
  if (s == "mcg") return exl3::Codebook::kMcg;
  if (s == "3inst") return exl3::Codebook::k3Inst;
  fail(ErrorKind::kInvalidArgument, "codebook '{}': expected mul1, mcg or 3inst", s);
}

// Source tensor as fp32, row-major as stored.
std::vector<float> load_f32(const TensorStore& store, const std::string& name) {
  if (!store.contains(name)) fail(ErrorKind::kFormat, "{}: missing tensor {}", store.dir(), name);
  const TensorView v = store.view(name);
  std::vector<float> out(static_cast<size_t>(v.numel()));
  const auto* u16 = reinterpret_cast<const uint16_t*>(v.data);
  switch (v.dtype) {
    case DType::kF16:
      for (size_t i = 0; i < out.size(); ++i) { uint16_t b; std::memcpy(&b, u16 + i, 2); out[i] = fp16_to_fp32(b); }
      break;
    case DType::kBF16:
      for (size_t i = 0; i < out.size(); ++i) { uint16_t b; std::memcpy(&b, u16 + i, 2); out[i] = bf16_to_fp32(b); }
      break;
    case DType::kF32: std::memcpy(out.data(), v.data, out.size() * 4); break;
    default:
      fail(ErrorKind::kUnsupported, "{}: tensor {} has dtype {}; supported: F16, BF16, F32", store.dir(), name,
           dtype_name(v.dtype));
  }
  for (size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i]))
      fail(ErrorKind::kFormat, "{}: tensor {} has a non-finite value at element {}", store.dir(), name, i);
  return out;
}

// The quantizer's input for an HF (out, in) weight: fp16-rounded (spec 5.14), transposed to
// k x n and zero-padded to multiples of 128.
std::vector<float> to_kn(const std::vector<float>& w, int64_t out, int64_t in, int64_t k, int64_t n) {
  std::vector<float> r(static_cast<size_t>(k * n), 0.0f);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) r[i * n + o] = fp16_to_fp32(fp32_to_fp16(w[o * in + i]));
  return r;
}

struct LinearSpec {
  std::string key;  // e.g. model.layers.0.self_attn.q_proj
  int64_t in = 0, out = 0;
  int K = 0;
};

struct BlockSpec {
  int index = 0;
  LinearSpec q, k, v, o, gate, up, down;
};

// A module's quantized tensors, keyed by tensor name.
struct ModuleTensors {
  std::map<std::string, std::vector<std::byte>> data;
  std::map<std::string, std::pair<DType, Shape>> meta;
  std::vector<std::string> order;
  void add(const std::string& name, DType dt, Shape shape, const void* bytes, size_t n) {
    data[name].assign(static_cast<const std::byte*>(bytes), static_cast<const std::byte*>(bytes) + n);
    meta[name] = {dt, std::move(shape)};
    order.push_back(name);
  }
  void add_linear(const std::string& key, const QuantizedLinear& q) {
    add(key + ".trellis", DType::kI16, {q.k / 16, q.n / 16, 16 * q.K}, q.trellis.data(), q.trellis.size() * 2);
    add(key + ".suh", DType::kF16, {q.k}, q.suh.data(), q.suh.size() * 2);
    add(key + ".svh", DType::kF16, {q.n}, q.svh.data(), q.svh.size() * 2);
    if (q.codebook == exl3::Codebook::kMcg) add(key + ".mcg", DType::kI32, {}, &kMcgValue, 4);
    if (q.codebook == exl3::Codebook::kMul1) add(key + ".mul1", DType::kI32, {}, &kMul1Value, 4);
  }
  void save(const std::string& path, const nlohmann::json& info) const {
    SafetensorsWriter w(path);
    w.set_metadata("trellis_module", info.dump());
    for (const auto& name : order) w.declare(name, meta.at(name).first, meta.at(name).second);
    w.begin_data();
    for (const auto& name : order) w.write(data.at(name));
    w.commit();
  }
  static ModuleTensors load(const std::string& path) {
    ModuleTensors m;
    auto f = SafetensorsFile::open(path);
    for (const TensorInfo& t : f->tensors()) {
      const TensorView v = f->view(t);
      m.add(t.name, t.dtype, t.shape, v.data, v.nbytes());
    }
    return m;
  }
  const std::vector<std::byte>& at(const std::string& name) const {
    auto it = data.find(name);
    if (it == data.end()) fail(ErrorKind::kFormat, "checkpoint lacks tensor {}", name);
    return it->second;
  }
  exl3::Exl3LinearView view(const std::string& key, const LinearSpec& s) const {
    exl3::Exl3LinearView v;
    v.k = round_up_128(s.in);
    v.n = round_up_128(s.out);
    const auto& t = at(key + ".trellis");
    v.K = static_cast<int>(meta.at(key + ".trellis").second.at(2) / 16);
    v.codebook = data.count(key + ".mcg") ? exl3::Codebook::kMcg
                 : data.count(key + ".mul1") ? exl3::Codebook::kMul1 : exl3::Codebook::k3Inst;
    v.trellis = t.data();
    v.suh = at(key + ".suh").data();
    v.svh = at(key + ".svh").data();
    return v;
  }
};

// A Hessian being accumulated on the backend (lower triangle of XᵀX, and row counts).
struct DeviceHessian {
  DeviceHessian(Backend& be, int64_t k)
      : k(k), acc(be.alloc(DType::kF32, {k, k})), stats(be.alloc(DType::kF32, {1, 2})) {}
  // Downloads it into a host accumulator.
  HessianAccumulator fetch(Backend& be) const {
    std::vector<float> lower(static_cast<size_t>(k * k)), st(2);
    be.download(acc, lower.data());
    be.download(stats, st.data());
    HessianAccumulator h(k);
    h.set_lower(lower.data(), static_cast<uint64_t>(st[0]), static_cast<uint64_t>(st[1]));
    return h;
  }
  int64_t k;
  DeviceTensor acc, stats;
};

// Runs calibration rows (backend tensors of cols x hidden fp32, one independent sequence each)
// through decoder blocks on a backend, optionally accumulating the Hessians of the four linear
// inputs on the way.
class BlockRunner {
 public:
  BlockRunner(const ModelConfig& c, Backend& be, int64_t cols) : c_(c), be_(be), cols_(cols) {
    rope_ = make_rope_params(c);
    attn_.n_heads = c.num_attention_heads;
    attn_.n_kv_heads = c.num_key_value_heads;
    attn_.head_dim = c.head_dim;
    attn_.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    if (c.raw.contains("sliding_window") && c.raw["sliding_window"].is_number_integer() &&
        c.raw.value("use_sliding_window", true))
      attn_.sliding_window = c.raw["sliding_window"].get<int64_t>();
    qw_ = c.num_attention_heads * c.head_dim;
    kvw_ = c.num_key_value_heads * c.head_dim;
    h_ = be.alloc(DType::kF32, {cols, c.hidden_size});
    a_ = be.alloc(DType::kF32, {cols, c.hidden_size});
    d_ = be.alloc(DType::kF32, {cols, c.hidden_size});
    q_ = be.alloc(DType::kF32, {cols, qw_});
    o_ = be.alloc(DType::kF32, {cols, qw_});
    k_ = be.alloc(DType::kF32, {cols, kvw_});
    v_ = be.alloc(DType::kF32, {cols, kvw_});
    g_ = be.alloc(DType::kF32, {cols, c.intermediate_size});
    u_ = be.alloc(DType::kF32, {cols, c.intermediate_size});
    kc_ = be.alloc(DType::kF16, {cols, kvw_});
    vc_ = be.alloc(DType::kF16, {cols, kvw_});
    positions_.resize(static_cast<size_t>(cols));
    for (int64_t i = 0; i < cols; ++i) positions_[i] = static_cast<int32_t>(i);
  }

  struct Weights {
    DeviceTensor attn_norm, mlp_norm, q_norm, k_norm;
    std::unique_ptr<LinearWeights> q, k, v, o, gate, up, down;
  };

  // Hessians of the attention input (q/k/v), o_proj input, MLP input (gate/up), down_proj input.
  struct Grams {
    DeviceHessian *attn, *o, *mlp, *down;
  };

  // One row through one block. In place (x becomes the block's output), or not (x is left as it
  // is and the output is returned in a scratch tensor, valid until the next call).
  const DeviceTensor& run(const Weights& w, DeviceTensor& x, bool in_place, const Grams* g) {
    const float eps = static_cast<float>(c_.rms_norm_eps);
    be_.rms_norm(x, w.attn_norm, eps, c_.hidden_size, h_);
    if (g) be_.gram_accumulate(h_, g->attn->acc, g->attn->stats);
    be_.linear(*w.q, h_, q_);
    be_.linear(*w.k, h_, k_);
    be_.linear(*w.v, h_, v_);
    if (w.q_norm.buffer) {
      be_.rms_norm(q_, w.q_norm, eps, c_.head_dim, q_);
      be_.rms_norm(k_, w.k_norm, eps, c_.head_dim, k_);
    }
    be_.rope(q_, c_.head_dim, positions_, rope_);
    be_.rope(k_, c_.head_dim, positions_, rope_);
    be_.kv_store(k_, v_, positions_, kc_, vc_);
    be_.attention(q_, kc_, vc_, positions_, attn_, o_);
    if (g) be_.gram_accumulate(o_, g->o->acc, g->o->stats);
    be_.linear(*w.o, o_, a_);
    // The residual stream: x itself, or a_ = attention + x (the same sums either way).
    DeviceTensor& r = in_place ? x : a_;
    if (in_place)
      be_.add(x, a_);
    else
      be_.add(a_, x);
    be_.rms_norm(r, w.mlp_norm, eps, c_.hidden_size, h_);
    if (g) be_.gram_accumulate(h_, g->mlp->acc, g->mlp->stats);
    be_.linear(*w.gate, h_, g_);
    be_.linear(*w.up, h_, u_);
    be_.silu_mul(g_, u_, g_);
    if (g) be_.gram_accumulate(g_, g->down->acc, g->down->stats);
    be_.linear(*w.down, g_, d_);
    be_.add(r, d_);
    return r;
  }

  // Final norm of a row, into the head's Hessian.
  void final_norm(const DeviceTensor& weight, const DeviceTensor& x, DeviceHessian& head) {
    be_.rms_norm(x, weight, static_cast<float>(c_.rms_norm_eps), c_.hidden_size, h_);
    be_.gram_accumulate(h_, head.acc, head.stats);
  }

  std::vector<float> download(const DeviceTensor& t) {
    std::vector<float> out(static_cast<size_t>(t.rows() * t.cols()));
    be_.download(t, out.data());
    return out;
  }

 private:
  const ModelConfig& c_;
  Backend& be_;
  int64_t cols_;
  RopeParams rope_;
  AttentionParams attn_;
  int64_t qw_ = 0, kvw_ = 0;
  DeviceTensor h_, a_, d_, q_, o_, k_, v_, g_, u_, kc_, vc_;
  std::vector<int32_t> positions_;
};

// Calibration rows (spec 5.2 in spirit): slices of the project's prose, code and multilingual
// text files, plus uniformly random token rows, with fixed seeds.
std::vector<std::vector<int32_t>> build_calibration(const Tokenizer& tok, int64_t vocab, int rows, int cols,
                                                    const std::string& dir, uint64_t seed) {
  std::vector<std::vector<int32_t>> out;
  const int random_rows = std::max(1, rows * 20 / 135);
  const int text_rows = std::max(0, rows - random_rows);
  const std::vector<std::pair<std::string, double>> sources = {
      {"prose.txt", 0.5}, {"code.txt", 0.3}, {"multilingual.txt", 0.2}};
  int assigned = 0;
  for (size_t si = 0; si < sources.size(); ++si) {
    const int want = si + 1 == sources.size() ? text_rows - assigned
                                              : static_cast<int>(std::lround(text_rows * sources[si].second));
    assigned += want;
    if (want <= 0) continue;
    const fs::path path = fs::path(dir) / sources[si].first;
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(ErrorKind::kIo, "{}: cannot read calibration text (set --cal-data)", path.string());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (seed != 0 && !text.empty()) {
      // Another calibration set: the text from a seed-dependent line onwards, wrapping around.
      size_t off = static_cast<size_t>((seed * 0x9E3779B97F4A7C15ull) % text.size());
      const size_t nl = text.find('\n', off);
      off = nl == std::string::npos ? 0 : nl + 1;
      std::rotate(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(off), text.end());
    }
    // Tokenize only what is needed (about 8 bytes per token is generous).
    const size_t need_bytes = static_cast<size_t>(want) * cols * 8;
    if (text.size() > need_bytes) text.resize(need_bytes);
    std::vector<int32_t> ids = tok.encode(text, false);
    if (ids.empty()) fail(ErrorKind::kFormat, "{}: no tokens", path.string());
    size_t pos = 0;
    for (int r = 0; r < want; ++r) {
      std::vector<int32_t> row(static_cast<size_t>(cols));
      for (auto& t : row) {
        t = ids[pos % ids.size()];
        ++pos;
      }
      for (auto& t : row) t = std::clamp<int32_t>(t, 0, static_cast<int32_t>(vocab - 1));
      out.push_back(std::move(row));
    }
  }
  std::mt19937_64 rng(seed);
  for (int r = 0; r < rows - text_rows; ++r) {
    std::vector<int32_t> row(static_cast<size_t>(cols));
    for (auto& t : row) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
    out.push_back(std::move(row));
  }
  return out;
}

std::string default_cal_dir() {
#ifdef TRELLIS_DATA_DIR
  return std::string(TRELLIS_DATA_DIR) + "/calibration";
#else
  return "data/calibration";
#endif
}

// Removes a directory on scope exit unless released.
class DirGuard {
 public:
  explicit DirGuard(fs::path p) : p_(std::move(p)) {}
  ~DirGuard() {
    if (!p_.empty()) {
      std::error_code ec;
      fs::remove_all(p_, ec);
    }
  }
  void release() { p_.clear(); }

 private:
  fs::path p_;
};

void write_text_atomic(const fs::path& path, const std::string& text) {
  AtomicFileWriter w(path.string());
  w.write(text.data(), text.size());
  w.commit();
}

}  // namespace

QuantizeSummary quantize_model(const QuantizeJob& job) {
  const auto t_start = std::chrono::steady_clock::now();
  const exl3::Codebook cb = parse_codebook(job.codebook);
  const quant::OutScales out_scales = quant::parse_out_scales(job.out_scales);
  if (!(job.bits >= 1.0 && job.bits <= 8.0))
    fail(ErrorKind::kInvalidArgument, "--bits {}: expected a number from 1 to 8", job.bits);
  if (!((job.head_bits >= 1 && job.head_bits <= 8) || job.head_bits == 16))
    fail(ErrorKind::kInvalidArgument, "--head-bits {}: expected 1..8 or 16", job.head_bits);
  if (job.cal_rows < 1 || job.cal_cols < 16)
    fail(ErrorKind::kInvalidArgument, "calibration size {} x {}: need at least 1 row of 16 tokens", job.cal_rows,
         job.cal_cols);
  if (job.output_dir.empty()) fail(ErrorKind::kInvalidArgument, "no output directory given");
  const fs::path out_path = fs::absolute(job.output_dir).lexically_normal();
  if (fs::exists(out_path))
    fail(ErrorKind::kInvalidArgument, "{}: output directory already exists; choose another or remove it",
         out_path.string());

  auto dir = ModelDir::open(job.input_dir);
  if (dir->is_exl3())
    fail(ErrorKind::kUnsupported, "{}: the model is already EXL3; quantize takes an unquantized Hugging Face model",
         job.input_dir);
  const ModelConfig& c = dir->config();
  const std::string arch = c.architectures.empty() ? c.model_type : c.architectures.front();
  const auto& archs = Model::supported_architectures();
  if (std::find(archs.begin(), archs.end(), arch) == archs.end()) {
    std::string list;
    for (const auto& a : archs) list += (list.empty() ? "" : ", ") + a;
    fail(ErrorKind::kUnsupported, "{}: architecture '{}' is not supported by quantize (supported: {})", c.path, arch,
         list);
  }
  if (c.hidden_act != "silu")
    fail(ErrorKind::kUnsupported, "{}: hidden_act '{}' is not supported (only silu)", c.path, c.hidden_act);
  const TensorStore& store = dir->tensors();
  auto tokenizer = Tokenizer::load(job.input_dir);

  // Work directory and resume.
  const fs::path work = job.work_dir.empty() ? fs::path(out_path.string() + ".work") : fs::absolute(job.work_dir);
  nlohmann::json settings = {{"input", fs::absolute(job.input_dir).lexically_normal().string()},
                             {"bits", job.bits},
                             {"head_bits", job.head_bits},
                             {"codebook", job.codebook},
                             {"out_scales", job.out_scales},
                             {"cal_rows", job.cal_rows},
                             {"cal_cols", job.cal_cols},
                             {"seed", job.seed}};
  if (fs::exists(work / "job.json")) {
    if (!job.resume)
      fail(ErrorKind::kInvalidArgument,
           "{}: a work directory from an earlier run exists; add --resume to continue it, or remove it",
           work.string());
    std::ifstream in(work / "job.json");
    nlohmann::json old = nlohmann::json::parse(in, nullptr, false);
    if (old.is_discarded()) fail(ErrorKind::kFormat, "{}: job.json is corrupt; remove the work directory", work.string());
    for (auto& [key, value] : settings.items())
      if (!old.contains(key) || old[key] != value)
        fail(ErrorKind::kInvalidArgument,
             "cannot resume {}: setting '{}' was {} and is now {}; use the same settings or remove the work directory",
             work.string(), key, old.contains(key) ? old[key].dump() : "unset", value.dump());
    log_info("resuming from {}", work.string());
  } else {
    std::error_code ec;
    fs::create_directories(work, ec);
    if (ec) fail(ErrorKind::kIo, "{}: cannot create work directory: {}", work.string(), ec.message());
    write_text_atomic(work / "job.json", settings.dump(2) + "\n");
  }

  // Plan: linears and bits.
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t qw = c.num_attention_heads * c.head_dim, kvw = c.num_key_value_heads * c.head_dim;
  std::vector<BlockSpec> blocks(static_cast<size_t>(c.num_hidden_layers));
  std::vector<quant::AllocTensor> alloc;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    BlockSpec& b = blocks[static_cast<size_t>(i)];
    b.index = static_cast<int>(i);
    const std::string p = fmt::format("model.layers.{}.", i);
    b.q = {p + "self_attn.q_proj", H, qw};
    b.k = {p + "self_attn.k_proj", H, kvw};
    b.v = {p + "self_attn.v_proj", H, kvw};
    b.o = {p + "self_attn.o_proj", qw, H};
    b.gate = {p + "mlp.gate_proj", H, I};
    b.up = {p + "mlp.up_proj", H, I};
    b.down = {p + "mlp.down_proj", I, H};
    const int g = static_cast<int>(i) * 4;
    auto add = [&](const LinearSpec& s, int group, int prio) {
      alloc.push_back({s.key, round_up_128(s.in) * round_up_128(s.out), group, prio, static_cast<int>(i), 0});
    };
    add(b.q, g, 2); add(b.k, g, 2); add(b.v, g, 2);
    add(b.o, g + 1, 2);
    add(b.gate, g + 2, 1); add(b.up, g + 2, 1);
    add(b.down, g + 3, 1);
  }
  const double recorded_bits = quant::allocate_bits(alloc, job.bits, static_cast<int>(c.num_hidden_layers));
  {
    size_t a = 0;
    for (BlockSpec& b : blocks)
      for (LinearSpec* s : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) s->K = alloc[a++].K;
  }
  const bool has_head = store.contains("lm_head.weight");
  const std::string head_source = has_head ? "lm_head.weight" : "model.embed_tokens.weight";

  ThreadPool pool(job.threads);
  // One device runs the calibration forward passes, the Hessians and the tile encoder; LDLQ and
  // the rest of the per-tensor work run on the CPU threads.
  // "auto" is the first CUDA GPU or the CPU here: the tile encoder has no Vulkan version.
  auto backend = make_backend(job.device == "auto" ? resolve_auto_device(false) : job.device, job.threads);
  const std::string device = device_id(backend->info());
  const TileEncodeFn encode_fn = make_tile_encoder(device, pool);
  StageClock clock;
  // Runs quantize_linears, charging the host part to its stage and the encoder to its own.
  auto quantize_timed = [&](auto&& fn) {
    const double enc0 = clock.at(StageClock::kEncodeSearch) + clock.at(StageClock::kEncodeLdlq);
    const auto t0 = StageClock::clock::now();
    auto res = fn();
    const double enc1 = clock.at(StageClock::kEncodeSearch) + clock.at(StageClock::kEncodeLdlq);
    clock.at(StageClock::kQuantHost) +=
        std::chrono::duration<double>(StageClock::clock::now() - t0).count() - (enc1 - enc0);
    return res;
  };
  // tiles_encoded: in the current module; tiles_run: by this process (not counting resumed work).
  uint64_t tiles_encoded = 0, tiles_total = 0, tiles_before = 0, tiles_run = 0;
  for (const quant::AllocTensor& t : alloc) tiles_total += static_cast<uint64_t>(t.numel / 256);
  if (job.head_bits != 16) tiles_total += static_cast<uint64_t>(round_up_128(H) * round_up_128(c.vocab_size) / 256);
  std::string stage;
  ProgressBar bar("quantize", tiles_total, "tiles");
  quant::TileEncodeFn encode = [&](const uint16_t* x, size_t n, int K, exl3::Codebook cbk, uint16_t* st,
                                   uint16_t* dec, bool estimate) {
    StageClock::Scope timed(clock, estimate ? StageClock::kEncodeSearch : StageClock::kEncodeLdlq);
    encode_fn(x, n, K, cbk, st, dec, estimate);
    if (!estimate) {
      tiles_encoded += n;
      tiles_run += n;
      bar.update(tiles_before + tiles_encoded, stage);
    }
  };

  // Calibration state.
  log_info("quantize {} -> {}: {} bits ({} recorded), head {}, codebook {}, out-scales {}, calibration {} x {}, "
           "device {} ({})",
           job.input_dir, out_path.string(), job.bits, recorded_bits, job.head_bits, job.codebook, job.out_scales,
           job.cal_rows, job.cal_cols, device, backend->info().name);
  const auto cal = build_calibration(*tokenizer, c.vocab_size, job.cal_rows, job.cal_cols,
                                     job.cal_data_dir.empty() ? default_cal_dir() : job.cal_data_dir, job.seed);
  const int64_t cols = job.cal_cols;
  const std::vector<float> embed = load_f32(store, "model.embed_tokens.weight");
  // The calibration state lives on the device: rows x cols x hidden fp32.
  std::vector<DeviceTensor> state(cal.size());
  {
    std::vector<float> row(static_cast<size_t>(cols * H));
    for (size_t r = 0; r < cal.size(); ++r) {
      for (int64_t t = 0; t < cols; ++t)
        for (int64_t j = 0; j < H; ++j)
          row[t * H + j] = fp16_to_fp32(fp32_to_fp16(embed[static_cast<size_t>(cal[r][t]) * H + j]));
      state[r] = backend->upload(TensorView{DType::kF32, {cols, H}, reinterpret_cast<const std::byte*>(row.data())},
                                 DType::kF32);
    }
  }
  BlockRunner runner(c, *backend, cols);
  const bool qk_norm = arch == "Qwen3ForCausalLM";

  auto vec = [&](const std::string& name, int64_t len) {
    std::vector<float> v = load_f32(store, name);
    if (static_cast<int64_t>(v.size()) != len)
      fail(ErrorKind::kFormat, "{}: tensor {} has {} elements, expected {}", store.dir(), name, v.size(), len);
    return backend->upload(TensorView{DType::kF32, {len}, reinterpret_cast<const std::byte*>(v.data())}, DType::kF32);
  };
  auto dense = [&](const LinearSpec& s, std::vector<float>& keep) {
    keep = load_f32(store, s.key + ".weight");
    if (static_cast<int64_t>(keep.size()) != s.in * s.out)
      fail(ErrorKind::kFormat, "{}: tensor {}.weight has {} elements, expected {} x {}", store.dir(), s.key,
           keep.size(), s.out, s.in);
    LinearSource src;
    src.name = s.key;
    src.in_features = s.in;
    src.out_features = s.out;
    src.dense = TensorView{DType::kF32, {s.out, s.in}, reinterpret_cast<const std::byte*>(keep.data())};
    return backend->prepare_linear(src);
  };
  auto quantized = [&](const ModuleTensors& m, const LinearSpec& s) {
    LinearSource src;
    src.name = s.key;
    src.in_features = s.in;
    src.out_features = s.out;
    src.exl3 = m.view(s.key, s);
    return backend->prepare_linear(src);
  };
  auto norms = [&](BlockRunner::Weights& w, const BlockSpec& b) {
    const std::string p = fmt::format("model.layers.{}.", b.index);
    w.attn_norm = vec(p + "input_layernorm.weight", H);
    w.mlp_norm = vec(p + "post_attention_layernorm.weight", H);
    if (qk_norm) {
      w.q_norm = vec(p + "self_attn.q_norm.weight", c.head_dim);
      w.k_norm = vec(p + "self_attn.k_norm.weight", c.head_dim);
    }
  };
  auto advance = [&](const BlockRunner::Weights& w) {
    for (DeviceTensor& x : state) runner.run(w, x, true, nullptr);
    // Backends may defer launches; they use the weights of `w`, which die with the caller's scope.
    backend->synchronize();
  };
  // Tokens whose activations went non-finite are left out of every Hessian (rows skipped by
  // gram_accumulate); too many of them means the model or its quantization diverged.
  auto check_finite = [&](const HessianAccumulator& h, const std::string& where) {
    if (h.skipped() == 0) return;
    log_warn("{}: {} of {} calibration tokens are non-finite and were left out", where, h.skipped(),
             h.skipped() + h.count());
    if (h.skipped() * 10 > h.skipped() + h.count())
      fail(ErrorKind::kInternal, "{}: more than 10% of the calibration tokens are non-finite ({} of {}); aborting",
           where, h.skipped(), h.skipped() + h.count());
  };
  auto tiles_of = [](const LinearSpec& s) {
    return static_cast<uint64_t>(round_up_128(s.in) * round_up_128(s.out) / 256);
  };

  nlohmann::json report = nlohmann::json::object();
  clock.at(StageClock::kSetup) = std::chrono::duration<double>(StageClock::clock::now() - t_start).count();
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    const BlockSpec& b = blocks[bi];
    const fs::path ckpt = work / fmt::format("layer-{:05}.safetensors", b.index);
    ModuleTensors qt;
    uint64_t block_tiles = 0;
    for (const LinearSpec* s : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) block_tiles += tiles_of(*s);
    if (fs::exists(ckpt)) {
      qt = ModuleTensors::load(ckpt.string());
    } else {
      // 1. Capture with the unquantized block.
      BlockRunner::Weights src;
      norms(src, b);
      std::vector<float> wq, wk, wv, wo, wg, wu, wd;
      src.q = dense(b.q, wq); src.k = dense(b.k, wk); src.v = dense(b.v, wv); src.o = dense(b.o, wo);
      src.gate = dense(b.gate, wg); src.up = dense(b.up, wu); src.down = dense(b.down, wd);
      std::vector<std::vector<float>> ref_out;
      HessianAccumulator h_attn(0), h_o(0), h_mlp(0), h_down(0);
      {
        StageClock::Scope timed(clock, StageClock::kCapture);
        DeviceHessian d_attn(*backend, round_up_128(H)), d_o(*backend, round_up_128(qw)),
            d_mlp(*backend, round_up_128(H)), d_down(*backend, round_up_128(I));
        const BlockRunner::Grams grams{&d_attn, &d_o, &d_mlp, &d_down};
        for (size_t r = 0; r < state.size(); ++r) {
          const DeviceTensor& y = runner.run(src, state[r], false, &grams);
          if (ref_out.size() < kRefRows) ref_out.push_back(runner.download(y));
          if (r % 8 == 7 || r + 1 == state.size()) {
            stage = fmt::format("layer {}: capture {}/{}", b.index, r + 1, state.size());
            bar.update(tiles_before, stage);
          }
        }
        h_attn = d_attn.fetch(*backend);
        h_o = d_o.fetch(*backend);
        h_mlp = d_mlp.fetch(*backend);
        h_down = d_down.fetch(*backend);
      }
      check_finite(h_attn, fmt::format("layer {} attention input", b.index));
      check_finite(h_o, fmt::format("layer {} o_proj input", b.index));
      check_finite(h_mlp, fmt::format("layer {} MLP input", b.index));
      check_finite(h_down, fmt::format("layer {} down_proj input", b.index));
      // 2. Quantize.
      // Sign-vector seeds: per layer and group; --seed moves all of them (0 keeps the default set).
      const uint64_t seed = static_cast<uint64_t>(b.index) + 1 + job.seed * 0x9E3779B97F4A7C15ull;
      auto run_group = [&](const HessianAccumulator& acc, uint64_t hseed,
                           std::vector<std::pair<const LinearSpec*, const std::vector<float>*>> members) {
        FinalHessian fh;
        {
          StageClock::Scope timed(clock, StageClock::kHessian);
          fh = quant::finalize_hessian(acc, hseed, pool);
        }
        // Tensors of one group share K here (q/k/v and gate/up are allocated together).
        const int64_t k = round_up_128(members[0].first->in);
        std::vector<int64_t> widths;
        int64_t n = 0;
        for (auto& m : members) {
          widths.push_back(round_up_128(m.first->out));
          n += widths.back();
        }
        std::vector<float> w(static_cast<size_t>(k * n), 0.0f);
        int64_t col0 = 0;
        for (size_t t = 0; t < members.size(); ++t) {
          const auto kn = to_kn(*members[t].second, members[t].first->out, members[t].first->in, k, widths[t]);
          for (int64_t i = 0; i < k; ++i)
            std::copy(&kn[i * widths[t]], &kn[i * widths[t]] + widths[t], &w[i * n + col0]);
          col0 += widths[t];
        }
        stage = fmt::format("layer {}: {}", b.index, members[0].first->key.substr(members[0].first->key.rfind('.') + 1));
        quant::QuantizeOptions qo;
        qo.K = members[0].first->K;
        qo.codebook = cb;
        qo.out_scales = out_scales;
        qo.seed = hseed;
        auto res = quantize_timed([&] { return quant::quantize_linears(std::move(w), k, widths, fh, qo, encode, pool); });
        for (size_t t = 0; t < members.size(); ++t) {
          qt.add_linear(members[t].first->key, res[t]);
          report[members[t].first->key] = {{"K", res[t].K}, {"proxy_error", res[t].proxy_error},
                                           {"global_scale", res[t].global_scale}};
        }
      };
      run_group(h_attn, seed * 16 + 0, {{&b.q, &wq}, {&b.k, &wk}, {&b.v, &wv}});
      run_group(h_o, seed * 16 + 1, {{&b.o, &wo}});
      run_group(h_mlp, seed * 16 + 2, {{&b.gate, &wg}, {&b.up, &wu}});
      run_group(h_down, seed * 16 + 3, {{&b.down, &wd}});
      // 3. Reference error of the quantized block on the first rows.
      BlockRunner::Weights qw_;
      norms(qw_, b);
      qw_.q = quantized(qt, b.q); qw_.k = quantized(qt, b.k); qw_.v = quantized(qt, b.v); qw_.o = quantized(qt, b.o);
      qw_.gate = quantized(qt, b.gate); qw_.up = quantized(qt, b.up); qw_.down = quantized(qt, b.down);
      double num = 0, den = 0;
      StageClock::Scope check_timed(clock, StageClock::kCheck);
      for (size_t ri = 0; ri < ref_out.size(); ++ri) {
        const std::vector<float> x = runner.download(runner.run(qw_, state[ri], false, nullptr));
        for (size_t j = 0; j < x.size(); ++j) {
          if (!std::isfinite(ref_out[ri][j])) continue;
          num += std::pow(static_cast<double>(x[j]) - ref_out[ri][j], 2);
          den += std::pow(static_cast<double>(ref_out[ri][j]), 2);
        }
      }
      const double rel = den > 0 ? std::sqrt(num / den) : 0.0;
      double worst = 0;
      for (const LinearSpec* s : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down})
        worst = std::max(worst, report[s->key]["proxy_error"].get<double>());
      log_info("layer {}: output rel. error {:.5f}, worst proxy error {:.6f}", b.index, rel, worst);
      nlohmann::json info = {{"rel_error", rel}};
      for (const LinearSpec* s : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) info[s->key] = report[s->key];
      qt.save(ckpt.string(), info);
    }
    // 4. Advance the state through the quantized block.
    BlockRunner::Weights qw_;
    norms(qw_, b);
    qw_.q = quantized(qt, b.q); qw_.k = quantized(qt, b.k); qw_.v = quantized(qt, b.v); qw_.o = quantized(qt, b.o);
    qw_.gate = quantized(qt, b.gate); qw_.up = quantized(qt, b.up); qw_.down = quantized(qt, b.down);
    stage = fmt::format("layer {}: advance", b.index);
    bar.update(tiles_before + tiles_encoded, stage);
    {
      StageClock::Scope timed(clock, StageClock::kAdvance);
      advance(qw_);
    }
    tiles_before += block_tiles;
    tiles_encoded = 0;
  }

  // Head.
  const LinearSpec head{"lm_head", H, c.vocab_size, job.head_bits};
  const fs::path head_ckpt = work / "head.safetensors";
  if (job.head_bits != 16 && !fs::exists(head_ckpt)) {
    stage = "lm_head";
    const DeviceTensor fnorm = vec("model.norm.weight", H);
    HessianAccumulator h_head(0);
    {
      StageClock::Scope timed(clock, StageClock::kCapture);
      DeviceHessian d_head(*backend, round_up_128(H));
      for (DeviceTensor& x : state) runner.final_norm(fnorm, x, d_head);
      h_head = d_head.fetch(*backend);
    }
    check_finite(h_head, "lm_head");
    const std::vector<float> wh = load_f32(store, head_source);
    if (static_cast<int64_t>(wh.size()) != H * c.vocab_size)
      fail(ErrorKind::kFormat, "{}: {} has {} elements, expected {} x {}", store.dir(), head_source, wh.size(),
           c.vocab_size, H);
    const int64_t k = round_up_128(H), n = round_up_128(c.vocab_size);
    FinalHessian fh;
    {
      StageClock::Scope timed(clock, StageClock::kHessian);
      fh = quant::finalize_hessian(h_head, 0xEAD + job.seed * 0x9E3779B97F4A7C15ull, pool);
    }
    quant::QuantizeOptions qo;
    qo.K = job.head_bits;
    qo.codebook = cb;
    qo.out_scales = out_scales;
    qo.seed = 0xEAD + job.seed * 0x9E3779B97F4A7C15ull;
    auto res = quantize_timed(
        [&] { return quant::quantize_linears(to_kn(wh, c.vocab_size, H, k, n), k, {n}, fh, qo, encode, pool); });
    ModuleTensors ht;
    ht.add_linear("lm_head", res[0]);
    report["lm_head"] = {{"K", res[0].K}, {"proxy_error", res[0].proxy_error}};
    log_info("lm_head: proxy error {:.6f}", res[0].proxy_error);
    ht.save(head_ckpt.string(), report["lm_head"]);
  }
  bar.update(tiles_total, "writing output");
  const auto t_output = StageClock::clock::now();

  // Compile the output directory.
  const fs::path parent = out_path.has_parent_path() ? out_path.parent_path() : fs::path(".");
  const fs::path tmp = parent / fmt::format(".{}.partial-{}", out_path.filename().string(), ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) || ec)
    fail(ErrorKind::kIo, "{}: cannot create output directory: {}", tmp.string(), ec.message());
  DirGuard guard(tmp);
  // Every file of the output is written through `staged`: a failed write (full disk, quota) is
  // reported under the file's name in the finished output, since the staging directory is
  // removed (by `guard`) as the error propagates.
  auto staged = [&](const std::function<void()>& write) {
    try {
      write();
    } catch (const Error& e) {
      std::string msg = e.what();
      const std::string from = tmp.string(), to = out_path.string();
      for (size_t at = msg.find(from); at != std::string::npos; at = msg.find(from, at + to.size()))
        msg.replace(at, from.size(), to);
      fail(e.kind(), "{} (the output was not written; nothing of it is left)", msg);
    }
  };

  // All tensors in module order: embedding, blocks (norms + linears), final norm, head.
  struct OutT {
    std::string name;
    DType dtype;
    Shape shape;
    std::vector<std::byte> bytes;
  };
  std::vector<OutT> tensors;
  auto copy_src = [&](const std::string& name) {
    const TensorView v = store.view(name);
    OutT t{name, v.dtype, v.shape, {}};
    if (v.dtype == DType::kF32) {  // fp32 is stored as fp16 (spec 2.13)
      std::vector<float> f = load_f32(store, name);
      t.dtype = DType::kF16;
      t.bytes.resize(f.size() * 2);
      for (size_t i = 0; i < f.size(); ++i) {
        const uint16_t h = fp32_to_fp16(f[i]);
        std::memcpy(&t.bytes[i * 2], &h, 2);
      }
    } else {
      t.bytes.assign(v.data, v.data + v.nbytes());
    }
    tensors.push_back(std::move(t));
  };
  auto copy_module = [&](const ModuleTensors& m) {
    for (const auto& name : m.order) tensors.push_back({name, m.meta.at(name).first, m.meta.at(name).second, m.data.at(name)});
  };
  copy_src("model.embed_tokens.weight");
  for (const BlockSpec& b : blocks) {
    const std::string p = fmt::format("model.layers.{}.", b.index);
    copy_src(p + "input_layernorm.weight");
    copy_src(p + "post_attention_layernorm.weight");
    if (qk_norm) {
      copy_src(p + "self_attn.q_norm.weight");
      copy_src(p + "self_attn.k_norm.weight");
    }
    const ModuleTensors m = ModuleTensors::load((work / fmt::format("layer-{:05}.safetensors", b.index)).string());
    copy_module(m);
    for (const LinearSpec* s : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down})
      if (store.contains(s->key + ".bias")) {
        std::vector<float> bias = load_f32(store, s->key + ".bias");
        bias.resize(static_cast<size_t>(round_up_128(s->out)), 0.0f);
        OutT t{s->key + ".bias", DType::kF16, {round_up_128(s->out)}, std::vector<std::byte>(bias.size() * 2)};
        for (size_t i = 0; i < bias.size(); ++i) {
          const uint16_t h = fp32_to_fp16(bias[i]);
          std::memcpy(&t.bytes[i * 2], &h, 2);
        }
        tensors.push_back(std::move(t));
      }
  }
  copy_src("model.norm.weight");
  if (job.head_bits == 16) {
    if (has_head) copy_src("lm_head.weight");
  } else {
    copy_module(ModuleTensors::load(head_ckpt.string()));
  }

  // Shards (a module is never split: tensors go in order, a new shard starts between tensors).
  std::vector<std::vector<const OutT*>> shards(1);
  uint64_t shard_size = 0, total = 0;
  for (const OutT& t : tensors) {
    if (shard_size > 0 && shard_size + t.bytes.size() > job.shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shards.back().push_back(&t);
    shard_size += t.bytes.size();
    total += t.bytes.size();
  }
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1 ? "model.safetensors"
                                                : fmt::format("model-{:05}-of-{:05}.safetensors", s + 1, shards.size());
    staged([&] {
      SafetensorsWriter w((tmp / file).string());
      for (const OutT* t : shards[s]) w.declare(t->name, t->dtype, t->shape);
      w.begin_data();
      for (const OutT* t : shards[s]) {
        w.write(t->bytes);
        weight_map[t->name] = file;
      }
      w.commit();
    });
  }
  if (shards.size() > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = weight_map;
    staged([&] { write_text_atomic(tmp / "model.safetensors.index.json", index.dump(2) + "\n"); });
  }

  // config.json and quantization_config.json (spec 2.14).
  nlohmann::ordered_json qc;
  qc["quant_method"] = "exl3";
  qc["version"] = kVersion;
  qc["bits"] = recorded_bits;
  qc["head_bits"] = job.head_bits;
  qc["calibration"] = {{"rows", job.cal_rows}, {"cols", job.cal_cols}};
  qc["out_scales"] = job.out_scales;
  qc["codebook"] = job.codebook;
  nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(c.raw.dump());
  if (cfg.contains("quantization_config")) cfg["original_quantization_config"] = cfg["quantization_config"];
  cfg["quantization_config"] = qc;
  staged([&] { write_text_atomic(tmp / "config.json", cfg.dump(2) + "\n"); });
  nlohmann::ordered_json qfile = qc;
  nlohmann::ordered_json storage = nlohmann::ordered_json::object();
  auto torch_name = [](DType d) {
    switch (d) {
      case DType::kF16: return "torch.float16";
      case DType::kBF16: return "torch.bfloat16";
      case DType::kI16: return "torch.int16";
      case DType::kI32: return "torch.int32";
      default: return "torch.float32";
    }
  };
  for (const OutT& t : tensors) {
    const size_t dot = t.name.rfind('.');
    const std::string module = t.name.substr(0, dot);
    storage[module]["stored_tensors"][t.name] = {{"shape", t.shape}, {"n_bytes", t.bytes.size()}, {"dtype", torch_name(t.dtype)}};
    if (t.name.ends_with(".trellis")) {
      storage[module]["quant_format"] = "exl3";
      storage[module]["bits_per_weight"] = t.shape.at(2) / 16;
      if (cb == exl3::Codebook::kMcg) storage[module]["mcg_multiplier"] = kMcgValue;
      if (cb == exl3::Codebook::kMul1) storage[module]["mul1_multiplier"] = kMul1Value;
    }
  }
  qfile["tensor_storage"] = storage;
  staged([&] { write_text_atomic(tmp / "quantization_config.json", qfile.dump(4) + "\n"); });
  for (const std::string& f : dir->aux_files()) {
    if (f == "quantization_config.json" || f.ends_with(".bin") || f.ends_with(".pt") || f.ends_with(".pth") ||
        f.ends_with(".ckpt"))
      continue;
    fs::copy_file(fs::path(job.input_dir) / f, tmp / f, fs::copy_options::overwrite_existing, ec);
    if (ec) fail(ErrorKind::kIo, "{}: cannot copy {}: {}", out_path.string(), f, ec.message());
  }
  if (fs::exists(out_path))
    fail(ErrorKind::kIo, "{}: appeared while quantizing; the result is left in {}", out_path.string(), tmp.string());
  fs::rename(tmp, out_path, ec);
  if (ec) fail(ErrorKind::kIo, "{}: cannot move finished output into place: {}", out_path.string(), ec.message());
  guard.release();
  bar.finish();
  fs::remove_all(work, ec);

  QuantizeSummary sum;
  sum.bits = recorded_bits;
  sum.output_bytes = total;
  sum.tiles = tiles_run;
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  clock.at(StageClock::kOutput) = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_output).count();
  sum.stages = clock.report();
  return sum;
}

}  // namespace trellis
