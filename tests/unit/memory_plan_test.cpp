// The up-front memory plan of Model::load: a model that does not fit the budget fails before
// anything is uploaded, with an error that says how much is needed, how much there is, and what
// context would fit. TRELLIS_MEMORY_LIMIT_MIB sets the budget (the CPU backend has none of its own).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "backends/backend.h"
#include "model/model.h"
#include "test_util.h"
#include "trellis/error.h"

namespace trellis {
namespace {

// Loads tiny-llama with the given budget (MiB) and KV cache length; returns the error message, or
// "" when it loaded.
std::string load_with_limit(uint64_t mib, int64_t ctx) {
  setenv("TRELLIS_MEMORY_LIMIT_MIB", std::to_string(mib).c_str(), 1);
  auto backend = make_cpu_backend(1);
  ModelOptions mo;
  mo.max_context = ctx;
  std::string message;
  try {
    auto model = Model::load(test::shared_path("fixtures/tiny-llama/exl3-q3_mcg"), *backend, mo);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kOutOfMemory) << e.what();
    message = e.what();
  }
  unsetenv("TRELLIS_MEMORY_LIMIT_MIB");
  return message;
}

TEST(MemoryPlan, RefusesWhatDoesNotFitAndSaysWhatWould) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const int64_t ctx = 2048;
  // Far too little: even the weights and buffers do not fit.
  const std::string tiny = load_with_limit(1, ctx);
  EXPECT_NE(tiny.find("needs about"), std::string::npos) << tiny;
  EXPECT_NE(tiny.find("KV cache"), std::string::npos) << tiny;
  EXPECT_NE(tiny.find("TRELLIS_MEMORY_LIMIT_MIB"), std::string::npos) << tiny;
  EXPECT_NE(tiny.find("even a short context does not fit"), std::string::npos) << tiny;
  // tiny-llama's 3 bpw weights are ~2 MiB against ~147 MiB of activation buffers: a smaller
  // quantization would not help, and the hint must not suggest one.
  EXPECT_NE(tiny.find("activation buffers are the larger part"), std::string::npos) << tiny;
  EXPECT_EQ(tiny.find("smaller quantization"), std::string::npos) << tiny;
  // Plenty: loads.
  EXPECT_EQ(load_with_limit(1 << 20, ctx), "");
  // The smallest budget that loads, by bisection; one MiB less must fail naming a context that fits,
  // and loading with that context must then succeed.
  uint64_t lo = 1, hi = 1 << 20;  // lo fails, hi loads
  while (hi - lo > 1) {
    const uint64_t mid = (lo + hi) / 2;
    (load_with_limit(mid, ctx).empty() ? hi : lo) = mid;
  }
  const std::string near = load_with_limit(lo, ctx);
  ASSERT_FALSE(near.empty());
  const size_t at = near.find("(--ctx ");
  ASSERT_NE(at, std::string::npos) << near;
  const int64_t suggested = std::stoll(near.substr(at + 7));
  EXPECT_GT(suggested, 0);
  EXPECT_LT(suggested, ctx);
  EXPECT_EQ(load_with_limit(lo, suggested), "") << "suggested --ctx " << suggested << " does not fit " << lo << " MiB";
}

TEST(MemoryPlan, MalformedLimitIsIgnored) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  setenv("TRELLIS_MEMORY_LIMIT_MIB", "lots", 1);
  auto backend = make_cpu_backend(1);
  EXPECT_NO_THROW(Model::load(test::shared_path("fixtures/tiny-llama/exl3-q3_mcg"), *backend));
  unsetenv("TRELLIS_MEMORY_LIMIT_MIB");
}

}  // namespace
}  // namespace trellis
