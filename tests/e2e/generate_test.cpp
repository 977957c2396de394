// Generation on the real tiny-llama model (CPU backend): greedy output against an argmax chain of
// full, non-incremental forwards; stop strings, stop tokens, max_tokens, cancellation, the context
// limit and KV-cache prefix reuse. StopStringFilter is also tested alone, without a model.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "backends/backend.h"
#include "model/model.h"
#include "runtime/generate.h"
#include "runtime/generate_stop.h"
#include "runtime/tokenizer.h"
#include "test_util.h"
#include "trellis/error.h"

namespace trellis {
namespace {

// ---- StopStringFilter alone ---------------------------------------------------------------------

// Pushes `pieces`, returning the emitted text and checking it never holds part of `stop`'s match.
std::string run_filter(StopStringFilter& f, const std::vector<std::string>& pieces, bool flush) {
  std::string out;
  for (const std::string& p : pieces) out += f.push(p);
  if (flush && !f.stopped()) out += f.flush();
  return out;
}

TEST(GenerateStopFilter, CutsAcrossPiecesAndHoldsPrefixes) {
  StopStringFilter f({"<end>"});
  EXPECT_EQ(f.push("Hello <"), "Hello ");  // "<" could start the stop string
  EXPECT_EQ(f.push("e"), "");
  EXPECT_EQ(f.push("n"), "");
  EXPECT_EQ(f.push("d> tail"), "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.matched(), "<end>");
  EXPECT_EQ(f.push("more"), "");
}

TEST(GenerateStopFilter, ReleasesAFalseStart) {
  StopStringFilter f({"<end>"});
  EXPECT_EQ(f.push("a <en"), "a ");
  EXPECT_EQ(f.push("try"), "<entry");
  EXPECT_FALSE(f.stopped());
  EXPECT_EQ(f.push("<e"), "");
  EXPECT_EQ(f.flush(), "<e");
}

TEST(GenerateStopFilter, EarliestOfSeveralAndOverlaps) {
  StopStringFilter f({"cd", "bcx", "abcd"});
  // "abcd" and "cd" both complete; "abcd" starts first.
  EXPECT_EQ(run_filter(f, {"xxab", "c", "d"}, false), "xx");
  EXPECT_EQ(f.matched(), "abcd");
  StopStringFilter g({"aab"});
  EXPECT_EQ(run_filter(g, {"a", "a", "a", "b", "c"}, false), "a");  // the self-overlapping prefix
  StopStringFilter h({"\n\n"});
  EXPECT_EQ(run_filter(h, {"one\n", "two\n", "\nthree"}, false), "one\ntwo");
  StopStringFilter none({});
  EXPECT_EQ(run_filter(none, {"a", "b"}, true), "ab");
  EXPECT_THROW(StopStringFilter({"x", ""}), Error);
}

TEST(GenerateStopFilter, MultibyteStop) {
  StopStringFilter f({"\xC3\xA9t\xC3\xA9"});  // "été"
  EXPECT_EQ(f.push("l\xC3\xA9"), "l");           // "lé": é could start the stop
  EXPECT_EQ(f.push("t"), "");
  EXPECT_EQ(f.push("\xC3\xA9!"), "");
  EXPECT_TRUE(f.stopped());
}

// ---- the model ----------------------------------------------------------------------------------

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

std::string tiny_dir() { return test::shared_path("fixtures/tiny-llama/hf"); }

class Generate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_shared()) return;
    backend_ = make_cpu_backend().release();
    model_ = Model::load(tiny_dir(), *backend_).release();
    oracle_model_ = Model::load(tiny_dir(), *backend_).release();
    tok_ = Tokenizer::load(tiny_dir()).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete oracle_model_;
    delete model_;
    delete backend_;
    tok_ = nullptr;
    oracle_model_ = model_ = nullptr;
    backend_ = nullptr;
  }
  void SetUp() override {
    if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  }

