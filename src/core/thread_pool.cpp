#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <memory>

namespace trellis {

namespace {
thread_local bool t_inside_pool = false;
std::atomic<size_t> g_default_threads{0};
}  // namespace

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(size_t) {
  t_inside_pool = true;
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    while (next_chunk_ < job_chunks_) {
      const size_t c = next_chunk_++;
      const auto* job = job_;
      const size_t b = job_n_ * c / job_chunks_, e = job_n_ * (c + 1) / job_chunks_;
      lock.unlock();
      try {
        (*job)(b, e);
      } catch (...) {
        lock.lock();
        if (!error_) error_ = std::current_exception();
        lock.unlock();
      }
      lock.lock();
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  const size_t chunks = std::min(size(), (n + grain - 1) / grain);
  if (chunks <= 1 || t_inside_pool) {
    fn(0, n);
    return;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  // One job at a time; a second caller from another thread waits its turn.
  done_cv_.wait(lock, [&] { return !busy_; });
  busy_ = true;
  job_ = &fn;
  job_n_ = n;
  job_chunks_ = chunks;
  next_chunk_ = 0;
  pending_ = chunks;
  error_ = nullptr;
  ++generation_;
  work_cv_.notify_all();
  // The caller works too.
  t_inside_pool = true;
  while (next_chunk_ < job_chunks_) {
    const size_t c = next_chunk_++;
    const size_t b = n * c / chunks, e = n * (c + 1) / chunks;
    lock.unlock();
    try {
      fn(b, e);
    } catch (...) {
      lock.lock();
      if (!error_) error_ = std::current_exception();
      lock.unlock();
    }
    lock.lock();
    --pending_;
  }
  t_inside_pool = false;
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
  busy_ = false;
  std::exception_ptr err = error_;
  error_ = nullptr;
  done_cv_.notify_all();
  lock.unlock();
  if (err) std::rethrow_exception(err);
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(g_default_threads.load());
  return pool;
}

void ThreadPool::set_default_threads(size_t threads) { g_default_threads = threads; }

}  // namespace trellis
