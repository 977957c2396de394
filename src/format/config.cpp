// format/config.cpp: config.json (Llama family) and its EXL3 quantization_config (spec 2.14).
//
// Every field is read through one typed getter that says, on a wrong type, which file and which
// field and what was expected. A JSON null counts as absent (transformers writes nulls for
// unset optional values such as "pad_token_id": null).
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/mmap_file.h"
#include "format/config.h"
#include "format/format_util.h"

namespace trellis {

namespace {

using format_detail::json_type_name;
using format_detail::safe_quote;
using nlohmann::json;

constexpr int kMaxConfigDepth = 64;
// Generous bound for every size-like field, so later products (hidden * vocab, ...) cannot
// overflow int64.
constexpr int64_t kMaxDim = int64_t{1} << 30;

// Typed access to one JSON object, with the dotted path of that object for messages.
class Fields {
 public:
  Fields(const json& obj, const std::string& file, std::string prefix)
      : obj_(obj), file_(file), prefix_(std::move(prefix)) {}

  const json* get(const char* key) const {
    const auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  std::string name(const char* key) const { return prefix_ + key; }

  [[noreturn]] void wrong(const char* key, const json& v, const char* expected) const {
    fail(ErrorKind::kFormat, "{}: field '{}' is {} {}, expected {}", file_, name(key), json_type_name(v),
         safe_quote(v.dump(), 60), expected);
  }

  std::optional<int64_t> integer(const char* key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (v->is_number_integer() && !v->is_number_unsigned()) return v->get<int64_t>();
    if (v->is_number_unsigned() && v->get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX))
      return static_cast<int64_t>(v->get<uint64_t>());
    wrong(key, *v, "an integer");
  }
  // An integer in [lo, hi].
  std::optional<int64_t> integer_in(const char* key, int64_t lo, int64_t hi) const {
    const auto v = integer(key);
    if (v && (*v < lo || *v > hi))
      fail(ErrorKind::kFormat, "{}: field '{}' = {} is out of range (expected {}..{})", file_, name(key), *v, lo, hi);
    return v;
  }
  std::optional<double> number(const char* key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) wrong(key, *v, "a number");
    const double d = v->get<double>();
    if (!std::isfinite(d)) wrong(key, *v, "a finite number");
    return d;
  }
  std::optional<double> positive(const char* key) const {
    const auto v = number(key);
    if (v && !(*v > 0))
      fail(ErrorKind::kFormat, "{}: field '{}' = {} must be positive", file_, name(key), *v);
    return v;
  }
  std::optional<bool> boolean(const char* key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) wrong(key, *v, "true or false");
    return v->get<bool>();
  }
  std::optional<std::string> string(const char* key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong(key, *v, "a string");
    return v->get<std::string>();
  }
  const json* object(const char* key) const {
    const json* v = get(key);
    if (v && !v->is_object()) wrong(key, *v, "an object");
    return v;
  }
  const std::string& file() const { return file_; }

 private:
  const json& obj_;
  const std::string& file_;
  std::string prefix_;
};

