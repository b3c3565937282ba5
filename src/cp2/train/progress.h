// Progress output of long jobs: a line redrawn in place on a terminal, printed every
// `log_every` steps otherwise (logs of batch jobs stay readable).
#pragma once
#include <cstdint>
#include <string>

namespace cp2::train {

std::string fmt_time(double seconds);  // mm:ss or h:mm:ss

class Progress {
 public:
  Progress(bool enabled, int64_t log_every);
  void update(const std::string& line, int64_t step, bool force);
  void message(const std::string& msg);  // on its own line
  void done();

 private:
  bool enabled_, tty_;
  int64_t every_;
  size_t width_ = 0;
};

// "[#####.....]" of `width` for done/total.
std::string bar(int64_t done, int64_t total, int width = 20);

}  // namespace cp2::train
