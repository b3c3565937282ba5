#include "cp2/train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

namespace cp2::train {

std::string fmt_time(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  long t = std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

Progress::Progress(bool enabled, int64_t log_every)
    : enabled_(enabled), tty_(isatty(fileno(stderr))), every_(std::max<int64_t>(log_every, 1)) {}

void Progress::update(const std::string& line, int64_t step, bool force) {
  if (!enabled_) return;
  if (tty_) {
    std::fprintf(stderr, "\r%-*s", static_cast<int>(std::max<size_t>(width_, line.size())), line.c_str());
    width_ = line.size();
    std::fflush(stderr);
  } else if (force || step % every_ == 0) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

void Progress::message(const std::string& msg) {
  if (!enabled_) return;
  if (tty_ && width_) std::fprintf(stderr, "\n");
  width_ = 0;
  std::fprintf(stderr, "%s\n", msg.c_str());
}

void Progress::done() {
  if (enabled_ && tty_ && width_) std::fprintf(stderr, "\n");
  width_ = 0;
}

std::string bar(int64_t done, int64_t total, int width) {
  const int filled = static_cast<int>(width * std::min(done, total) / std::max<int64_t>(total, 1));
  std::string s = "[";  // not "[" + ...: GCC 12 warns falsely on it in C++20 (-Wstringop-overflow)
  s.append(filled, '#').append(width - filled, '.');
  return s + "]";
}

DataWaitWatch::DataWaitWatch(std::string priority, int workers, double window_s, double min_share)
    : priority_(std::move(priority)), workers_(workers), window_s_(window_s), min_share_(min_share) {}

DataWaitVerdict DataWaitWatch::update(double wait_s, double elapsed_s) {
  const double train_s = elapsed_s - excluded_;
  const double span = train_s - el0_;
  if (said_ || span < window_s_) return {};
  const double share = (wait_s - wait0_) / span;
  wait0_ = wait_s;
  el0_ = train_s;
  if (share < min_share_) return {};
  char head[160];
  std::snprintf(head, sizeof head, "data: the step waited for its batches %.0f %% of the last %.0f s (%.1f s). ",
                100 * std::min(share, 1.0), span, share * span);
  const bool one = workers_ == 1;
  const std::string threads = std::to_string(workers_) + (one ? " loader thread" : " loader threads");
  if (workers_ == 0) {
    said_ = true;
    return {head + std::string("Images load on the training thread (data.workers: 0); set data.workers to 1 or more.")};
  }
  if (priority_ == "auto") {  // watch on at normal priority: if that is not enough either, say so
    priority_ = "normal";
    return {head + ("The " + threads +
                    " ran at SCHED_IDLE, which gets no CPU while other processes keep the cores busy; they run at "
                    "normal priority from now on (data.priority: auto; idle keeps them idle)."),
            true};
  }
  said_ = true;
  if (priority_ == "idle" || priority_ == "low")
    return {head + ("The " + threads + (one ? " runs" : " run") + " at data.priority: " + priority_ + " (" +
                    (priority_ == "idle" ? "SCHED_IDLE" : "nice 19") +
                    "), which gets little or no CPU while other processes keep the cores busy; on a shared machine "
                    "set data.priority: normal or auto (--set data.priority=auto).")};
  return {head + ("The " + threads + " (data.priority: " + priority_ +
                  (one ? ") is" : ") are") + " slower than the step; more of them (data.workers) or fewer cores for "
                  "the step (--threads) would balance it.")};
}

}  // namespace cp2::train