  static GenerateOptions greedy(int64_t max_tokens) {
    GenerateOptions o;
    o.sampling.temperature = 0;
    o.max_tokens = max_tokens;
    return o;
  }

  // The greedy continuation by brute force: a full forward from position 0 over the whole growing
  // sequence for every token (nothing carried over in the KV cache), argmax with ties to the
  // lowest id.
  static std::vector<int32_t> argmax_chain(std::vector<int32_t> seq, int n) {
    std::vector<int32_t> out;
    std::vector<float> logits;
    const int64_t vocab = oracle_model_->vocab_size();
    for (int i = 0; i < n; ++i) {
      oracle_model_->forward(seq, 0, /*all_logits=*/true, logits);
      const float* row = logits.data() + (static_cast<int64_t>(seq.size()) - 1) * vocab;
      const auto id = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      out.push_back(id);
      seq.push_back(id);
    }
    return out;
  }

  static std::vector<int32_t> prompt(const std::string& text) { return tok_->encode(text); }

  static inline Backend* backend_ = nullptr;
  static inline Model* model_ = nullptr;
  static inline Model* oracle_model_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
};

TEST_F(Generate, GreedyEqualsFullForwardArgmaxChain) {
  for (const char* text : {"The history of the city", "def main():\n    ", "In 1998, the band"}) {
    SCOPED_TRACE(text);
    const std::vector<int32_t> p = prompt(text);
    const std::vector<int32_t> want = argmax_chain(p, 24);
    Generator gen(*model_, *tok_);
    std::string streamed;
    const GenerateResult r = gen.generate(p, greedy(24), [&](std::string_view piece) {
      streamed += piece;
      return true;
    });
    EXPECT_EQ(r.tokens, want);
    EXPECT_EQ(r.reason, StopReason::kMaxTokens);
    EXPECT_EQ(r.text, streamed);
    EXPECT_EQ(r.text, tok_->decode(want, /*skip_special=*/true));
    EXPECT_EQ(r.stats.prompt_tokens, static_cast<int64_t>(p.size()));
    EXPECT_EQ(r.stats.generated_tokens, 24);
    EXPECT_EQ(r.stats.reused_tokens, 0);
    EXPECT_GT(r.stats.prefill_tok_s(), 0);
    EXPECT_GT(r.stats.decode_tok_s(), 0);
    std::printf("greedy %-28s prefill %.0f tok/s, decode %.0f tok/s: %s\n", ("\"" + std::string(text) + "\"").c_str(),
                r.stats.prefill_tok_s(), r.stats.decode_tok_s(), r.text.c_str());
    // The cache holds the prompt and every generated token but the last.
    std::vector<int32_t> hist = p;
    hist.insert(hist.end(), want.begin(), want.end() - 1);
    EXPECT_EQ(gen.history(), hist);
  }
}

TEST_F(Generate, MaxTokensHonoured) {
  const std::vector<int32_t> p = prompt("Once upon a time");
  Generator gen(*model_, *tok_);
  for (int64_t n : {1, 2, 7}) {
    const GenerateResult r = gen.generate(p, greedy(n));
    EXPECT_EQ(static_cast<int64_t>(r.tokens.size()), n);
    EXPECT_EQ(r.reason, StopReason::kMaxTokens);
  }
  const GenerateResult none = gen.generate(p, greedy(0));
  EXPECT_TRUE(none.tokens.empty());
  EXPECT_TRUE(none.text.empty());
  EXPECT_EQ(gen.history(), p);
  GenerateOptions sampled;  // default sampling, seeded
  sampled.max_tokens = 9;
  EXPECT_EQ(gen.generate(p, sampled).tokens.size(), 9u);
}

