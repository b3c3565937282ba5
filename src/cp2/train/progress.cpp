#include "cp2/train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

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
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

}  // namespace cp2::train
