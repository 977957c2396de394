// runtime/tokenizer.cpp: loading tokenizer.json / tokenizer_config.json, the encode pipeline,
// decoding and the stream decoder.
#include "runtime/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "core/mmap_file.h"
#include "runtime/tokenizer_added.h"
#include "runtime/tokenizer_bpe.h"
#include "runtime/tokenizer_common.h"
#include "runtime/tokenizer_decode.h"
#include "runtime/tokenizer_normalize.h"
#include "runtime/tokenizer_pretokenize.h"
#include "runtime/tokenizer_unicode.h"

namespace trellis {
namespace {

using nlohmann::json;

constexpr const char* kReplacementUtf8 = "\xEF\xBF\xBD";

json parse_json(std::string_view text, std::string_view source) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(ErrorKind::kFormat, "{}: not valid JSON: {}", source, e.what());
  }
}

// Ids a post-processor puts around a single sequence.
struct SpecialWrap {
  std::vector<int32_t> before, after;
};

std::vector<int32_t> id_list(const json& j, std::string_view where) {
  std::vector<int32_t> ids;
  if (!j.is_array()) fail(ErrorKind::kFormat, "{}: expected an array of ids", where);
  for (const auto& v : j) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      fail(ErrorKind::kFormat, "{}: ids must be non-negative integers", where);
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return ids;
}

// ["[SEP]", 102] of Bert/Roberta processing.
int32_t named_id(const json& j, const char* key, std::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer()) {
    fail(ErrorKind::kFormat, "{}: \"{}\" must be [token, id]", where, key);
  }
  return (*it)[1].get<int32_t>();
}

void parse_post_processor(const json& j, std::string_view where, SpecialWrap* wrap) {
  if (!j.is_object()) fail(ErrorKind::kFormat, "{}: a post_processor must be an object", where);
  const std::string type = tok::json_type(j, where);
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array()) {
      fail(ErrorKind::kFormat, "{}: Sequence post_processor needs a \"processors\" array", where);
    }
    for (size_t i = 0; i < it->size(); ++i) {
      parse_post_processor((*it)[i], fmt::format("{}.processors[{}]", where, i), wrap);
    }
    return;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    const int32_t cls = named_id(j, "cls", where), sep = named_id(j, "sep", where);
    wrap->before.insert(wrap->before.begin(), cls);
    wrap->after.push_back(sep);
    return;
  }
  if (type == "TemplateProcessing") {
    auto single = j.find("single");
    auto specials = j.find("special_tokens");
    if (single == j.end() || !single->is_array()) {
      fail(ErrorKind::kFormat, "{}: TemplateProcessing needs a \"single\" array", where);
    }
    std::vector<int32_t> before, after;
    int sequences = 0;
    for (const auto& piece : *single) {
      if (auto s = piece.find("Sequence"); piece.is_object() && s != piece.end()) {
        if (!s->is_object() || s->value("id", "") != "A") {
          fail(ErrorKind::kUnsupported, "{}: a single-sequence template may only use $A", where);
        }
        ++sequences;
        continue;
      }
      auto sp = piece.is_object() ? piece.find("SpecialToken") : piece.end();
      if (sp == piece.end() || !sp->is_object() || !sp->contains("id") || !(*sp)["id"].is_string()) {
        fail(ErrorKind::kFormat, "{}: template pieces must be {{\"Sequence\": ...}} or "
             "{{\"SpecialToken\": {{\"id\": ...}}}}", where);
      }
      const std::string name = (*sp)["id"].get<std::string>();
      if (specials == j.end() || !specials->is_object() || !specials->contains(name)) {
        fail(ErrorKind::kFormat, "{}: template uses special token {} missing from special_tokens",
             where, json(name).dump());
      }
      const json& entry = (*specials)[name];
      if (!entry.is_object() || !entry.contains("ids")) {
        fail(ErrorKind::kFormat, "{}: special_tokens[{}] needs \"ids\"", where, json(name).dump());
      }
      const auto ids = id_list(entry["ids"], where);
      auto& target = sequences == 0 ? before : after;
      target.insert(target.end(), ids.begin(), ids.end());
    }
    if (sequences != 1) {
      fail(ErrorKind::kUnsupported, "{}: the single template must contain $A exactly once", where);
    }
    wrap->before.insert(wrap->before.begin(), before.begin(), before.end());
    wrap->after.insert(wrap->after.end(), after.begin(), after.end());
    return;
  }
  fail(ErrorKind::kUnsupported,
       "{}: post_processor type \"{}\" is not supported (supported: TemplateProcessing, "
       "ByteLevel, BertProcessing, RobertaProcessing, Sequence)",
       where, type);
}

