// format/model_dir.cpp: open a model directory, classify its tensors, validate EXL3 layers.
//
// Classification follows ExLlamaV3's own rule (spec 2.3, 8.2): a module key P is an EXL3 layer
// when P.trellis, (P.suh or P.su) and (P.svh or P.sv) all exist; its mcg/mul1/bias tensors
// belong to it. EXL3-suffixed tensors of an incomplete group are kUnknown (with a warning):
// ExLlamaV3 would not load them as EXL3 and nothing else can use them. All other tensors are
// kDense. Validation then applies spec 8.2's checks plus the extra ones it recommends.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>

#include "core/error.h"
#include "core/fp16.h"
#include "core/log.h"
#include "format/format_util.h"
#include "format/model_dir.h"

namespace trellis {

namespace {

namespace fs = std::filesystem;
using format_detail::safe_quote;

constexpr uint16_t kFp16PlusOne = 0x3C00, kFp16MinusOne = 0xBC00;

struct Suffix {
  const char* name;
  TensorKind kind;
};
constexpr Suffix kExl3Suffixes[] = {
    {"trellis", TensorKind::kExl3Trellis}, {"suh", TensorKind::kExl3Suh}, {"svh", TensorKind::kExl3Svh},
    {"su", TensorKind::kExl3Su},           {"sv", TensorKind::kExl3Sv},   {"mcg", TensorKind::kExl3Mcg},
    {"mul1", TensorKind::kExl3Mul1},
};

// The EXL3 parts present for one module key.
struct Group {
  std::map<TensorKind, std::string> parts;  // kind -> full tensor name
  bool has(TensorKind k) const { return parts.count(k) != 0; }
  bool complete() const {
    return has(TensorKind::kExl3Trellis) && (has(TensorKind::kExl3Suh) || has(TensorKind::kExl3Su)) &&
           (has(TensorKind::kExl3Svh) || has(TensorKind::kExl3Sv));
  }
};

int32_t read_i32(const TensorView& v) {
  int32_t x;
  std::memcpy(&x, v.data, 4);
  return x;
}

// Checks one EXL3 group and fills the layer description (spec 8.2 and its "robust port" list).
Exl3Layer validate_layer(const std::string& dir, const std::string& key, const Group& g, const TensorStore& store) {
  Exl3Layer layer;
  layer.key = key;
  auto where = [&](TensorKind k) {
    const std::string& name = g.parts.at(k);
    return fmt::format("{}/{}: tensor {}", dir, store.file_of(name), safe_quote(name));
  };
  auto info = [&](TensorKind k) -> const TensorInfo& { return store.info(g.parts.at(k)); };

  const TensorInfo& tr = info(TensorKind::kExl3Trellis);
  if (tr.dtype != DType::kI16 || tr.shape.size() != 3)
    fail(ErrorKind::kFormat, "{}: {} {}, expected I16 of rank 3 [k/16, n/16, 16*K]", where(TensorKind::kExl3Trellis),
         dtype_name(tr.dtype), shape_to_string(tr.shape));
  if (tr.shape[2] % 16 != 0 || tr.shape[2] < 16 || tr.shape[2] > 128)
    fail(ErrorKind::kFormat, "{}: last dim {} must be 16*K with 1 <= K <= 8 (16..128, a multiple of 16)",
         where(TensorKind::kExl3Trellis), tr.shape[2]);
  layer.K = static_cast<int>(tr.shape[2] / 16);
  if (tr.shape[0] <= 0 || tr.shape[1] <= 0 || tr.shape[0] > (INT64_MAX / 16) || tr.shape[1] > (INT64_MAX / 16))
    fail(ErrorKind::kFormat, "{}: shape {} has an empty or oversized tile grid", where(TensorKind::kExl3Trellis),
         shape_to_string(tr.shape));
  layer.k = 16 * tr.shape[0];
  layer.n = 16 * tr.shape[1];
  if (layer.k % 128 != 0 || layer.n % 128 != 0)
    fail(ErrorKind::kFormat, "{}: shape {} gives k = {}, n = {}; both must be multiples of 128 (spec 2.4)",
         where(TensorKind::kExl3Trellis), shape_to_string(tr.shape), layer.k, layer.n);

  auto check_vector = [&](TensorKind kind, TensorKind legacy, int64_t len, const char* side) {
    if (g.has(kind) && g.has(legacy))
      fail(ErrorKind::kFormat, "{}: both {} and legacy {} are present (ambiguous)", where(kind),
           safe_quote(g.parts.at(kind)), safe_quote(g.parts.at(legacy)));
    if (g.has(kind)) {
      const TensorInfo& t = info(kind);
      if (t.dtype != DType::kF16 || t.shape != Shape{len})
        fail(ErrorKind::kFormat, "{}: {} {}, expected F16 [{}] ({} = {} from the trellis shape {})", where(kind),
             dtype_name(t.dtype), shape_to_string(t.shape), len, side, len, shape_to_string(tr.shape));
    } else {
      const TensorInfo& t = info(legacy);
      if (t.dtype != DType::kI16 || t.shape != Shape{len / 16})
        fail(ErrorKind::kFormat, "{}: {} {}, expected I16 [{}] (packed signs of {} = {})", where(legacy),
             dtype_name(t.dtype), shape_to_string(t.shape), len / 16, side, len);
      layer.legacy_signs = true;
    }
  };
  check_vector(TensorKind::kExl3Suh, TensorKind::kExl3Su, layer.k, "k");
  check_vector(TensorKind::kExl3Svh, TensorKind::kExl3Sv, layer.n, "n");

  const bool mcg = g.has(TensorKind::kExl3Mcg), mul1 = g.has(TensorKind::kExl3Mul1);
  if (mcg && mul1)
    fail(ErrorKind::kFormat, "{}/{}: layer {} has both .mcg and .mul1 (at most one codebook tensor is allowed)", dir,
         store.file_of(g.parts.at(TensorKind::kExl3Mcg)), safe_quote(key));
  if (mcg || mul1) {
    const TensorKind kind = mcg ? TensorKind::kExl3Mcg : TensorKind::kExl3Mul1;
    const TensorInfo& t = info(kind);
    if (t.dtype != DType::kI32 || !t.shape.empty())
      fail(ErrorKind::kFormat, "{}: {} {}, expected an I32 scalar (shape [])", where(kind), dtype_name(t.dtype),
           shape_to_string(t.shape));
    const uint32_t expected = mcg ? exl3::kMcgMultiplier : exl3::kMul1Multiplier;
    const auto value = static_cast<uint32_t>(read_i32(store.view(g.parts.at(kind))));
    if (value != expected)
      log_warn("{}: multiplier {:#010x} differs from the locked value {:#010x}; the file comes from ExLlamaV3's "
               "experimental period (0.0.2-0.0.7) and will be decoded with the locked value, as ExLlamaV3 does",
               where(kind), value, expected);
    layer.codebook = mcg ? exl3::Codebook::kMcg : exl3::Codebook::kMul1;
  }

  const std::string bias_name = key + ".bias";
  if (store.contains(bias_name)) {
    const TensorInfo& t = store.info(bias_name);
    const bool dtype_ok = t.dtype == DType::kF16 || t.dtype == DType::kF32 || t.dtype == DType::kBF16;
    if (!dtype_ok || t.shape != Shape{layer.n})
      fail(ErrorKind::kFormat, "{}/{}: tensor {}: {} {}, expected F16 (or F32/BF16) [{}]", dir,
           store.file_of(bias_name), safe_quote(bias_name), dtype_name(t.dtype), shape_to_string(t.shape), layer.n);
    layer.has_bias = true;
  }
  for (const char* stray : {".scale", ".weight"}) {
    const std::string name = key + stray;
    if (store.contains(name))
      fail(ErrorKind::kFormat, "{}/{}: tensor {} next to the EXL3 layer {} ({}; spec 2.3)", dir, store.file_of(name),
           safe_quote(name), safe_quote(key),
           std::string(stray) == ".scale" ? "'scale' is no longer used and must be absent"
                                          : "a layer must be either EXL3 or dense, not both");
  }
  return layer;
}

// Expands legacy packed signs (spec 2.11): element 16w+b is -1 if bit b of word w is set.
void expand_signs(const TensorView& packed, int64_t len, uint16_t* out) {
  for (int64_t w = 0; w < len / 16; ++w) {
    uint16_t word;
    std::memcpy(&word, packed.data + 2 * w, 2);
    for (int b = 0; b < 16; ++b) out[16 * w + b] = (word >> b) & 1 ? kFp16MinusOne : kFp16PlusOne;
  }
}

std::vector<std::string> list_aux_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code ec2;
    if (!it->is_regular_file(ec2)) continue;
    if (name == "config.json" || name.starts_with(".")) continue;
    if (name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json")) continue;
    out.push_back(name);
  }
  if (ec) fail(ErrorKind::kIo, "{}: cannot list directory: {}", dir, ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

const char* tensor_kind_name(TensorKind kind) {
  switch (kind) {
    case TensorKind::kExl3Trellis: return "exl3_trellis";
    case TensorKind::kExl3Suh: return "exl3_suh";
    case TensorKind::kExl3Svh: return "exl3_svh";
    case TensorKind::kExl3Su: return "exl3_su";
    case TensorKind::kExl3Sv: return "exl3_sv";
    case TensorKind::kExl3Mcg: return "exl3_mcg";
    case TensorKind::kExl3Mul1: return "exl3_mul1";
    case TensorKind::kExl3Bias: return "exl3_bias";
    case TensorKind::kDense: return "dense";
    case TensorKind::kUnknown: return "unknown";
  }
  return "?";
}

std::unique_ptr<ModelDir> ModelDir::open(const std::string& dir) {
  auto m = std::unique_ptr<ModelDir>(new ModelDir());
  m->dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(ErrorKind::kIo, "{}: not a directory", dir);
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::is_regular_file(config_path, ec))
    fail(ErrorKind::kFormat, "{}: no config.json (expected a Hugging Face / ExLlamaV3 model directory)", dir);
  m->config_ = load_model_config(config_path);
  m->store_ = TensorStore::open_dir(dir);
  m->aux_files_ = list_aux_files(dir);

  std::map<std::string, Group> groups;
  for (const auto& name : m->store_->names()) {
    m->kinds_[name] = TensorKind::kDense;
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos || dot == 0) continue;
    const std::string suffix = name.substr(dot + 1);
    for (const auto& s : kExl3Suffixes)
      if (suffix == s.name) groups[name.substr(0, dot)].parts[s.kind] = name;
  }
  for (const auto& [key, g] : groups) {
    if (!g.complete()) {
      for (const auto& [kind, name] : g.parts) {
        m->kinds_[name] = TensorKind::kUnknown;
        log_warn("{}/{}: tensor {} looks like part of an EXL3 layer, but {} lacks {}; ignoring it", dir,
                 m->store_->file_of(name), safe_quote(name), safe_quote(key),
                 !g.has(TensorKind::kExl3Trellis) ? "'.trellis'"
                 : !(g.has(TensorKind::kExl3Suh) || g.has(TensorKind::kExl3Su)) ? "'.suh'"
                                                                                 : "'.svh'");
      }
      continue;
    }
    const Exl3Layer layer = validate_layer(dir, key, g, *m->store_);
    for (const auto& [kind, name] : g.parts) m->kinds_[name] = kind;
    if (layer.has_bias) m->kinds_[key + ".bias"] = TensorKind::kExl3Bias;
    m->layers_.push_back(layer);
  }
  return m;
}

TensorKind ModelDir::kind_of(const std::string& tensor_name) const {
  const auto it = kinds_.find(tensor_name);
  if (it == kinds_.end()) fail(ErrorKind::kInvalidArgument, "{}: no tensor named {}", dir_, safe_quote(tensor_name));
  return it->second;
}

const Exl3Layer* ModelDir::find_exl3_layer(const std::string& key) const {
  // layers_ is sorted by key (built from a std::map).
  const auto it = std::lower_bound(layers_.begin(), layers_.end(), key,
                                   [](const Exl3Layer& l, const std::string& k) { return l.key < k; });
  return it != layers_.end() && it->key == key ? &*it : nullptr;
}

exl3::Exl3LinearView ModelDir::exl3_view(const Exl3Layer& layer, std::vector<uint16_t>& scratch) const {
  if (find_exl3_layer(layer.key) == nullptr)
    fail(ErrorKind::kInvalidArgument, "{}: no EXL3 layer {}", dir_, safe_quote(layer.key));
  const Exl3Layer& l = *find_exl3_layer(layer.key);  // trust our own record, not the caller's copy
  const std::string& key = l.key;
  exl3::Exl3LinearView v;
  v.k = l.k;
  v.n = l.n;
  v.K = l.K;
  v.codebook = l.codebook;
  v.trellis = store_->view(key + ".trellis").data;

  TensorView bias;
  if (l.has_bias) bias = store_->view(key + ".bias");
  const bool convert_bias = l.has_bias && bias.dtype != DType::kF16;
  const bool legacy_u = !store_->contains(key + ".suh"), legacy_v = !store_->contains(key + ".svh");
  // One resize up front: pointers into `scratch` stay valid.
  const size_t need = (legacy_u ? l.k : 0) + (legacy_v ? l.n : 0) + (convert_bias ? l.n : 0);
  if (scratch.size() < need) scratch.resize(need);
  uint16_t* next = scratch.data();

  if (legacy_u) {
    expand_signs(store_->view(key + ".su"), l.k, next);
    v.suh = next;
    next += l.k;
  } else {
    v.suh = store_->view(key + ".suh").data;
  }
  if (legacy_v) {
    expand_signs(store_->view(key + ".sv"), l.n, next);
    v.svh = next;
    next += l.n;
  } else {
    v.svh = store_->view(key + ".svh").data;
  }
  if (convert_bias) {
    for (int64_t i = 0; i < l.n; ++i) {
      if (bias.dtype == DType::kF32) {
        float x;
        std::memcpy(&x, bias.data + 4 * i, 4);
        next[i] = fp32_to_fp16(x);
      } else {  // BF16 -> fp32 is exact, then one rounding to fp16
        uint16_t b;
        std::memcpy(&b, bias.data + 2 * i, 2);
        next[i] = fp32_to_fp16(bf16_to_fp32(b));
      }
    }
    v.bias = next;
  } else if (l.has_bias) {
    v.bias = bias.data;
  }
  return v;
}

}  // namespace trellis
