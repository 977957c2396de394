// `trellis quantize` when the disk fills up. Without root there is no small filesystem to mount,
// so a file-size limit stands in for it: under `ulimit -f` (with SIGXFSZ ignored) any write past
// the limit fails with EFBIG, as a write to a full disk fails with ENOSPC. One job, three runs
// sharing a --work-dir:
//   1. a limit below one layer checkpoint: the first checkpoint write fails;
//   2. --resume with a limit above every checkpoint but below model.safetensors: all layers are
//      quantized and checkpointed, the output compile fails;
//   3. --resume without a limit: only the compile is left, and it completes.
// After each failure: a non-zero exit, an error naming the file being written, no output
// directory, no `.OUT.partial-*` directory and no `*.tmp-*` file left anywhere.
// What is checked here is the failure handling, not quality, so the model is tiny-llama cut down
// to hidden 128 and 2 layers (1,408 tiles at 2 bpw and the 6-bit head, against the fixture's
// 13,312): a run takes seconds instead of minutes.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace fs = std::filesystem;

namespace trellis {
namespace {

// Names in `dir` (recursively) that a failed write must not leave behind.
std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".partial-") != std::string::npos || name.find(".tmp-") != std::string::npos)
      out.push_back(e.path().string());
  }
  return out;
}

TEST(QuantizeDiskFull, FailsCleanlyAndResumes) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not available";
  test::TempDir tmp;
  const std::string hf = tmp.file("hf"), out = tmp.file("q2"), work = tmp.file("work");
  test::write_cut_tiny_llama(hf,
                             {.hidden = 128, .inter = 128, .heads = 2, .kv_heads = 2, .head_dim = 64, .layers = 2});
  if (HasFatalFailure()) return;
  const std::string cmd = test::trellis_binary() + " -q quantize -i " + hf + " -o " + out + " --work-dir " + work +
                          " -b 2 --cal-rows 4 --cal-cols 128";
  // ulimit -f counts 1024-byte blocks. At 2 bpw a layer checkpoint of this model is ~35 KiB, the
  // head's (6 bits) ~99 KiB and model.safetensors ~425 KiB (the fp16 embedding is 256 KiB).
  auto limited = [&](int kib, const std::string& extra) {
    return "bash -c \"trap '' XFSZ; ulimit -f " + std::to_string(kib) + "; exec " + cmd + extra + "\"";
  };
  std::string log;

  // 1. The first checkpoint does not fit.
  EXPECT_NE(test::run_command(limited(16, ""), &log), 0) << log;
  EXPECT_NE(log.find(work + "/layer-00000.safetensors"), std::string::npos) << log;
  EXPECT_NE(log.find("File too large"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(work + "/layer-00000.safetensors"));
  EXPECT_EQ(leftovers(tmp.path()), std::vector<std::string>{});

  // 2. Every checkpoint fits, the output does not.
  EXPECT_NE(test::run_command(limited(192, " --resume"), &log), 0) << log;
  EXPECT_NE(log.find(out + "/model.safetensors"), std::string::npos) << log;
  EXPECT_NE(log.find("File too large"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::exists(work + "/layer-00001.safetensors"));
  EXPECT_TRUE(fs::exists(work + "/head.safetensors"));
  EXPECT_EQ(leftovers(tmp.path()), std::vector<std::string>{});

  // 3. Room again: the resumed run only compiles the output.
  ASSERT_EQ(test::run_command(cmd + " --resume", &log), 0) << log;
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(work));
  EXPECT_EQ(leftovers(tmp.path()), std::vector<std::string>{});
  ASSERT_EQ(test::run_command(test::trellis_binary() + " -q inspect " + out, &log), 0) << log;
}

}  // namespace
}  // namespace trellis
