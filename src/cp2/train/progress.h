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

// Watches the share of time the step waits for batches. Loader threads at SCHED_IDLE
// (data.priority auto/idle: right for a dedicated machine) get no CPU at all while another
// process keeps the cores busy; one finetuning beside a build waited 121 s for data that
// way. Under data.priority auto the first starved window raises the loader to normal
// priority; otherwise, or when that is not enough, the advice names the key that helps.
struct DataWaitVerdict {
  std::string message;          // "" = nothing to say
  bool raise_priority = false;  // the caller moves its loader threads to "normal"
};
class DataWaitWatch {
 public:
  DataWaitWatch(std::string priority, int workers, double window_s = 60, double min_share = 0.25);
  // The run's running totals (seconds waited for data, seconds elapsed). Each window of at
  // least window_s seconds is judged on its own share; a window that waited >= min_share of
  // it gets a verdict. Advice is given once per run; under auto the raise comes first.
  DataWaitVerdict update(double wait_s, double elapsed_s);
  // Seconds that were neither training nor waiting for data (evaluation, checkpoint writes):
  // left out of the windows, so a window holding an evaluation is judged on its training time.
  void exclude(double seconds) { excluded_ += seconds; }

 private:
  std::string priority_;
  int workers_;
  double window_s_, min_share_;
  double wait0_ = 0, el0_ = 0, excluded_ = 0;
  bool said_ = false;
};

}  // namespace cp2::train
