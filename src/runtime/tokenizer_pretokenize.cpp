// runtime/tokenizer_pretokenize.cpp: the pre-tokenizers of tokenizer.json, built on one split
// routine that reproduces HF's NormalizedString::split behaviors.
#include "runtime/tokenizer_pretokenize.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "runtime/tokenizer_common.h"
#include "runtime/tokenizer_unicode.h"

namespace trellis::tok {
namespace {

constexpr const char* kSupportedPreTokenizers =
    "Sequence, ByteLevel, Split, Digits, Metaspace, WhitespaceSplit, CharDelimiterSplit";

// GPT-2's split, used by the ByteLevel pre-tokenizer when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const nlohmann::json& j, std::string_view where) {
  const std::string b = json_string(j, "behavior", where);
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  fail(ErrorKind::kFormat,
       "{}: unknown behavior \"{}\" (expected Removed, Isolated, MergedWithPrevious, "
       "MergedWithNext or Contiguous)",
       where, b);
}

// A covering of a piece by consecutive ranges, each flagged as a pattern match or not.
struct Segment {
  size_t start, end;
  bool match;
};

void segments_from_matches(size_t n, const std::vector<std::pair<size_t, size_t>>& matches,
                           std::vector<Segment>* segs) {
  segs->clear();
  if (n == 0) {
    segs->push_back({0, 0, false});
    return;
  }
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) segs->push_back({prev, s, false});
    segs->push_back({s, e, true});
    prev = e;
  }
  if (prev != n) segs->push_back({prev, n, false});
}

template <typename Pred>
void segments_from_chars(std::string_view text, Pred pred, std::vector<Segment>* segs) {
  segs->clear();
  if (text.empty()) {
    segs->push_back({0, 0, false});
    return;
  }
  size_t last = 0;
  for (size_t i = 0; i < text.size();) {
    size_t len;
    const char32_t cp = utf8_decode(text, i, &len);
    if (pred(cp)) {
      if (last < i) segs->push_back({last, i, false});
      segs->push_back({i, i + len, true});
      last = i + len;
    }
    i += len;
  }
  if (text.size() > last) segs->push_back({last, text.size(), false});
}

// Appends the pieces of `piece` that `behavior` keeps, dropping empty ones.
void split_piece(const PreToken& piece, const std::vector<Segment>& segs, Behavior behavior,
                 std::vector<PreToken>* out) {
  std::vector<std::pair<size_t, size_t>> keep;
  keep.reserve(segs.size());
  switch (behavior) {
    case Behavior::kIsolated:
      for (const Segment& s : segs) keep.emplace_back(s.start, s.end);
      break;
    case Behavior::kRemoved:
      for (const Segment& s : segs) {
        if (!s.match) keep.emplace_back(s.start, s.end);
      }
      break;
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (const Segment& s : segs) {
        if (s.match == previous_match && !keep.empty()) {
          keep.back().second = s.end;
        } else {
          keep.emplace_back(s.start, s.end);
        }
        previous_match = s.match;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Segment& s : segs) {
        if (s.match && !previous_match && !keep.empty()) {
          keep.back().second = s.end;
        } else {
          keep.emplace_back(s.start, s.end);
        }
        previous_match = s.match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (size_t i = segs.size(); i-- > 0;) {
        const Segment& s = segs[i];
        if (s.match && !previous_match && !keep.empty()) {
          keep.back().first = s.start;
        } else {
          keep.emplace_back(s.start, s.end);
        }
        previous_match = s.match;
      }
      std::reverse(keep.begin(), keep.end());
      break;
    }
  }
  for (const auto& [s, e] : keep) {
    if (s == e) continue;
    out->push_back(PreToken{piece.text.substr(s, e - s), piece.at_origin && s == 0});
  }
}

// Applies `make_segments(piece, &segs)` then `behavior` to every piece.
template <typename MakeSegments>
void split_all(std::vector<PreToken>& pieces, Behavior behavior, MakeSegments make_segments) {
  std::vector<PreToken> out;
  out.reserve(pieces.size() * 2);
  std::vector<Segment> segs;
  for (const PreToken& p : pieces) {
    make_segments(p.text, &segs);
    split_piece(p, segs, behavior, &out);
  }
  pieces.swap(out);
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void apply(std::vector<PreToken>& pieces) const override {
    for (const auto& p : parts_) p->apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, std::string_view where)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = Regex::compile(kGpt2Pattern, where);
  }
  void apply(std::vector<PreToken>& pieces) const override {
    if (add_prefix_space_) {
      for (PreToken& p : pieces) {
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, 1, ' ');
      }
    }
    if (regex_) {
      std::vector<std::pair<size_t, size_t>> matches;
      split_all(pieces, Behavior::kIsolated, [&](std::string_view text, std::vector<Segment>* segs) {
        regex_->find_all(text, &matches);
        segments_from_matches(text.size(), matches, segs);
      });
    }
    for (PreToken& p : pieces) p.text = byte_level_encode(p.text);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void apply(std::vector<PreToken>& pieces) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    split_all(pieces, behavior_, [&](std::string_view text, std::vector<Segment>* segs) {
      pattern_.find_all(text, &matches);
      segments_from_matches(text.size(), matches, segs);
      if (invert_) {
        for (Segment& s : *segs) s.match = !s.match;
      }
    });
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void apply(std::vector<PreToken>& pieces) const override {
    split_all(pieces, individual_ ? Behavior::kIsolated : Behavior::kContiguous,
              [](std::string_view text, std::vector<Segment>* segs) {
                segments_from_chars(text, is_numeric, segs);
              });
  }

 private:
  bool individual_;
};