// bos_token / eos_token of tokenizer_config.json: a string or {"content": ...}.
std::optional<std::string> config_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    if (auto c = it->find("content"); c != it->end() && c->is_string()) return c->get<std::string>();
  }
  fail(ErrorKind::kFormat, "tokenizer_config.json: \"{}\" must be a string or {{\"content\": ...}}",
       key);
}

std::optional<bool> config_flag(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) fail(ErrorKind::kFormat, "tokenizer_config.json: \"{}\" must be a boolean", key);
  return it->get<bool>();
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const std::string json_path = (fs::path(path) / "tokenizer.json").string();
    if (!fs::exists(json_path, ec)) {
      fail(ErrorKind::kIo, "{}: no tokenizer.json in this directory (only tokenizer.json "
           "tokenizers are supported; sentencepiece .model files are not)", path);
    }
    const std::string config_path = (fs::path(path) / "tokenizer_config.json").string();
    std::string config;
    if (fs::exists(config_path, ec)) config = read_text_file(config_path);
    return from_json(read_text_file(json_path), config, json_path);
  }
  return from_json(read_text_file(path), {}, path);
}

std::unique_ptr<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json,
                                                std::string_view config_json,
                                                std::string_view source) {
  const json root = parse_json(tokenizer_json, source);
  if (!root.is_object()) fail(ErrorKind::kFormat, "{}: the top level must be a JSON object", source);
  std::unique_ptr<Tokenizer> t(new Tokenizer());

  auto model = root.find("model");
  if (model == root.end() || !model->is_object()) {
    fail(ErrorKind::kFormat, "{}: missing \"model\" object", source);
  }
  std::string model_type = "BPE";
  if (auto ty = model->find("type"); ty != model->end()) {
    if (!ty->is_string()) fail(ErrorKind::kFormat, "{}: model.type must be a string", source);
    model_type = ty->get<std::string>();
  } else if (!model->contains("merges")) {
    model_type = model->contains("unk_id") ? "Unigram" : "unknown (no type, no merges)";
  }
  if (model_type != "BPE") {
    fail(ErrorKind::kUnsupported,
         "{}: model type \"{}\" is not supported; trellis supports BPE tokenizers (byte-level BPE "
         "as in GPT-2/Llama 3/Qwen, SentencePiece-style BPE with byte_fallback as in Llama 2/"
         "Mistral), not WordPiece, Unigram or WordLevel",
         source, model_type);
  }
  const std::string model_where = fmt::format("{}: model", source);
  t->model_ = tok::BpeModel::from_json(*model, source);

  auto component = [&](const char* key) -> const json* {
    auto it = root.find(key);
    return it == root.end() || it->is_null() ? nullptr : &*it;
  };
  if (const json* j = component("normalizer")) {
    t->normalizer_ = tok::make_normalizer(*j, fmt::format("{}: normalizer", source));
  }
  if (const json* j = component("pre_tokenizer")) {
    t->pre_tokenizer_ = tok::make_pre_tokenizer(*j, fmt::format("{}: pre_tokenizer", source));
  }
  if (const json* j = component("decoder")) {
    t->decoder_ = tok::make_decoder(*j, fmt::format("{}: decoder", source));
  }
  SpecialWrap wrap;
  if (const json* j = component("post_processor")) {
    parse_post_processor(*j, fmt::format("{}: post_processor", source), &wrap);
  }
  if (component("truncation") || component("padding")) {
    log_info("{}: truncation/padding settings are ignored", source);
  }

  // Added tokens, with ids assigned the way HF's AddedVocabulary::add_tokens (v0.22) does: the
  // model's id when the content is in its vocabulary, else after the largest added id or the
  // model's vocabulary count, whichever applies.
  int32_t model_count = 0;
  for (int32_t id = 0; id < t->model_->id_limit(); ++id) model_count += t->model_->id_to_token(id) != nullptr;
  int32_t max_added = -1;
  if (const json* list = component("added_tokens")) {
    if (!list->is_array()) fail(ErrorKind::kFormat, "{}: added_tokens must be an array", source);
    for (size_t i = 0; i < list->size(); ++i) {
      const json& e = (*list)[i];
      const std::string where = fmt::format("{}: added_tokens[{}]", source, i);
      if (!e.is_object()) fail(ErrorKind::kFormat, "{}: must be an object", where);
      tok::AddedToken a;
      a.content = tok::json_string(e, "content", where);
      a.single_word = tok::json_bool(e, "single_word", false, where);
      a.lstrip = tok::json_bool(e, "lstrip", false, where);
      a.rstrip = tok::json_bool(e, "rstrip", false, where);
      a.special = tok::json_bool(e, "special", false, where);
      a.normalized = tok::json_bool(e, "normalized", !a.special, where);
      if (!tok::utf8_is_valid(a.content)) fail(ErrorKind::kFormat, "{}: content is not UTF-8", where);
      if (a.content.empty()) continue;
      if (a.special) t->special_contents_.insert(a.content);
      int32_t id;
      if (auto known = t->token_to_id(a.content)) {
        id = *known;
      } else if (max_added < 0) {
        id = model_count;
      } else {
        id = max_added >= model_count || model_count == 0 ? max_added + 1 : model_count;
      }
      const int64_t stated = tok::json_int(e, "id", id, where);
      if (stated != id) {
        log_warn("{}: token {} is listed with id {} but gets id {} (as in HF tokenizers)", where,
                 json(a.content).dump(), stated, id);
      }
      t->added_ids_[a.content] = id;
      max_added = std::max(max_added, id);
      t->added_[id] = std::move(a);
    }
  }
  // Normalized tokens are matched by their normalized content (decode still shows the content).
  std::vector<std::pair<std::string, int32_t>> raw, normalized;
  for (const auto& [id, a] : t->added_) {
    std::string text = a.content;
    if (a.normalized && t->normalizer_) {
      bool at_origin = true;
      t->normalizer_->apply(text, at_origin);
    }
    (a.normalized ? normalized : raw).emplace_back(std::move(text), id);
  }
  std::sort(raw.begin(), raw.end());
  std::sort(normalized.begin(), normalized.end());
  t->raw_matcher_ = std::make_unique<tok::AddedTokenMatcher>();
  t->raw_matcher_->build(raw);
  t->normalized_matcher_ = std::make_unique<tok::AddedTokenMatcher>();
  t->normalized_matcher_->build(normalized);

  t->vocab_size_ = t->model_->id_limit();
  for (const auto& [id, a] : t->added_) t->vocab_size_ = std::max(t->vocab_size_, id + 1);

  t->prefix_ids_ = wrap.before;
  t->suffix_ids_ = wrap.after;
  for (int32_t id : t->prefix_ids_) {
    if (!t->has_id(id)) fail(ErrorKind::kFormat, "{}: post_processor adds id {} that is not in the vocabulary", source, id);
  }
  for (int32_t id : t->suffix_ids_) {
    if (!t->has_id(id)) fail(ErrorKind::kFormat, "{}: post_processor adds id {} that is not in the vocabulary", source, id);
  }
  if (!t->prefix_ids_.empty() && t->is_special(t->prefix_ids_.front())) {
    t->bos_id_ = t->prefix_ids_.front();
    t->bos_token_ = *t->resolve(*t->bos_id_);
  }

  if (!config_json.empty()) {
    const json config = parse_json(config_json, "tokenizer_config.json");
    if (!config.is_object()) fail(ErrorKind::kFormat, "tokenizer_config.json: must be a JSON object");
    auto lookup = [&](const std::optional<std::string>& name, const char* key) -> std::optional<int32_t> {
      if (!name) return std::nullopt;
      auto id = t->token_to_id(*name);
      if (!id) {
        fail(ErrorKind::kFormat, "tokenizer_config.json: {} {} is not in the vocabulary", key,
             json(*name).dump());
      }
      return id;
    };
    if (auto bos = config_token(config, "bos_token")) {
      t->bos_token_ = bos;
      t->bos_id_ = lookup(bos, "bos_token");
    }
    if (auto eos = config_token(config, "eos_token")) {
      t->eos_token_ = eos;
      t->eos_id_ = lookup(eos, "eos_token");
    }
    // transformers rebuilds the template from these flags when they are given.
    if (auto add_bos = config_flag(config, "add_bos_token")) {
      t->prefix_ids_.clear();
      if (*add_bos) {
        if (!t->bos_id_) fail(ErrorKind::kFormat, "tokenizer_config.json: add_bos_token without a bos_token");
        t->prefix_ids_.push_back(*t->bos_id_);
      }
    }
    if (auto add_eos = config_flag(config, "add_eos_token")) {
      t->suffix_ids_.clear();
      if (*add_eos) {
        if (!t->eos_id_) fail(ErrorKind::kFormat, "tokenizer_config.json: add_eos_token without an eos_token");
        t->suffix_ids_.push_back(*t->eos_id_);
      }
    }
  }
  return t;
}

