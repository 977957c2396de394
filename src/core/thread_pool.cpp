#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace trellis {

namespace {
thread_local bool t_inside_pool = false;
std::atomic<size_t> g_default_threads{0};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until pred() or about kSpinMicros have passed; returns pred().
template <class Pred>
bool spin_until(Pred pred) {
  constexpr auto kSpin = std::chrono::microseconds(200);
  const auto t0 = std::chrono::steady_clock::now();
  for (uint32_t i = 1;; ++i) {
    if (pred()) return true;
    cpu_relax();
    if ((i & 63) == 0 && std::chrono::steady_clock::now() - t0 > kSpin) return pred();
  }
}

// next_ packs generation (bits 63..32), the job's chunk count (31..16) and the next chunk to
// claim (15..0), so a worker decides "is there a chunk of my job left" from one consistent
// snapshot. (Reading the count from job_chunks_ instead would race with the next job's setup: a
// late worker could then claim a chunk past the end of a finished job.)
constexpr uint64_t kFieldMask = 0xFFFFull;
}  // namespace

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = g_default_threads.load();  // the global --threads, if set
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  {
    std::lock_guard<std::mutex> lock(mutex_);
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks(uint64_t gen) {
  uint64_t v = next_.load(std::memory_order_acquire);
  for (;;) {
    if ((v >> 32) != gen) return;  // a later job was published: nothing of ours is left
    const uint64_t c = v & kFieldMask, chunks = (v >> 16) & kFieldMask;
    if (c >= chunks) return;
    if (!next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // Chunk c of generation gen is ours; the job cannot change until pending_ reaches 0.
    const size_t b = job_n_ * c / job_chunks_, e = job_n_ * (c + 1) / job_chunks_;
    try {
      (*job_)(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
    if (pending_.fetch_sub(1) == 1 && main_sleeping_.load()) {  // seq_cst: pairs with main_sleeping_
      std::lock_guard<std::mutex> lock(mutex_);
      done_cv_.notify_all();
    }
    v = next_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker_loop(size_t) {
  t_inside_pool = true;
  uint64_t seen = 0;
  for (;;) {
    auto published = [&] { return stop_.load() || (next_.load() >> 32) != seen; };  // seq_cst: pairs with sleepers_
    if (!spin_until(published)) {
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1);
      work_cv_.wait(lock, published);
      sleepers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    seen = next_.load(std::memory_order_acquire) >> 32;
    run_chunks(seen);
  }
}

void ThreadPool::parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  const size_t chunks = std::min({size(), (n + grain - 1) / grain, static_cast<size_t>(kFieldMask)});
  if (chunks <= 1 || t_inside_pool) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> submit(submit_mutex_);
  job_ = &fn;
  job_n_ = n;
  job_chunks_ = chunks;
  pending_.store(chunks);
  error_ = nullptr;
  const uint64_t gen = (next_.load() >> 32) + 1;
  next_.store(gen << 32 | static_cast<uint64_t>(chunks) << 16);  // publishes the job (seq_cst: before the sleepers_ check)
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    work_cv_.notify_all();
  }
  // The caller works too.
  t_inside_pool = true;
  run_chunks(gen);
  t_inside_pool = false;
  auto done = [&] { return pending_.load() == 0; };
  if (!spin_until(done)) {
    std::unique_lock<std::mutex> lock(mutex_);
    main_sleeping_.store(true);
    done_cv_.wait(lock, done);
    main_sleeping_.store(false);
  }
  job_ = nullptr;
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lock(error_mutex_);
    err = error_;
    error_ = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(g_default_threads.load());
  return pool;
}

void ThreadPool::set_default_threads(size_t threads) { g_default_threads = threads; }

}  // namespace trellis
