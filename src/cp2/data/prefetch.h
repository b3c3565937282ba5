// A deterministic multi-threaded batch prefetcher shared by the pretraining and the
// segmentation loaders: batch b of epoch e is built by `build(e, b)` on any worker, and
// handed out strictly in order, so results never depend on thread count or timing.
#pragma once
#include <algorithm>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace cp2::data {

// Loader threads' CPU priority (data.priority): "auto" (SCHED_IDLE until the trainer
// sees the step wait for data, then normal: see train::DataWaitWatch), "idle"
// (SCHED_IDLE), "low" (nice 19) or "normal".
const std::vector<std::string>& priority_choices();
const char* priority_help();  // the config key's help line
// Called by each worker on itself ("auto" starts as "idle"); silently keeps the normal
// priority if refused.
void set_loader_thread_priority(const std::string& priority);

template <class BatchT>
class Prefetcher {
 public:
  using BuildFn = std::function<BatchT(int64_t epoch, int64_t batch)>;

  // At most max(prefetch, workers) batches are built ahead of the consumer: a worker builds a
  // whole batch, so a window narrower than the workers would leave the rest idle (PyTorch's
  // DataLoader keeps prefetch_factor batches per worker).
  Prefetcher(BuildFn build, int workers, int prefetch, std::string priority)
      : build_(std::move(build)),
        workers_(workers),
        window_(std::max(prefetch, workers)),
        priority_(std::move(priority)) {
    spawn();
  }
  ~Prefetcher() { join(); }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Starts epoch `epoch` at batch `first`, ending before batch `end`; drops whatever was
  // prepared for an earlier start.
  void start(int64_t epoch, int64_t first, int64_t end) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++generation_;
      epoch_ = epoch;
      next_assign_ = next_consume_ = first;
      end_ = end;
      ready_.clear();
      error_ = nullptr;
    }
    cv_.notify_all();
  }

  // The next batch of the started range, or nullopt at its end. Rethrows a worker's error.
  std::optional<BatchT> next() {
    std::unique_lock<std::mutex> lk(mu_);
    if (next_consume_ >= end_) return std::nullopt;
    if (workers_ == 0) {
      const int64_t b = next_consume_++;
      lk.unlock();
      return build_(epoch_, b);
    }
    cv_.wait(lk, [this] { return error_ || ready_.count(next_consume_); });
    if (error_) std::rethrow_exception(error_);
    auto it = ready_.find(next_consume_);
    BatchT b = std::move(it->second);
    ready_.erase(it);
    ++next_consume_;
    cv_.notify_all();
    return b;
  }

  // Runs the workers at another priority from now on. A thread cannot leave SCHED_IDLE or
  // lower its nice value without privileges, so the workers are replaced by new ones (which
  // inherit the caller's priority); batches being built finish and are kept, so the
  // sequence handed out is unchanged.
  void set_priority(const std::string& priority) {
    join();
    priority_ = priority;
    stop_ = false;
    spawn();
  }

 private:
  void spawn() {
    for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { worker_loop(); });
  }
  void join() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  void worker_loop() {
    set_loader_thread_priority(priority_);
    std::unique_lock<std::mutex> lk(mu_);
    while (true) {
      cv_.wait(lk, [this] { return stop_ || (next_assign_ < end_ && next_assign_ < next_consume_ + window_); });
      if (stop_) return;
      const int64_t b = next_assign_++, epoch = epoch_;
      const uint64_t gen = generation_;
      lk.unlock();
      std::optional<BatchT> batch;
      std::exception_ptr err;
      try {
        batch = build_(epoch, b);
      } catch (...) {
        err = std::current_exception();
      }
      lk.lock();
      if (gen != generation_) continue;  // restarted meanwhile
      if (err) error_ = err;
      else ready_.emplace(b, std::move(*batch));
      cv_.notify_all();
    }
  }

  BuildFn build_;
  int workers_, window_;  // window_: batches built ahead at most
  std::string priority_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t generation_ = 0;
  int64_t epoch_ = 0, next_assign_ = 0, next_consume_ = 0, end_ = 0;
  std::map<int64_t, BatchT> ready_;
  std::exception_ptr error_;
};

}  // namespace cp2::data
