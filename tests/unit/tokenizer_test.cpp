// tests/unit/tokenizer_test.cpp: trellis::Tokenizer behavior that needs no Python oracle:
// error handling, tokenizer_config.json, streaming decode, UTF-8 repair, Unicode helpers and
// thread safety. (tokenizer_hf_test.cpp compares ids and text with Hugging Face tokenizers.)
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "runtime/tokenizer.h"
#include "runtime/tokenizer_unicode.h"
#include "tokenizer_test_util.h"
#include "trellis/error.h"

namespace trellis {
namespace {

std::string data_tokenizer(const std::string& name) {
  return test::tokenizer_source_root() + "/tests/data/tokenizers/" + name + "/tokenizer.json";
}

// A hand-written byte-level BPE: vocab of the letters of "hello world" plus merges.
std::string tiny_json(const std::string& model_override = "", const std::string& extra = "") {
  const std::string model = model_override.empty() ? R"({
      "type": "BPE", "dropout": null, "unk_token": null, "ignore_merges": false,
      "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "w": 5, "r": 6, "d": 7, "he": 8,
                "ll": 9, "hell": 10, "hello": 11, "Ġw": 12, "or": 13, "Ġwor": 14, "ld": 15,
                "Ġworld": 16, "!": 17},
      "merges": ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]})"
                                                    : model_override;
  return R"({"version": "1.0", "truncation": null, "padding": null,
    "added_tokens": [{"id": 18, "content": "<|end|>", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
    "post_processor": null,
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
    "model": )" + model + extra + "}";
}

ErrorKind load_error(const std::string& json, std::string* message = nullptr) {
  try {
    Tokenizer::from_json(json);
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "loading succeeded";
  return ErrorKind::kInternal;
}

TEST(TokenizerTest, HandWrittenBpe) {
  auto tok = Tokenizer::from_json(tiny_json());
  EXPECT_EQ(tok->encode("hello world"), (std::vector<int32_t>{11, 16}));
  EXPECT_EQ(tok->encode("hello world<|end|>"), (std::vector<int32_t>{11, 16, 18}));
  EXPECT_EQ(tok->decode(std::vector<int32_t>{11, 16, 17}), "hello world!");
  EXPECT_EQ(tok->decode(std::vector<int32_t>{11, 18}, /*skip_special=*/true), "hello");
  EXPECT_EQ(tok->vocab_size(), 19);
  EXPECT_TRUE(tok->is_special(18));
  EXPECT_FALSE(tok->is_special(11));
  EXPECT_EQ(tok->token_to_id("<|end|>"), 18);
  EXPECT_EQ(tok->token_to_id("Ġworld"), 16);
  EXPECT_FALSE(tok->token_to_id("nope").has_value());
  EXPECT_EQ(tok->token_text(16), "Ġworld");
  // Characters outside the vocab and without unk/byte_fallback are dropped, as in HF.
  EXPECT_EQ(tok->encode("hex"), (std::vector<int32_t>{8}));
}

TEST(TokenizerTest, MergeFormsAreEquivalent) {
  std::string pairs = tiny_json();
  const std::string legacy = R"(["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"])";
  const std::string tuples =
      R"([["h","e"],["l","l"],["he","ll"],["hell","o"],["Ġ","w"],["o","r"],["Ġw","or"],["l","d"],["Ġwor","ld"]])";
  pairs.replace(pairs.find(legacy), legacy.size(), tuples);
  auto a = Tokenizer::from_json(tiny_json());
  auto b = Tokenizer::from_json(pairs);
  EXPECT_EQ(a->encode("hello world hell"), b->encode("hello world hell"));
}

TEST(TokenizerTest, MalformedFilesAreFormatErrors) {
  std::string msg;
  EXPECT_EQ(load_error("{not json", &msg), ErrorKind::kFormat);
  EXPECT_NE(msg.find("JSON"), std::string::npos) << msg;
  EXPECT_EQ(load_error("[]"), ErrorKind::kFormat);
  EXPECT_EQ(load_error(R"({"version": "1.0"})", &msg), ErrorKind::kFormat);
  EXPECT_NE(msg.find("model"), std::string::npos) << msg;
  EXPECT_EQ(load_error(tiny_json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]})"), &msg),
            ErrorKind::kFormat);
  EXPECT_NE(msg.find("merges[0]"), std::string::npos) << msg;
  EXPECT_EQ(load_error(tiny_json(R"({"type": "BPE", "vocab": {"a": 0, "aa": 1}, "merges": ["a a a"]})")),
            ErrorKind::kFormat);
  EXPECT_EQ(load_error(tiny_json(R"({"type": "BPE", "vocab": {"a": -1}, "merges": []})")), ErrorKind::kFormat);
  EXPECT_EQ(load_error(tiny_json(R"({"type": "BPE", "merges": []})")), ErrorKind::kFormat);
  EXPECT_EQ(load_error(tiny_json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": [7]})")), ErrorKind::kFormat);
}

