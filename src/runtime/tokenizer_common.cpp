// runtime/tokenizer_common.cpp: JSON field helpers, patterns and the byte-level alphabet.
#include "runtime/tokenizer_common.h"

#include <array>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "runtime/tokenizer_unicode.h"

namespace trellis::tok {
namespace {

struct ByteLevelTables {
  std::array<char32_t, 256> to_char{};
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 512> to_byte{};  // every alphabet code point is below 512
  ByteLevelTables() {
    to_byte.fill(-1);
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int next = 256;
    for (int b = 0; b < 256; ++b) to_char[b] = printable(b) ? b : next++;
    for (int b = 0; b < 256; ++b) {
      to_byte[to_char[b]] = static_cast<int16_t>(b);
      utf8_append(to_utf8[b], to_char[b]);
    }
  }
};

const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables t;
  return t;
}

}  // namespace

std::string json_type(const nlohmann::json& j, std::string_view where) {
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) {
    fail(ErrorKind::kFormat, "{}: missing \"type\" string", where);
  }
  return it->get<std::string>();
}

bool json_bool(const nlohmann::json& j, const char* key, bool fallback, std::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(ErrorKind::kFormat, "{}: \"{}\" must be a boolean", where, key);
  return it->get<bool>();
}

std::string json_string(const nlohmann::json& j, const char* key, std::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    fail(ErrorKind::kFormat, "{}: \"{}\" must be a string", where, key);
  }
  return it->get<std::string>();
}

char32_t json_char(const nlohmann::json& j, const char* key, std::string_view where) {
  const std::string s = json_string(j, key, where);
  if (s.empty() || !utf8_is_valid(s)) {
    fail(ErrorKind::kFormat, "{}: \"{}\" must be one character", where, key);
  }
  size_t len;
  const char32_t cp = utf8_decode(s, 0, &len);
  if (len != s.size()) fail(ErrorKind::kFormat, "{}: \"{}\" must be one character", where, key);
  return cp;
}

int64_t json_int(const nlohmann::json& j, const char* key, int64_t fallback, std::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) fail(ErrorKind::kFormat, "{}: \"{}\" must be an integer", where, key);
  return it->get<int64_t>();
}

Pattern Pattern::from_json(const nlohmann::json& owner, std::string_view where) {
  auto it = owner.find("pattern");
  if (it == owner.end() || !it->is_object() || it->size() != 1) {
    fail(ErrorKind::kFormat, "{}: \"pattern\" must be {{\"String\": ...}} or {{\"Regex\": ...}}",
         where);
  }
  Pattern p;
  const std::string pattern_where = fmt::format("{}.pattern", where);
  if (auto s = it->find("String"); s != it->end() && s->is_string()) {
    p.literal_ = s->get<std::string>();
    if (p.literal_.empty()) p.regex_ = Regex::literal("", pattern_where);
    return p;
  }
  if (auto r = it->find("Regex"); r != it->end() && r->is_string()) {
    p.regex_ = Regex::compile(r->get<std::string>(), pattern_where);
    return p;
  }
  fail(ErrorKind::kFormat, "{}: \"pattern\" must be {{\"String\": ...}} or {{\"Regex\": ...}}",
       where);
}

void Pattern::find_all(std::string_view text,
                       std::vector<std::pair<size_t, size_t>>* matches) const {
  if (regex_) {
    regex_->find_all(text, matches);
    return;
  }
  matches->clear();
  size_t pos = 0;
  while ((pos = text.find(literal_, pos)) != std::string_view::npos) {
    matches->emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
}

char32_t byte_to_char(uint8_t b) { return byte_level_tables().to_char[b]; }

int char_to_byte(char32_t cp) { return cp < 512 ? byte_level_tables().to_byte[cp] : -1; }

std::string byte_level_encode(std::string_view bytes) {
  const ByteLevelTables& t = byte_level_tables();
  std::string out;
  out.reserve(bytes.size() + bytes.size() / 4);
  for (unsigned char b : bytes) out += t.to_utf8[b];
  return out;
}

}  // namespace trellis::tok
