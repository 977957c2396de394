// runtime/tokenizer_decode.cpp: the decoders of tokenizer.json.
#include "runtime/tokenizer_decode.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "runtime/tokenizer_common.h"
#include "runtime/tokenizer_unicode.h"

namespace trellis::tok {
namespace {

constexpr const char* kSupportedDecoders =
    "Sequence, ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, BPEDecoder";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte a "<0xXX>" token stands for, or -1 (parsed as Rust's u8::from_str_radix(.., 16)).
int byte_token_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  if (t[3] == '+') return hex_value(t[4]);
  const int hi = hex_value(t[3]), lo = hex_value(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::vector<char32_t> to_chars(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t len;
    out.push_back(utf8_decode(s, i, &len));
    i += len;
  }
  return out;
}

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->apply(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

class ByteLevelDecoder final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    std::string token_bytes;
    for (const std::string& t : tokens) {
      token_bytes.clear();
      bool all_mapped = true;
      for (size_t i = 0; i < t.size();) {
        size_t len;
        const int b = char_to_byte(utf8_decode(t, i, &len));
        if (b < 0) {
          all_mapped = false;
          break;
        }
        token_bytes.push_back(static_cast<char>(b));
        i += len;
      }
      bytes += all_mapped ? token_bytes : t;
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class ByteFallbackDecoder final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8_is_valid(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& t : tokens) {
      const int b = byte_token_value(t);
      if (b >= 0) {
        pending.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      const std::vector<char32_t> chars = to_chars(t);
      size_t start_cut = 0;
      for (size_t i = 0; i < start_ && i < chars.size(); ++i) {
        if (chars[i] != content_) break;
        start_cut = i + 1;
      }
      size_t stop_cut = chars.size();
      for (size_t i = 0; i < stop_ && i < chars.size(); ++i) {
        const size_t index = chars.size() - i - 1;
        if (chars[index] != content_) break;
        stop_cut = index;
      }
      std::string out;
      for (size_t i = start_cut; i < stop_cut; ++i) utf8_append(out, chars[i]);
      t.swap(out);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    for (std::string& t : tokens) {
      pattern_.find_all(t, &matches);
      if (matches.empty()) continue;
      std::string out;
      size_t last = 0;
      for (const auto& [s, e] : matches) {
        out.append(t, last, s - last);
        out += content_;
        last = e;
      }
      out.append(t, last, std::string::npos);
      t.swap(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool prepends) : replacement_(replacement), prepends_(prepends) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t p = 0; p < t.size();) {
        size_t len;
        const char32_t cp = utf8_decode(t, p, &len);
        if (cp == replacement_) {
          if (!(i == 0 && prepends_)) out.push_back(' ');
        } else {
          out.append(t, p, len);
        }
        p += len;
      }
      tokens[i].swap(out);
    }
  }

 private:
  char32_t replacement_;
  bool prepends_;
};

class BpeSuffixDecoder final : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (suffix_.empty()) continue;
      const std::string replacement = i + 1 == tokens.size() ? "" : " ";
      std::string out;
      const std::string& t = tokens[i];
      size_t last = 0, pos;
      while ((pos = t.find(suffix_, last)) != std::string::npos) {
        out.append(t, last, pos - last);
        out += replacement;
        last = pos + suffix_.size();
      }
      out.append(t, last, std::string::npos);
      tokens[i].swap(out);
    }
  }

 private:
  std::string suffix_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, std::string_view where) {
  if (!j.is_object()) fail(ErrorKind::kFormat, "{}: a decoder must be an object", where);
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    auto it = j.find("decoders");
    if (it == j.end() || !it->is_array()) {
      fail(ErrorKind::kFormat, "{}: Sequence decoder needs a \"decoders\" array", where);
    }
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      parts.push_back(make_decoder((*it)[i], fmt::format("{}.decoders[{}]", where, i)));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const int64_t start = json_int(j, "start", 0, where), stop = json_int(j, "stop", 0, where);
    if (start < 0 || stop < 0) fail(ErrorKind::kFormat, "{}: Strip start/stop must be >= 0", where);
    return std::make_unique<StripDecoder>(json_char(j, "content", where), static_cast<size_t>(start),
                                          static_cast<size_t>(stop));
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(Pattern::from_json(j, where),
                                            json_string(j, "content", where));
  }
  if (type == "Metaspace") {
    bool prepends = true;
    if (auto it = j.find("prepend_scheme"); it != j.end() && it->is_string()) {
      prepends = it->get<std::string>() != "never";
    }
    if (auto it = j.find("add_prefix_space"); it != j.end() && it->is_boolean() && !it->get<bool>()) {
      prepends = false;
    }
    return std::make_unique<MetaspaceDecoder>(json_char(j, "replacement", where), prepends);
  }
  if (type == "BPEDecoder") {
    std::string suffix = "</w>";
    if (auto it = j.find("suffix"); it != j.end() && it->is_string()) suffix = it->get<std::string>();
    return std::make_unique<BpeSuffixDecoder>(std::move(suffix));
  }
  fail(ErrorKind::kUnsupported, "{}: decoder type \"{}\" is not supported (supported: {})", where,
       type, kSupportedDecoders);
}

}  // namespace trellis::tok
