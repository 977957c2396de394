// Core utilities: thread pool, memory-mapped files, atomic writer, tensor helpers.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <sys/resource.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "core/mmap_file.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "test_util.h"

namespace trellis {
namespace {

namespace fs = std::filesystem;

TEST(ThreadPool, CoversRangeExactlyOnce) {
  ThreadPool pool(4);
  for (size_t n : {1u, 2u, 3u, 7u, 100u, 1001u}) {
    std::vector<std::atomic<int>> hits(n);
    pool.parallel_for(n, 1, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) hits[i]++;
    });
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << n << " " << i;
  }
}

TEST(ThreadPool, BackToBackJobsSleepingWorkersAndTwoSubmitters) {
  // Many short jobs back to back (workers spinning), jobs separated by sleeps longer than the
  // spin (workers asleep on the condition variable), and two threads submitting at once: every
  // job must still cover its range exactly once. More threads than this machine's cores, and
  // chunk counts that change from job to job, so that workers are preempted between looking at a
  // job and claiming from it (a late worker once claimed a chunk past the end of a finished job
  // when the next job had more chunks).
  ThreadPool pool(8);
  auto run_jobs = [&](int jobs, int sleep_every, uint64_t salt) {
    for (int j = 0; j < jobs; ++j) {
      const size_t n = 1 + (static_cast<size_t>(j) * 7919u + salt) % 64;
      std::vector<std::atomic<int>> hits(n);
      pool.parallel_for(n, 1, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "job " << j << " index " << i;
      if (sleep_every && j % sleep_every == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  run_jobs(3000, 0, 1);
  run_jobs(40, 1, 2);
  std::thread other([&] { run_jobs(1000, 97, 3); });
  run_jobs(1000, 89, 4);
  other.join();
}

TEST(ThreadPool, RethrowsAndStaysUsable) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(30, 1,
                                 [&](size_t b, size_t) {
                                   if (b == 0) throw Error(ErrorKind::kInternal, "boom");
                                 }),
               Error);
  std::atomic<size_t> sum{0};
  pool.parallel_for(100, 1, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 4950u);
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadPool pool(2);
  std::atomic<int> count{0};
  pool.parallel_for(4, 1, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) pool.parallel_for(10, 1, [&](size_t b2, size_t e2) { count += int(e2 - b2); });
  });
  EXPECT_EQ(count.load(), 40);
}

TEST(MappedFile, MapsContentsAndNamesMissingFiles) {
  test::TempDir tmp;
  std::ofstream(tmp.file("a.bin"), std::ios::binary) << "hello";
  MappedFile f(tmp.file("a.bin"));
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(std::memcmp(f.data(), "hello", 5), 0);
  std::ofstream(tmp.file("empty.bin"), std::ios::binary).close();
  EXPECT_EQ(MappedFile(tmp.file("empty.bin")).size(), 0u);
  try {
    MappedFile missing(tmp.file("missing.bin"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("missing.bin"), std::string::npos);
  }
  EXPECT_THROW(MappedFile m(tmp.path()), Error);  // a directory
}

TEST(AtomicFileWriter, CommitRenamesAndAbortLeavesNothing) {
  test::TempDir tmp;
  {
    AtomicFileWriter w(tmp.file("out.bin"));
    w.write("abc", 3);
    EXPECT_FALSE(fs::exists(tmp.file("out.bin")));
    w.commit();
  }
  EXPECT_EQ(read_text_file(tmp.file("out.bin")), "abc");
  {
    AtomicFileWriter w(tmp.file("aborted.bin"));
    w.write("xyz", 3);
  }
  EXPECT_FALSE(fs::exists(tmp.file("aborted.bin")));
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);  // no temporaries left behind
}

TEST(AtomicFileWriter, DiskFullIsAnIoErrorAndLeavesNothing) {
  // Simulate a full disk with a file-size limit: writes past it fail with EFBIG.
  test::TempDir tmp;
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    AtomicFileWriter w(tmp.file("big.bin"));
    std::vector<char> chunk(1 << 16, 'x');
    for (int i = 0; i < 4; ++i) w.write(chunk.data(), chunk.size());
    w.commit();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(message.find("big.bin"), std::string::npos) << message;
  EXPECT_TRUE(fs::is_empty(tmp.path()));
}

TEST(Tensor, ShapeHelpers) {
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_numel({2, 3, 4}), 24);
  EXPECT_EQ(shape_to_string({2, 3}), "[2, 3]");
  AlignedBuffer b(100);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
  EXPECT_EQ(b.size(), 100u);
}

}  // namespace
}  // namespace trellis
