// core/thread_pool.h: a fixed pool of worker threads with a blocking parallel_for.
//
// Goals: low overhead for the many short parallel loops of inference (one GEMV per layer, a few
// hundred loops per decoded token), deterministic chunking (results never depend on
// scheduling), nested calls run inline. Workers spin briefly (about 200 µs) on an atomic before
// sleeping on a condition variable, so back-to-back loops cost no system calls; chunks are
// claimed with an atomic tagged by the job's generation, so a worker late from one job can never
// take a chunk of the next.
// Non-goals: work stealing, futures, task graphs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace trellis {

class ThreadPool {
 public:
  // threads == 0: set_default_threads()'s count (the CLI's --threads) if set, else one per
  // hardware thread. The calling thread takes part in the work, so a pool
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
  // Claims and runs chunks of generation `gen` until none are left.
  void run_chunks(uint64_t gen);

  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;  // one job at a time
  std::mutex mutex_;         // guards sleeping/waking only
  std::condition_variable work_cv_, done_cv_;
  // The current job; written by the submitter before it publishes `next_`, read by workers only
  // after they claimed a chunk of that generation.
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  size_t job_n_ = 0, job_chunks_ = 0;
  std::atomic<uint64_t> next_{0};      // generation << 32 | chunk count << 16 | next chunk index
  std::atomic<size_t> pending_{0};     // chunks of the current job not yet finished
  std::atomic<int> sleepers_{0};       // workers blocked (or about to block) on work_cv_
  std::atomic<bool> main_sleeping_{false};
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace trellis