// rope_scaling (legacy) or rope_parameters (transformers 5): both hold the type and the
// type's parameters; rope_parameters also holds rope_theta.
RopeScaling parse_rope(const Fields& f, double max_positions) {
  RopeScaling r;
  const auto type = f.string("rope_type");
  const auto legacy_type = f.string("type");
  if (type && legacy_type && *type != *legacy_type)
    fail(ErrorKind::kFormat, "{}: fields '{}' = {} and '{}' = {} disagree", f.file(), f.name("rope_type"),
         safe_quote(*type), f.name("type"), safe_quote(*legacy_type));
  if (type) r.type = *type;
  else if (legacy_type) r.type = *legacy_type;
  if (r.type.empty()) fail(ErrorKind::kFormat, "{}: field '{}' is empty", f.file(), f.name("rope_type"));

  r.factor = f.positive("factor").value_or(1.0);
  const bool needs_factor = r.type == "linear" || r.type == "dynamic" || r.type == "llama3" || r.type == "yarn";
  if (needs_factor && !f.get("factor"))
    fail(ErrorKind::kFormat, "{}: field '{}' is missing (required for rope type {})", f.file(), f.name("factor"),
         safe_quote(r.type));
  r.low_freq_factor = f.positive("low_freq_factor").value_or(r.low_freq_factor);
  r.high_freq_factor = f.positive("high_freq_factor").value_or(r.high_freq_factor);
  r.original_max_position_embeddings = f.integer_in("original_max_position_embeddings", 1, kMaxDim).value_or(0);
  if (r.type == "llama3") {
    for (const char* key : {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!f.get(key))
        fail(ErrorKind::kFormat, "{}: field '{}' is missing (required for rope type 'llama3')", f.file(), f.name(key));
    if (!(r.high_freq_factor > r.low_freq_factor))
      fail(ErrorKind::kFormat, "{}: '{}' ({}) must be larger than '{}' ({})", f.file(), f.name("high_freq_factor"),
           r.high_freq_factor, f.name("low_freq_factor"), r.low_freq_factor);
  }
  if (r.type == "yarn" && r.original_max_position_embeddings == 0 && max_positions > 0)
    r.original_max_position_embeddings = static_cast<int64_t>(max_positions);
  r.beta_fast = f.number("beta_fast").value_or(r.beta_fast);
  r.beta_slow = f.number("beta_slow").value_or(r.beta_slow);
  r.attention_factor = f.number("attention_factor");
  r.mscale = f.number("mscale");
  r.mscale_all_dim = f.number("mscale_all_dim");
  return r;
}

QuantizationConfig parse_quantization(const Fields& f) {
  QuantizationConfig q;
  q.quant_method = f.string("quant_method").value_or("");
  // Other methods (fp8, gptq, ...) use the same key names with other meanings; only the
  // method is read for them.
  if (!q.quant_method.empty() && q.quant_method != "exl3") return q;
  q.version = f.string("version").value_or("");
  q.bits = f.number("bits").value_or(0.0);
  if (q.bits < 0 || q.bits > 16)
    fail(ErrorKind::kFormat, "{}: field '{}' = {} is out of range (expected 0..16)", f.file(), f.name("bits"), q.bits);
  q.head_bits = static_cast<int>(f.integer_in("head_bits", 1, 16).value_or(0));
  q.codebook = f.string("codebook").value_or("");
  if (!q.codebook.empty() && q.codebook != "mul1" && q.codebook != "mcg" && q.codebook != "3inst")
    log_warn("{}: field '{}' = {} is not a known codebook (mul1, mcg, 3inst); it is informational only", f.file(),
             f.name("codebook"), safe_quote(q.codebook));
  q.out_scales = f.string("out_scales").value_or("");
  if (const json* cal = f.object("calibration")) {
    const Fields c(*cal, f.file(), f.name("calibration") + ".");
    q.calibration_rows = c.integer_in("rows", 0, kMaxDim).value_or(0);
    q.calibration_cols = c.integer_in("cols", 0, kMaxDim).value_or(0);
  }
  return q;
}

}  // namespace

