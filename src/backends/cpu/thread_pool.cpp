#include "backends/cpu/thread_pool.h"

namespace dc::cpu {

ThreadPool::ThreadPool(unsigned threads) : size_(threads < 1 ? 1 : threads) {
  workers_.reserve(size_ - 1);
  try {
    for (unsigned w = 1; w < size_; ++w) workers_.emplace_back(&ThreadPool::worker_loop, this, w);
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    throw;
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::drain(unsigned worker) {
  for (;;) {
    const uint64_t t = next_.fetch_add(1, std::memory_order_relaxed);
    if (t >= tasks_) return;
    fn_(ctx_, t, worker);
  }
}

void ThreadPool::dispatch(uint64_t tasks, TaskFn fn, void* ctx) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = fn;
    ctx_ = ctx;
    tasks_ = tasks;
    next_.store(0, std::memory_order_relaxed);
    busy_ = static_cast<unsigned>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();
  drain(0);
  // Wait until every worker has left this job, so the next dispatch cannot race with a straggler
  // that still reads fn_/ctx_ (and so the caller's stack-held callable outlives its use).
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return busy_ == 0; });
}

void ThreadPool::worker_loop(unsigned worker) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    drain(worker);
    bool last;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last = --busy_ == 0;
    }
    if (last) done_.notify_one();
  }
}

}  // namespace dc::cpu
