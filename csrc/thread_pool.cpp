#include "thread_pool.h"

#include <algorithm>
#include <cstdlib>
#if defined(__linux__)
#include <sched.h>
#endif

namespace hjepa_kernels {

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop() {
  unsigned long seen = 0;
  std::unique_lock<std::mutex> lk(m_);
  for (;;) {
    wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    const auto* job = job_;
    const int parts = parts_;
    if (!job) continue;        // woke after that job had already finished
    ++active_;
    lk.unlock();
    for (int p; (p = next_.fetch_add(1)) < parts;) (*job)(p);
    lk.lock();
    if (--active_ == 0) idle_.notify_all();
  }
}

void ThreadPool::run(int parts, const std::function<void(int)>& fn) {
  std::unique_lock<std::mutex> job_lock(job_mutex_, std::try_to_lock);
  if (workers_.empty() || parts <= 1 || !job_lock.owns_lock()) {
    for (int p = 0; p < parts; ++p) fn(p);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(m_);
    job_ = &fn;
    parts_ = parts;
    next_.store(0);
    ++generation_;
  }
  wake_.notify_all();
  for (int p; (p = next_.fetch_add(1)) < parts;) fn(p);
  std::unique_lock<std::mutex> lk(m_);
  // Every part has been claimed; wait for the workers still running theirs.
  idle_.wait(lk, [&] { return active_ == 0; });
  job_ = nullptr;
}

static int default_threads() {
  if (const char* env = std::getenv("HJEPA_KERNEL_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return std::min(n, 64);
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, std::min(CPU_COUNT(&set), 64));
#endif
  return std::max(1u, std::min(std::thread::hardware_concurrency(), 64u));
}

ThreadPool& pool() {
  // Never destroyed: joining threads during interpreter shutdown can deadlock; the OS reclaims them.
  static ThreadPool* instance = new ThreadPool(default_threads());
  return *instance;
}

int max_parts() { return pool().threads() * 4; }

void parallel_parts(size_t n, size_t grain, const std::function<void(int, size_t, size_t)>& fn) {
  if (n == 0) return;
  const size_t parts = std::max<size_t>(1, std::min(static_cast<size_t>(max_parts()), n / std::max<size_t>(grain, 1)));
  if (parts == 1) {
    fn(0, 0, n);
    return;
  }
  const size_t step = (n + parts - 1) / parts;
  pool().run(static_cast<int>(parts), [&](int p) {
    const size_t begin = static_cast<size_t>(p) * step;
    const size_t end = std::min(n, begin + step);
    if (begin < end) fn(p, begin, end);
  });
}

void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  parallel_parts(n, grain, [&](int, size_t begin, size_t end) { fn(begin, end); });
}

}  // namespace hjepa_kernels
