#include "format/format_util.h"

#include <limits>
#include <set>
#include <vector>

#include "core/error.h"

namespace trellis::format_detail {

namespace {

// Nesting depth of `text`, counting brackets outside strings. Stops early past `limit` so
// a hostile input costs O(limit) memory in the parser at most.
bool nesting_within(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') {
      if (++depth > limit) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

}  // namespace

nlohmann::json parse_json_strict(std::string_view text, const std::string& path, std::string_view what,
                                 int max_depth) {
  using nlohmann::json;
  if (!nesting_within(text, max_depth))
    fail(ErrorKind::kFormat, "{}: {} is nested deeper than {} levels", path, what, max_depth);

  // Each open container gets an entry; objects collect their keys to catch duplicates.
  std::vector<std::set<std::string>> keys;
  std::vector<bool> is_object;
  std::string duplicate;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
        keys.emplace_back();
        is_object.push_back(true);
        break;
      case json::parse_event_t::array_start:
        keys.emplace_back();
        is_object.push_back(false);
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!keys.empty()) {
          keys.pop_back();
          is_object.pop_back();
        }
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && is_object.back() && parsed.is_string()) {
          const auto& k = parsed.get_ref<const std::string&>();
          if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
        }
        break;
      case json::parse_event_t::value:
        break;
    }
    return true;
  };

  json result;
  try {
    result = json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                         /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    fail(ErrorKind::kFormat, "{}: {} is not valid JSON: {}", path, what, safe_quote(e.what(), 300));
  }
  if (!duplicate.empty())
    fail(ErrorKind::kFormat, "{}: {} has the key {} twice in one object (ambiguous; expected unique keys)",
         path, what, safe_quote(duplicate));
  return result;
}

std::string safe_quote(std::string_view s, size_t max_len) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  size_t n = 0;
  for (char ch : s) {
    if (n++ == max_len) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += ch;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out + "'";
}

std::string json_type_name(const nlohmann::json& j) {
  if (j.is_number_integer() || j.is_number_unsigned()) return "integer";
  if (j.is_number_float()) return "floating-point number";
  return j.type_name();
}

std::optional<uint64_t> checked_nbytes(const Shape& shape, DType dtype) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(numel, d, &numel)) return std::nullopt;
  }
  int64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<int64_t>(dtype_size(dtype)), &nbytes) || nbytes > kMax)
    return std::nullopt;
  return static_cast<uint64_t>(nbytes);
}

}  // namespace trellis::format_detail