TEST(TokenizerTest, UnsupportedComponentsSayWhatIsSupported) {
  std::string msg;
  EXPECT_EQ(load_error(tiny_json(R"({"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "[UNK]"})"), &msg),
            ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("WordPiece"), std::string::npos) << msg;
  EXPECT_NE(msg.find("BPE"), std::string::npos) << msg;
  EXPECT_EQ(load_error(tiny_json(R"({"type": "Unigram", "unk_id": 0, "vocab": [["a", 0.0]]})"), &msg),
            ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("Unigram"), std::string::npos) << msg;

  std::string json = tiny_json();
  json.replace(json.find(R"("normalizer": null)"), 18, R"("normalizer": {"type": "BertNormalizer"})");
  EXPECT_EQ(load_error(json, &msg), ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("NFC"), std::string::npos) << msg;

  json = tiny_json();
  const std::string pre = R"("pre_tokenizer": {"type": "ByteLevel")";
  json.replace(json.find(pre), pre.size(), R"("pre_tokenizer": {"type": "Whitespace")");
  EXPECT_EQ(load_error(json, &msg), ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("Metaspace"), std::string::npos) << msg;

  json = tiny_json();
  json.replace(json.find(pre), pre.size(),
               R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(?<!"}, "behavior": "Isolated", "invert": false, "x": )");
  json.replace(json.find(R"("x": , "add_prefix_space")"), 25, R"("add_prefix_space")");
  EXPECT_EQ(load_error(json, &msg), ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("regex"), std::string::npos) << msg;
}

TEST(TokenizerTest, BadIdsAreInvalidArgument) {
  auto tok = Tokenizer::from_json(tiny_json());
  for (int32_t id : {19, -1, 1 << 30}) {
    try {
      tok->decode(std::vector<int32_t>{11, id});
      ADD_FAILURE() << "decode accepted id " << id;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(std::to_string(id)), std::string::npos) << e.what();
    }
    EXPECT_THROW(tok->token_text(id), Error);
    StreamDecoder stream(*tok);
    EXPECT_THROW(stream.push(id), Error);
  }
}

TEST(TokenizerTest, MissingFilesAreIoErrors) {
  test::TempDir dir;
  try {
    Tokenizer::load(dir.path());
    ADD_FAILURE() << "loaded an empty directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
  }
  EXPECT_THROW(Tokenizer::load(dir.file("nope.json")), Error);
}

TEST(TokenizerTest, ConfigChoosesBosAndEos) {
  test::TempDir dir;
  std::filesystem::copy_file(data_tokenizer("llama3_style"), dir.file("tokenizer.json"));
  auto plain = Tokenizer::load(dir.path());
  const int32_t bos = *plain->token_to_id("<|begin_of_text|>");
  const int32_t eot = *plain->token_to_id("<|eot_id|>");
  EXPECT_EQ(plain->bos_id(), bos);  // from the post-processor template
  EXPECT_FALSE(plain->eos_id().has_value());
  const std::vector<int32_t> body = plain->encode("Hello");
  std::vector<int32_t> with_bos = {bos};
  with_bos.insert(with_bos.end(), body.begin(), body.end());
  EXPECT_EQ(plain->encode("Hello", true), with_bos);

  test::write_file_bytes(dir.file("tokenizer_config.json"),
                         R"({"add_bos_token": true, "add_eos_token": true, "bos_token": "<|begin_of_text|>",
                             "eos_token": {"content": "<|eot_id|>", "lstrip": false}})");
  auto both = Tokenizer::load(dir.path());
  EXPECT_EQ(both->eos_id(), eot);
  EXPECT_EQ(both->eos_token(), "<|eot_id|>");
  std::vector<int32_t> expected = with_bos;
  expected.push_back(eot);
  EXPECT_EQ(both->encode("Hello", true), expected);
  EXPECT_EQ(both->encode("Hello", false), body);

  test::write_file_bytes(dir.file("tokenizer_config.json"), R"({"add_bos_token": false, "eos_token": "<|eot_id|>"})");
  auto none = Tokenizer::load(dir.path());
  EXPECT_EQ(none->encode("Hello", true), body);
  EXPECT_TRUE(none->special_prefix().empty());

  test::write_file_bytes(dir.file("tokenizer_config.json"), R"({"eos_token": "<|not a token|>"})");
  EXPECT_THROW(Tokenizer::load(dir.path()), Error);
  // A tokenizer.json path loads without the config beside it.
  EXPECT_EQ(Tokenizer::load(dir.file("tokenizer.json"))->encode("Hello", true), with_bos);
}

TEST(TokenizerTest, SpecialTokenParsingCanBeTurnedOff) {
  auto tok = Tokenizer::load(data_tokenizer("llama3_style"));
  const int32_t eot = *tok->token_to_id("<|eot_id|>");
  const auto parsed = tok->encode("a<|eot_id|>b");
  EXPECT_EQ(parsed.size(), 3u);
  EXPECT_EQ(parsed[1], eot);
  const auto literal = tok->encode("a<|eot_id|>b", false, /*parse_special=*/false);
  EXPECT_GT(literal.size(), 3u);
  for (int32_t id : literal) EXPECT_NE(id, eot);
  EXPECT_EQ(tok->decode(literal), "a<|eot_id|>b");
}