TEST_F(Generate, StopStringsCutAndNeverLeak) {
  const std::vector<int32_t> p = prompt("The history of the city");
  Generator gen(*model_, *tok_);
  const GenerateResult full = gen.generate(p, greedy(40));
  const std::string& text = full.text;
  // Byte offset where each token's text ends.
  std::vector<size_t> end;
  for (size_t i = 1; i <= full.tokens.size(); ++i)
    end.push_back(tok_->decode(std::span<const int32_t>(full.tokens).first(i), true).size());
  ASSERT_EQ(end.back(), text.size());

  std::vector<std::string> stops;
  // One spanning a token boundary: the last byte of a token and the first byte of the next.
  for (size_t i = 1; i + 1 < end.size(); ++i) {
    if (end[i] - end[i - 1] >= 2 && end[i + 1] - end[i] >= 2 && static_cast<unsigned char>(text[end[i] - 1]) < 0x80 &&
        static_cast<unsigned char>(text[end[i]]) < 0x80 && text.find(text.substr(end[i] - 1, 2)) == end[i] - 1) {
      stops.push_back(text.substr(end[i] - 1, 2));
      break;
    }
  }
  ASSERT_FALSE(stops.empty()) << "no token boundary to test in: " << text;
  stops.push_back(text.substr(end[5] > 6 ? end[5] - 6 : 0, 6));  // a longer one, several tokens back
  stops.push_back(text.substr(0, 1));                            // the very first character

  for (const std::string& stop : stops) {
    std::printf("stop string '%s' in: %s\n", stop.c_str(), text.c_str());
    SCOPED_TRACE("stop string '" + stop + "'");
    GenerateOptions o = greedy(40);
    o.stop_strings = {"not-in-the-text\x01", stop};
    std::string streamed;
    int calls = 0;
    const GenerateResult r = gen.generate(p, o, [&](std::string_view piece) {
      EXPECT_FALSE(piece.empty());
      ++calls;
      streamed += piece;
      return true;
    });
    const std::string want = text.substr(0, text.find(stop));
    EXPECT_EQ(r.reason, StopReason::kStopString);
    EXPECT_EQ(r.stop_string, stop);
    EXPECT_EQ(r.text, want);
    EXPECT_EQ(streamed, want);  // nothing of the stop string, not even a prefix, reached the callback
    // Generation ended with the token that completed the stop string.
    const size_t last = text.find(stop) + stop.size();
    const auto completed = std::lower_bound(end.begin(), end.end(), last) - end.begin() + 1;
    EXPECT_EQ(static_cast<ptrdiff_t>(r.tokens.size()), completed);
    if (want.empty()) {
      EXPECT_EQ(calls, 0);
    }
  }

  // A stop string whose start is the tail of the text is held back, then released at the end.
  GenerateOptions o = greedy(40);
  o.stop_strings = {text.substr(text.size() - 2) + "\x01never"};
  std::string streamed;
  const GenerateResult r = gen.generate(p, o, [&](std::string_view piece) {
    streamed += piece;
    return true;
  });
  EXPECT_EQ(r.reason, StopReason::kMaxTokens);
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(r.text, text);
}

TEST_F(Generate, StopTokens) {
  const std::vector<int32_t> p = prompt("In 1998, the band");
  const std::vector<int32_t> chain = argmax_chain(p, 16);
  // The first position j >= 2 whose token did not occur before.
  size_t j = 2;
  while (j < chain.size() && std::find(chain.begin(), chain.begin() + static_cast<ptrdiff_t>(j), chain[j]) !=
                                 chain.begin() + static_cast<ptrdiff_t>(j))
    ++j;
  ASSERT_LT(j, chain.size());
  Generator gen(*model_, *tok_);
  GenerateOptions o = greedy(16);
  o.stop_ids = {chain[j], 100000};
  const GenerateResult r = gen.generate(p, o);
  EXPECT_EQ(r.reason, StopReason::kStopToken);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(chain.begin(), chain.begin() + static_cast<ptrdiff_t>(j) + 1));
  EXPECT_EQ(r.text, tok_->decode(std::span<const int32_t>(chain).first(j), true));  // the stop token is not text
  EXPECT_EQ(default_stop_ids(*model_, *tok_), std::vector<int32_t>{0});
}

