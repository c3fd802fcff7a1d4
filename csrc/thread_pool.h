// A small persistent pool that splits one kernel call over the CPU cores.
//
// MLX runs a CPU stream's primitives one at a time on one thread; the pool lets that thread hand parts
// of a large element-wise or row-wise kernel to workers that otherwise sleep on a condition variable
// (they never spin, so they do not compete with MKL's threads between kernel calls).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hjepa_kernels {

class ThreadPool {
 public:
  // threads: total threads including the caller (>= 1).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(part) once for each part in [0, parts), on the caller and the workers; returns when all
  // are done. A second caller arriving while a job runs does its parts alone instead of waiting.
  void run(int parts, const std::function<void(int)>& fn);

 private:
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex job_mutex_;   // one job at a time
  std::mutex m_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  const std::function<void(int)>* job_ = nullptr;
  int parts_ = 0;
  std::atomic<int> next_{0};
  int active_ = 0;
  unsigned long generation_ = 0;
  bool stop_ = false;
};

// The process-wide pool; its size is HJEPA_KERNEL_THREADS if set, else the CPUs this process may use.
ThreadPool& pool();

// Splits [0, n) into contiguous ranges of at least `grain` items and calls fn(begin, end) on each,
// spread over the pool (a few parts per thread, so a core busy with something else does not stall it).
void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

// The same split, also passing each range's part index (0 .. max_parts(n) - 1, fixed by n and grain
// alone): a reduction that keeps one partial result per part and adds them in part order gives the same
// bits whichever thread ran which part.
void parallel_parts(size_t n, size_t grain, const std::function<void(int, size_t, size_t)>& fn);
int max_parts();

}  // namespace hjepa_kernels
