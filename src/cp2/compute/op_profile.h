// Where a training step's time goes, op by op (issue 11 §4: "what the profile shows next"):
// one global RecordFunction callback times every ATen op, autograd node and cp2 scope
// (RECORD_USER_SCOPE: the Winograd and tap-GEMM forwards, the optimizer update) on every thread, and
// splits each one's time into its own and its children's, as torch.profiler's "self CPU"
// column. `cp2 bench pretrain|finetune --profile N` prints the N ops with the most self
// time. On CUDA the times are those of the calls on the CPU (launches), not of the kernels.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cp2::compute {

struct OpTime {
  std::string name;  // "aten::native_batch_norm", "autograd::engine::evaluate_function: ...", "cp2::..."
  int64_t calls = 0;
  double self_s = 0, total_s = 0;  // seconds: without and with the ops it called
};

struct OpProfile {
  std::vector<OpTime> ops;  // most self time first
  double wall_s = 0;        // of the profiled calls, on the calling thread
  double top_level_s = 0;   // total time of the outermost ops (on the calling thread)
  int steps = 0;
};

// Times ops while alive; one at a time (a second throws).
class OpProfiler {
 public:
  OpProfiler();
  ~OpProfiler();
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;
  std::vector<OpTime> result() const;  // most self time first

 private:
  uint64_t handle_;
};

// `step` run `steps` times under an OpProfiler (after the caller's warm-up).
OpProfile profile_steps(const std::function<void()>& step, int steps);

// The table `cp2 bench --profile N` prints: the N ops with the most self time, in ms per
// step and % of the wall time, then "outside any op" (cp2's own code between ops).
std::string profile_table(const OpProfile& p, int top);

}  // namespace cp2::compute
