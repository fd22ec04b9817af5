// A small persistent pool of worker threads for the CPU backend. run(n, f) calls f(task, worker)
// for every task in [0, n) across the workers and the calling thread, and returns when all are
// done. Tasks are handed out through an atomic counter (dynamic balancing). Nothing is allocated
// per call: the callable is passed by address, so apply stays allocation-free.
// One caller at a time (a dc_context is used by one thread at a time).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace dc::cpu {

class ThreadPool {
 public:
  // `threads` is the total parallelism including the caller (>= 1); threads-1 workers are started.
  explicit ThreadPool(unsigned threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  unsigned size() const { return size_; }

  // f(uint64_t task, unsigned worker) for every task; worker < size() identifies the thread, so
  // callers can index per-thread scratch with it. f must not throw.
  template <class F>
  void run(uint64_t tasks, F& f) {
    if (tasks == 0) return;
    if (size_ == 1 || tasks == 1) {
      for (uint64_t t = 0; t < tasks; ++t) f(t, 0u);
      return;
    }
    dispatch(tasks, &ThreadPool::trampoline<F>, &f);
  }

 private:
  using TaskFn = void (*)(void* ctx, uint64_t task, unsigned worker);
  template <class F>
  static void trampoline(void* ctx, uint64_t task, unsigned worker) {
    (*static_cast<F*>(ctx))(task, worker);
  }

  void dispatch(uint64_t tasks, TaskFn fn, void* ctx);
  void worker_loop(unsigned worker);
  void drain(unsigned worker);

  unsigned size_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;  // bumped per dispatch; workers wait for a new one
  bool stop_ = false;
  // Current job (written under mu_ before the generation bump).
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  uint64_t tasks_ = 0;
  std::atomic<uint64_t> next_{0};
  unsigned busy_ = 0;  // workers still inside the current job (under mu_)
};

}  // namespace dc::cpu
