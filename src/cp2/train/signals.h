// SIGINT / SIGTERM during training (preemptible clusters send SIGTERM before the kill):
// the first one asks the loop to finish its step, write a checkpoint and exit 130/143;
// a second one exits at once.
#pragma once

namespace cp2::train {

class StopSignals {
 public:
  StopSignals();   // installs the handlers (restored by the destructor)
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The signal received (SIGINT or SIGTERM), 0 if none.
  static int received();
  static void reset();  // tests: forget a handled signal
};

}  // namespace cp2::train