TEST(TokenizerTest, InvalidUtf8InputIsReplaced) {
  auto tok = Tokenizer::load(data_tokenizer("llama3_style"));
  EXPECT_EQ(tok->encode("ab\xFF" "c\xE6\x97"), tok->encode("ab\xEF\xBF\xBD" "c\xEF\xBF\xBD"));
  EXPECT_EQ(tok::utf8_lossy("\xF0\x80\x80" "a\xE6\x97" "b\xED\xA0\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(tok::utf8_is_valid("h\xC3\xA9 \xF0\x9F\x98\x80"));
  EXPECT_FALSE(tok::utf8_is_valid("\xC0\xAF"));
}

TEST(TokenizerTest, UnicodeNormalization) {
  using tok::NormalForm;
  EXPECT_EQ(tok::unicode_normalize("e\xCC\x81", NormalForm::kNFC), "\xC3\xA9");
  EXPECT_EQ(tok::unicode_normalize("\xC3\xA9", NormalForm::kNFD), "e\xCC\x81");
  EXPECT_EQ(tok::unicode_normalize("\xEF\xAC\x81", NormalForm::kNFKC), "fi");      // ligature fi
  EXPECT_EQ(tok::unicode_normalize("\xEF\xAC\x81", NormalForm::kNFC), "\xEF\xAC\x81");
  EXPECT_EQ(tok::unicode_normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", NormalForm::kNFC),
            "\xEA\xB0\x81");  // Hangul jamo -> syllable
  // Canonical reordering: dot below (220) sorts before diaeresis (230).
  EXPECT_EQ(tok::unicode_normalize("a\xCC\x88\xCC\xA3", NormalForm::kNFD), "a\xCC\xA3\xCC\x88");
  EXPECT_EQ(tok::unicode_normalize("\xE2\x84\xA6", NormalForm::kNFC), "\xCE\xA9");  // Ohm -> Omega
}

// Decodes `ids` one at a time and checks every piece is whole UTF-8; returns the concatenation.
std::string stream_all(const Tokenizer& tok, const std::vector<int32_t>& ids, std::vector<std::string>* pieces) {
  StreamDecoder stream(tok);
  std::string all;
  for (int32_t id : ids) {
    pieces->push_back(stream.push(id));
    EXPECT_TRUE(tok::utf8_is_valid(pieces->back()));
    all += pieces->back();
  }
  all += stream.flush();
  return all;
}

TEST(TokenizerTest, StreamDecoderHoldsPartialCharacters) {
  for (const char* name : {"llama2_style", "llama3_style", "metaspace_split"}) {
    auto tok = Tokenizer::load(data_tokenizer(name));
    const std::string text = "Tea for 日本 \xF0\x9F\x98\x80!  Done\n\nnext ü";
    const auto ids = tok->encode(text, true);
    std::vector<std::string> pieces;
    EXPECT_EQ(stream_all(*tok, ids, &pieces), tok->decode(ids)) << name;
    if (std::string(name) != "metaspace_split") {
      EXPECT_EQ(tok->decode(ids, /*skip_special=*/true), text) << name;
    }
    // Some ids carry only part of a character, so some pieces must be held back.
    EXPECT_NE(std::count(pieces.begin(), pieces.end(), std::string()), 0) << name;
  }
}

TEST(TokenizerTest, StreamDecoderFlushesTruncatedBytes) {
  auto tok = Tokenizer::load(data_tokenizer("llama2_style"));
  const int32_t e6 = *tok->token_to_id("<0xE6>"), x97 = *tok->token_to_id("<0x97>");
  StreamDecoder stream(*tok);
  EXPECT_EQ(stream.push(*tok->token_to_id("▁a")), "a");
  EXPECT_EQ(stream.push(e6), "");
  EXPECT_EQ(stream.push(x97), "");
  // ByteFallback turns an invalid run into one U+FFFD per byte (HF's rule).
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
  stream.reset();
  EXPECT_EQ(stream.push(*tok->token_to_id("▁a")), "a");
}

TEST(TokenizerTest, ConcurrentEncodesAgree) {
  auto tok = Tokenizer::load(data_tokenizer("qwen_style"));
  const std::string text = test::read_file_bytes(test::tokenizer_source_root() + "/tests/data/tokenizer_adversarial.txt");
  const auto expected = tok->encode(text);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < 3; ++r) results[t] = tok->encode(text);
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

TEST(TokenizerTest, RealTokenizerMetadata) {
  const std::string path = test::shared_path("tokenizers/smollm2-135m/tokenizer.json");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no SmolLM2 tokenizer in shared/";
  auto tok = Tokenizer::load(path);
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->token_to_id("<|im_start|>"), 1);
  EXPECT_TRUE(tok->is_special(2));
  EXPECT_EQ(tok->decode(tok->encode("Hello, world! 12345")), "Hello, world! 12345");
}

}  // namespace
}  // namespace trellis
