// tests/test_util.h: helpers shared by the test suite (paths to ../shared, temp dirs, PRNG).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace trellis::test {

// ../shared of the checkout (or $TRELLIS_SHARED). Tests that need it call GTEST_SKIP when absent.
std::string shared_dir();
bool have_shared();
std::string shared_path(const std::string& relative);
// The trellis CLI binary built alongside the tests.
std::string trellis_binary();

// A fresh temporary directory removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// SplitMix64, the spec's test PRNG (spec 7.1).
struct SplitMix64 {
  uint64_t s;
  explicit SplitMix64(uint64_t seed) : s(seed) {}
  uint64_t next() {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// FNV-1a 64 over bytes (spec 7.1).
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 0xCBF29CE484222325ull);

// Runs a shell command, returns its exit status and captures stdout+stderr.
int run_command(const std::string& cmd, std::string* output);

// The dimensions of a Llama model cut out of the tiny-llama fixture (write_cut_tiny_llama).
struct CutLlamaShape {
  int64_t hidden = 256, inter = 768, heads = 4, kv_heads = 2, head_dim = 64, layers = 4;
};

// Writes a Hugging Face model directory `dir` (created) with tiny-llama's tokenizer, vocabulary
// (1024) and config.json but the dimensions of `s`: every tensor is the top-left corner of
// tiny-llama's (trained weights, so the logits mean something); rows beyond the source's (k/v
// with more KV heads than it has) repeat it from the top. Records gtest failures (check
// HasFatalFailure() after the call) when the fixture does not fit the shape.
void write_cut_tiny_llama(const std::string& dir, const CutLlamaShape& s);

}  // namespace trellis::test