TEST_F(Generate, CancellationStopsAtOnce) {
  const std::vector<int32_t> p = prompt("The history of the city");
  Generator gen(*model_, *tok_);
  const GenerateResult full = gen.generate(p, greedy(40));
  std::vector<std::string> pieces;
  const GenerateResult r = gen.generate(p, greedy(40), [&](std::string_view piece) {
    pieces.emplace_back(piece);
    return pieces.size() < 3;
  });
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(r.reason, StopReason::kCancelled);
  EXPECT_EQ(r.text, pieces[0] + pieces[1] + pieces[2]);
  EXPECT_EQ(full.text.substr(0, r.text.size()), r.text);
  EXPECT_LT(r.tokens.size(), full.tokens.size());
  EXPECT_EQ(tok_->decode(r.tokens, true), r.text);  // byte-level pieces: one token, one piece here
  // The generator is still usable and consistent after a cancel.
  EXPECT_EQ(gen.generate(p, greedy(40)).tokens, full.tokens);
}

TEST_F(Generate, PrefixReuseMatchesFreshGenerator) {
  const std::vector<int32_t> p1 = prompt("User: tell me about the river.\nAssistant:");
  Generator gen(*model_, *tok_);
  const GenerateResult first = gen.generate(p1, greedy(12));
  // The next turn extends the conversation: prompt + reply + more text.
  std::vector<int32_t> p2 = p1;
  p2.insert(p2.end(), first.tokens.begin(), first.tokens.end());
  for (int32_t t : prompt("\nUser: and the bridge?\nAssistant:")) p2.push_back(t);

  GenerateOptions sampled;
  sampled.max_tokens = 16;
  sampled.sampling.seed = 1234;
  sampled.sampling.repetition_penalty = 1.1f;
  for (const GenerateOptions& o : {greedy(16), sampled}) {
    Generator fresh(*oracle_model_, *tok_);
    const GenerateResult want = fresh.generate(p2, o);
    gen.reset();
    gen.generate(p1, greedy(12));
    const GenerateResult got = gen.generate(p2, o);
    EXPECT_EQ(got.stats.reused_tokens, static_cast<int64_t>(p1.size() + first.tokens.size() - 1));
    EXPECT_EQ(got.tokens, want.tokens);
    EXPECT_EQ(got.text, want.text);
  }
  // The same prompt again: everything but its last token is reused.
  const GenerateResult again = gen.generate(p2, greedy(16));
  const GenerateResult fresh_again = Generator(*oracle_model_, *tok_).generate(p2, greedy(16));
  EXPECT_EQ(again.stats.reused_tokens, static_cast<int64_t>(p2.size() - 1));
  EXPECT_EQ(again.tokens, fresh_again.tokens);
  // A prompt that diverges early reuses only the common prefix.
  std::vector<int32_t> p3(p1.begin(), p1.begin() + 3);
  for (int32_t t : prompt(" something else entirely")) p3.push_back(t);
  const GenerateResult diverged = gen.generate(p3, greedy(10));
  EXPECT_EQ(diverged.stats.reused_tokens, 3);
  EXPECT_EQ(diverged.tokens, argmax_chain(p3, 10));
}

TEST_F(Generate, ContextLimit) {
  ModelOptions small;
  small.max_context = 24;
  auto model = Model::load(tiny_dir(), *backend_, small);
  Generator gen(*model, *tok_);
  const std::vector<int32_t> p = prompt("The history of the city of London begins");
  ASSERT_LT(p.size(), 20u);
  GenerateOptions o = greedy(-1);
  const GenerateResult r = gen.generate(p, o);
  EXPECT_EQ(r.reason, StopReason::kContextFull);
  EXPECT_EQ(p.size() + r.tokens.size(), 24u);
  EXPECT_NE(r.message.find("context of 24 tokens is full"), std::string::npos) << r.message;
  EXPECT_EQ(r.tokens, argmax_chain(p, static_cast<int>(r.tokens.size())));
  o.max_tokens = 1000;  // max_tokens beyond the context ends the same way
  EXPECT_EQ(gen.generate(p, o).reason, StopReason::kContextFull);

  std::vector<int32_t> long_prompt(24, p[0]);
  try {
    gen.generate(long_prompt, o);
    FAIL() << "a prompt filling the context was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("24 tokens"), std::string::npos) << e.what();
  }
}