const std::string* Tokenizer::resolve(int32_t id) const {
  if (auto it = added_.find(id); it != added_.end()) return &it->second.content;
  return model_->id_to_token(id);
}

bool Tokenizer::has_id(int32_t id) const { return resolve(id) != nullptr; }

bool Tokenizer::is_special(int32_t id) const {
  const std::string* t = resolve(id);
  return t && special_contents_.count(*t);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = added_ids_.find(std::string(token)); it != added_ids_.end()) return it->second;
  return model_->token_to_id(token);
}

std::string Tokenizer::token_text(int32_t id) const {
  const std::string* t = resolve(id);
  if (!t) {
    fail(ErrorKind::kInvalidArgument, "token id {} is not in the vocabulary (size {})", id, vocab_size_);
  }
  return *t;
}

void Tokenizer::encode_segment(std::string_view text, bool at_origin, bool parse_special,
                               std::vector<int32_t>* out) const {
  std::string normalized(text);
  if (normalizer_) normalizer_->apply(normalized, at_origin);
  std::vector<tok::AddedSplit> splits;
  tok::split_on_added_tokens(normalized, *normalized_matcher_, added_, parse_special, &splits);
  std::vector<tok::PreToken> pieces;
  for (const tok::AddedSplit& s : splits) {
    if (s.id >= 0) {
      out->push_back(s.id);
      continue;
    }
    pieces.clear();
    pieces.push_back(tok::PreToken{normalized.substr(s.start, s.end - s.start), at_origin && s.start == 0});
    if (pre_tokenizer_) pre_tokenizer_->apply(pieces);
    for (const tok::PreToken& p : pieces) model_->tokenize(p.text, out);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens,
                                       bool parse_special) const {
  std::string repaired;
  if (!tok::utf8_is_valid(text)) {
    repaired = tok::utf8_lossy(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  if (add_special_tokens) out = prefix_ids_;
  std::vector<tok::AddedSplit> splits;
  tok::split_on_added_tokens(text, *raw_matcher_, added_, parse_special, &splits);
  for (const tok::AddedSplit& s : splits) {
    if (s.id >= 0) {
      out.push_back(s.id);
    } else {
      encode_segment(text.substr(s.start, s.end - s.start), s.start == 0, parse_special, &out);
    }
  }
  if (add_special_tokens) out.insert(out.end(), suffix_ids_.begin(), suffix_ids_.end());
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* t = resolve(id);
    if (!t) {
      fail(ErrorKind::kInvalidArgument, "cannot decode token id {}: not in the vocabulary (size {})",
           id, vocab_size_);
    }
    if (skip_special && special_contents_.count(*t)) continue;
    tokens.push_back(*t);
  }
  std::string out;
  if (decoder_) {
    decoder_->apply(tokens);
    for (const std::string& t : tokens) out += t;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
  }
  return out;
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  if (!tokenizer_.has_id(id)) {
    fail(ErrorKind::kInvalidArgument, "cannot decode token id {}: not in the vocabulary (size {})", id,
         tokenizer_.vocab_size());
  }
  ids_.push_back(id);
  return emit(false);
}

std::string StreamDecoder::flush() { return emit(true); }

void StreamDecoder::reset() {
  ids_.clear();
  prefix_.clear();
  prefix_index_ = 0;
}

std::string StreamDecoder::emit(bool force) {
  const std::string text = tokenizer_.decode(ids_, skip_special_);
  if (text.size() <= prefix_.size()) return {};
  const bool held = text.size() >= 3 && text.compare(text.size() - 3, 3, kReplacementUtf8) == 0;
  if (held && !force) return {};
  size_t common = prefix_.size();
  if (text.compare(0, prefix_.size(), prefix_) != 0) {
    // The window's text is not an extension of its prefix (a decoder that rewrites earlier
    // output): emit from the first difference, at a character boundary.
    common = 0;
    while (common < prefix_.size() && text[common] == prefix_[common]) ++common;
    while (common > 0 && (static_cast<unsigned char>(text[common]) & 0xC0) == 0x80) --common;
  }
  std::string out = text.substr(common);
  const size_t new_prefix_index = ids_.size() - prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<ptrdiff_t>(prefix_index_));
  prefix_ = tokenizer_.decode(ids_, skip_special_);
  prefix_index_ = new_prefix_index;
  return out;
}

}  // namespace trellis