class CharSplitPreTokenizer final : public PreTokenizer {
 public:
  // Splits on whitespace (delimiter 0) or on one delimiter character, removing it.
  explicit CharSplitPreTokenizer(char32_t delimiter) : delimiter_(delimiter) {}
  void apply(std::vector<PreToken>& pieces) const override {
    const char32_t d = delimiter_;
    split_all(pieces, Behavior::kRemoved, [d](std::string_view text, std::vector<Segment>* segs) {
      if (d == 0) {
        segments_from_chars(text, is_whitespace, segs);
      } else {
        segments_from_chars(text, [d](char32_t c) { return c == d; }, segs);
      }
    });
  }

 private:
  char32_t delimiter_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_(replacement), scheme_(scheme), split_(split) {
    utf8_append(replacement_utf8_, replacement);
  }
  void apply(std::vector<PreToken>& pieces) const override {
    for (PreToken& p : pieces) {
      std::string t;
      t.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ') {
          t += replacement_utf8_;
        } else {
          t.push_back(c);
        }
      }
      const bool starts = t.compare(0, replacement_utf8_.size(), replacement_utf8_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && p.at_origin))) {
        t.insert(0, replacement_utf8_);
      }
      p.text.swap(t);
    }
    if (split_) {
      const char32_t r = replacement_;
      split_all(pieces, Behavior::kMergedWithNext,
                [r](std::string_view text, std::vector<Segment>* segs) {
                  segments_from_chars(text, [r](char32_t c) { return c == r; }, segs);
                });
    }
  }

 private:
  char32_t replacement_;
  std::string replacement_utf8_;
  PrependScheme scheme_;
  bool split_;
};

}  // namespace

// Parses Metaspace's prepend_scheme, honoring the legacy add_prefix_space flag as HF does.
static PrependScheme parse_prepend_scheme(const nlohmann::json& j, std::string_view where) {
  PrependScheme scheme = PrependScheme::kAlways;
  if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
    const std::string s = json_string(j, "prepend_scheme", where);
    if (s == "always") {
      scheme = PrependScheme::kAlways;
    } else if (s == "first") {
      scheme = PrependScheme::kFirst;
    } else if (s == "never") {
      scheme = PrependScheme::kNever;
    } else {
      fail(ErrorKind::kFormat, "{}: prepend_scheme \"{}\" is not always, first or never", where, s);
    }
  }
  if (auto it = j.find("add_prefix_space"); it != j.end() && it->is_boolean() && !it->get<bool>()) {
    if (scheme != PrependScheme::kNever) {
      fail(ErrorKind::kFormat, "{}: add_prefix_space false does not match prepend_scheme", where);
    }
    scheme = PrependScheme::kNever;
  }
  return scheme;
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, std::string_view where) {
  if (!j.is_object()) fail(ErrorKind::kFormat, "{}: a pre_tokenizer must be an object", where);
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) {
      fail(ErrorKind::kFormat, "{}: Sequence pre_tokenizer needs a \"pretokenizers\" array", where);
    }
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      parts.push_back(make_pre_tokenizer((*it)[i], fmt::format("{}.pretokenizers[{}]", where, i)));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(json_bool(j, "add_prefix_space", true, where),
                                                   json_bool(j, "use_regex", true, where), where);
  }
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(Pattern::from_json(j, where), parse_behavior(j, where),
                                               json_bool(j, "invert", false, where));
  }
  if (type == "Digits") {
    return std::make_unique<DigitsPreTokenizer>(json_bool(j, "individual_digits", false, where));
  }
  if (type == "Metaspace") {
    return std::make_unique<MetaspacePreTokenizer>(json_char(j, "replacement", where),
                                                   parse_prepend_scheme(j, where),
                                                   json_bool(j, "split", true, where));
  }
  if (type == "WhitespaceSplit") return std::make_unique<CharSplitPreTokenizer>(0);
  if (type == "CharDelimiterSplit") {
    return std::make_unique<CharSplitPreTokenizer>(json_char(j, "delimiter", where));
  }
  fail(ErrorKind::kUnsupported, "{}: pre_tokenizer type \"{}\" is not supported (supported: {})",
       where, type, kSupportedPreTokenizers);
}

}  // namespace trellis::tok