ModelConfig parse_model_config(const std::string& text, const std::string& path) {
  ModelConfig c;
  c.path = path;
  c.raw = format_detail::parse_json_strict(text, path, "config", kMaxConfigDepth);
  if (!c.raw.is_object())
    fail(ErrorKind::kFormat, "{}: config is a JSON {}, expected an object", path, json_type_name(c.raw));
  const Fields f(c.raw, path, "");

  if (const json* arch = f.get("architectures")) {
    if (!arch->is_array()) f.wrong("architectures", *arch, "an array of strings");
    for (size_t i = 0; i < arch->size(); ++i) {
      const json& a = (*arch)[i];
      if (!a.is_string())
        fail(ErrorKind::kFormat, "{}: field 'architectures[{}]' is {}, expected a string", path, i, json_type_name(a));
      c.architectures.push_back(a.get<std::string>());
    }
  }
  c.model_type = f.string("model_type").value_or("");
  if (c.architectures.empty() && c.model_type.empty())
    fail(ErrorKind::kFormat, "{}: neither 'architectures' nor 'model_type' is given (expected at least one)", path);

  auto required = [&](const char* key) {
    const auto v = f.integer_in(key, 1, kMaxDim);
    if (!v) fail(ErrorKind::kFormat, "{}: required field '{}' is missing (expected a positive integer)", path, key);
    return *v;
  };
  c.hidden_size = required("hidden_size");
  c.num_hidden_layers = required("num_hidden_layers");
  c.num_attention_heads = required("num_attention_heads");
  c.vocab_size = required("vocab_size");
  c.intermediate_size = f.integer_in("intermediate_size", 1, kMaxDim).value_or(0);
  c.max_position_embeddings = f.integer_in("max_position_embeddings", 1, kMaxDim).value_or(0);

  c.num_key_value_heads = f.integer_in("num_key_value_heads", 1, kMaxDim).value_or(c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(ErrorKind::kFormat, "{}: 'num_attention_heads' ({}) is not a multiple of 'num_key_value_heads' ({})", path,
         c.num_attention_heads, c.num_key_value_heads);
  if (const auto hd = f.integer_in("head_dim", 1, kMaxDim)) {
    c.head_dim = *hd;
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail(ErrorKind::kFormat, "{}: 'head_dim' is missing and 'hidden_size' ({}) is not a multiple of "
           "'num_attention_heads' ({})", path, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }

  c.rms_norm_eps = f.positive("rms_norm_eps").value_or(c.rms_norm_eps);
  c.rope_theta = f.positive("rope_theta").value_or(c.rope_theta);
  const double max_pos = static_cast<double>(c.max_position_embeddings);
  if (const json* rp = f.object("rope_parameters")) {
    const Fields r(*rp, path, "rope_parameters.");
    c.rope_theta = r.positive("rope_theta").value_or(c.rope_theta);
    c.rope_scaling = parse_rope(r, max_pos);
    if (f.object("rope_scaling"))
      log_warn("{}: both 'rope_parameters' and 'rope_scaling' are present; using 'rope_parameters'", path);
  } else if (const json* rs = f.object("rope_scaling")) {
    c.rope_scaling = parse_rope(Fields(*rs, path, "rope_scaling."), max_pos);
  }

  c.tie_word_embeddings = f.boolean("tie_word_embeddings").value_or(false);
  c.attention_bias = f.boolean("attention_bias").value_or(false);
  c.mlp_bias = f.boolean("mlp_bias").value_or(false);
  c.hidden_act = f.string("hidden_act").value_or(c.hidden_act);
  // transformers 5 writes "dtype", older versions "torch_dtype".
  if (const auto td = f.string("torch_dtype")) c.torch_dtype = *td;
  else if (const auto d = f.string("dtype")) c.torch_dtype = *d;

  c.bos_token_id = f.integer_in("bos_token_id", 0, INT64_MAX);
  if (const json* eos = f.get("eos_token_id")) {
    if (eos->is_array()) {
      for (size_t i = 0; i < eos->size(); ++i) {
        const json& e = (*eos)[i];
        if (!(e.is_number_integer() || e.is_number_unsigned()) || (e.is_number_integer() && e.get<int64_t>() < 0) ||
            (e.is_number_unsigned() && e.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)))
          fail(ErrorKind::kFormat, "{}: field 'eos_token_id[{}]' is {} {}, expected a non-negative integer", path, i,
               json_type_name(e), safe_quote(e.dump(), 40));
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    } else if (eos->is_number_integer() || eos->is_number_unsigned()) {
      c.eos_token_ids.push_back(*f.integer_in("eos_token_id", 0, INT64_MAX));
    } else {
      f.wrong("eos_token_id", *eos, "an integer or an array of integers");
    }
  }

  if (const json* q = f.object("quantization_config"))
    c.quantization = parse_quantization(Fields(*q, path, "quantization_config."));
  return c;
}

ModelConfig load_model_config(const std::string& path) { return parse_model_config(read_text_file(path), path); }

}  // namespace trellis
