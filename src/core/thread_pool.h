// core/thread_pool.h: a fixed pool of worker threads with a blocking parallel_for.
//
// Goals: low overhead for the many short parallel loops of inference (one GEMV per layer),
// deterministic chunking (results never depend on scheduling), nested calls run inline.
// Non-goals: work stealing, futures, task graphs.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace trellis {

class ThreadPool {
 public:
  // threads == 0: one per hardware thread. The calling thread takes part in the work, so a pool
  // of N threads starts N-1 workers.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }

  // Calls fn(begin, end) over [0, n) split into at most size() contiguous chunks of at least
  // `grain` items; returns when all are done. The first exception thrown by fn is rethrown here.
  void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

  // Process-wide pool, sized by set_default_threads() or the hardware.
  static ThreadPool& global();
  static void set_default_threads(size_t threads);

 private:
  void worker_loop(size_t index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  size_t job_n_ = 0, job_chunks_ = 0, next_chunk_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  std::exception_ptr error_;
  bool stop_ = false;
  bool busy_ = false;
};

}  // namespace trellis