TEST_F(Generate, BadInput) {
  Generator gen(*model_, *tok_);
  const auto kind_of = [&](std::span<const int32_t> p, const GenerateOptions& o) {
    try {
      gen.generate(p, o);
    } catch (const Error& e) {
      return e.kind();
    }
    return ErrorKind::kInternal;
  };
  EXPECT_EQ(kind_of({}, greedy(4)), ErrorKind::kInvalidArgument);
  const std::vector<int32_t> bad = {5, 2000};
  EXPECT_EQ(kind_of(bad, greedy(4)), ErrorKind::kInvalidArgument);
  GenerateOptions o = greedy(4);
  o.sampling.top_p = 0;
  EXPECT_EQ(kind_of(prompt("hi"), o), ErrorKind::kInvalidArgument);
  o = greedy(4);
  o.stop_strings = {""};
  EXPECT_EQ(kind_of(prompt("hi"), o), ErrorKind::kInvalidArgument);
  // After the failures the generator still works.
  EXPECT_EQ(gen.generate(prompt("hi"), greedy(4)).tokens, argmax_chain(prompt("hi"), 4));
}

TEST_F(Generate, StreamedPiecesAreWholeCharacters) {
  // Hot sampling over the whole vocabulary emits raw byte tokens that often do not form whole
  // characters on their own.
  GenerateOptions o;
  o.max_tokens = 200;
  o.sampling = SamplingParams{};
  o.sampling.temperature = 3.0f;
  o.sampling.top_k = 0;
  o.sampling.top_p = 1.0f;
  o.sampling.min_p = 0.0f;
  o.sampling.seed = 7;
  o.skip_special = true;
  Generator gen(*model_, *tok_);
  std::string streamed;
  const GenerateResult r = gen.generate(prompt("caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC"), o,
                                        [&](std::string_view piece) {
                                          EXPECT_TRUE(valid_utf8(piece)) << "split character in a piece";
                                          streamed += piece;
                                          return true;
                                        });
  EXPECT_EQ(streamed, r.text);
  // The test means something only if some token was part of a character.
  int partial = 0;
  for (int32_t t : r.tokens) partial += tok_->decode(std::span<const int32_t>(&t, 1)).find("\xEF\xBF\xBD") != std::string::npos;
  EXPECT_GT(partial, 0) << r.text;
  std::printf("%d of %zu sampled tokens were partial characters\n", partial, r.tokens.size());
  if (r.reason == StopReason::kMaxTokens) {
    EXPECT_EQ(r.text, tok_->decode(r.tokens, true));
  }
}

TEST_F(Generate, DefaultStopIdsReadGenerationConfig) {
  test::TempDir dir;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    std::filesystem::create_symlink(tiny_dir() + "/" + f, dir.file(f));
  const auto write = [&](const std::string& text) {
    std::ofstream(dir.file("generation_config.json")) << text;
  };
  write(R"({"eos_token_id": [7, 0, 3]})");
  auto model = Model::load(dir.path(), *backend_);
  EXPECT_EQ(default_stop_ids(*model, *tok_), (std::vector<int32_t>{0, 3, 7}));
  write(R"({"eos_token_id": 9})");
  EXPECT_EQ(default_stop_ids(*model, *tok_), (std::vector<int32_t>{0, 9}));
  write(R"({"eos_token_id": "x"})");
  try {
    default_stop_ids(*model, *tok_);
    FAIL() << "bad eos_token_id accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("generation_config.json"), std::string::npos) << e.what();
  }
  write("{ not json");
  EXPECT_THROW(default_stop_ids(*model, *tok_), Error);
}

}  // namespace
}  // namespace trellis
