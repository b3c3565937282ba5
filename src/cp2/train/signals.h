// SIGINT, SIGTERM, SIGUSR1 or SIGUSR2 during training (preemptible clusters send SIGTERM
// before the kill; SLURM's --signal=USR1@120 and submitit's timeout send USR1/USR2 ahead of
// the time limit, and would otherwise kill the process, their default action): the first one
// asks the loop to finish its step, write a checkpoint and exit 128 + the signal (130, 143,
// 138, 140); a second one exits at once.
#pragma once
#include "cp2/common.h"

namespace cp2::train {

class StopSignals {
 public:
  StopSignals();   // installs the handlers (restored by the destructor)
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The signal received (one of stop_signals), 0 if none.
  static int received();
  static void reset();  // tests: forget a handled signal
};

}  // namespace cp2::train
