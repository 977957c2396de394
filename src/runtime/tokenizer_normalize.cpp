// runtime/tokenizer_normalize.cpp: the normalizers of tokenizer.json.
#include "runtime/tokenizer_normalize.h"

#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "runtime/tokenizer_common.h"
#include "runtime/tokenizer_unicode.h"

namespace trellis::tok {
namespace {

constexpr const char* kSupportedNormalizers =
    "Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend, ByteLevel, "
    "Nmt";

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void apply(std::string& text, bool& at_origin) const override {
    for (const auto& p : parts_) p->apply(text, at_origin);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void apply(std::string& text, bool&) const override { text = unicode_normalize(text, form_); }

 private:
  NormalForm form_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void apply(std::string& text, bool&) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      size_t len;
      const char32_t cp = utf8_decode(text, i, &len);
      append_lowercase(out, cp);
      i += len;
    }
    text.swap(out);
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& text, bool& at_origin) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t len;
        if (!is_whitespace(utf8_decode(text, begin, &len))) break;
        begin += len;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t len;
        if (!is_whitespace(utf8_decode(text, start, &len))) break;
        end = start;
      }
    }
    if (begin > 0) at_origin = false;
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class StripAccentsNormalizer final : public Normalizer {
 public:
  void apply(std::string& text, bool& at_origin) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      size_t len;
      const char32_t cp = utf8_decode(text, i, &len);
      if (!is_combining_mark(cp)) {
        out.append(text, i, len);
      } else if (i == 0) {
        at_origin = false;
      }
      i += len;
    }
    text.swap(out);
  }
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void apply(std::string& text, bool& at_origin) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    pattern_.find_all(text, &matches);
    if (matches.empty()) return;
    std::string out;
    out.reserve(text.size() + matches.size() * content_.size());
    size_t last = 0;
    for (const auto& [s, e] : matches) {
      out.append(text, last, s - last);
      out += content_;
      if (s == 0 && e > 0 && content_.empty()) at_origin = false;
      last = e;
    }
    out.append(text, last, std::string::npos);
    text.swap(out);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void apply(std::string& text, bool&) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ByteLevelNormalizer final : public Normalizer {
 public:
  void apply(std::string& text, bool&) const override { text = byte_level_encode(text); }
};

class NmtNormalizer final : public Normalizer {
 public:
  void apply(std::string& text, bool& at_origin) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      size_t len;
      char32_t cp = utf8_decode(text, i, &len);
      const bool drop = (cp >= 0x01 && cp <= 0x08) || cp == 0x0B || (cp >= 0x0E && cp <= 0x1F) ||
                        cp == 0x7F || cp == 0x8F || cp == 0x9F;
      if (drop) {
        if (i == 0) at_origin = false;
      } else {
        switch (cp) {
          case 0x09: case 0x0A: case 0x0C: case 0x0D: case 0x1680: case 0x2028: case 0x2029:
          case 0x2581: case 0xFEFF: case 0xFFFD:
            cp = ' ';
            break;
          default:
            if (cp >= 0x200B && cp <= 0x200F) cp = ' ';
        }
        utf8_append(out, cp);
      }
      i += len;
    }
    text.swap(out);
  }
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, std::string_view where) {
  if (!j.is_object()) fail(ErrorKind::kFormat, "{}: a normalizer must be an object", where);
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) {
      fail(ErrorKind::kFormat, "{}: Sequence normalizer needs a \"normalizers\" array", where);
    }
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      parts.push_back(make_normalizer((*it)[i], fmt::format("{}.normalizers[{}]", where, i)));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNFKD);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Nmt") return std::make_unique<NmtNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(json_bool(j, "strip_left", true, where),
                                             json_bool(j, "strip_right", true, where));
  }
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(json_string(j, "prepend", where));
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(Pattern::from_json(j, where),
                                               json_string(j, "content", where));
  }
  fail(ErrorKind::kUnsupported, "{}: normalizer type \"{}\" is not supported (supported: {})", where,
       type, kSupportedNormalizers);
}

}  // namespace trellis::tok
