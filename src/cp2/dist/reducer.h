// Data parallelism on c10d's collectives (LibTorch has no C++ DistributedDataParallel):
// parameters and buffers broadcast from rank 0, gradients averaged over ranks in flat
// buckets of a few MB, each bucket's all-reduce launched from a gradient hook as soon as
// its last gradient is ready (so communication overlaps the rest of the backward pass,
// as DDP's reducer does), all waited before the optimizer step.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cp2/dist/comm.h"

namespace torch::nn {
class Module;
}

namespace cp2::dist {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Rank 0's values of `tensors` on every rank (in place), in flat chunks.
void broadcast_tensors(Comm& comm, const std::vector<at::Tensor>& tensors);
// Rank 0's parameters and buffers of `m` on every rank (the start of a data-parallel run,
// after --init or --resume).
void broadcast_module(Comm& comm, torch::nn::Module& m);

class GradientReducer {
 public:
  // `params`: the trained parameters (requires_grad), in registration order. Buckets
  // follow the reverse order, the order backward produces gradients in.
  GradientReducer(std::shared_ptr<Comm> comm, const NamedTensors& params, int64_t bucket_bytes = 4 << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Before each backward: forget the previous step's buckets.
  void prepare();
  // After backward: launch the buckets whose hooks did not (parameters without a
  // gradient this step contribute zeros), wait for all, and write the averages into the
  // parameters' .grad (only where a gradient was produced, so "no gradient" stays so).
  void finish();
  int64_t buckets() const;
  double comm_wait_seconds() const;  // time finish() waited for communication (all steps)

 private:
  struct State;
  std::shared_ptr<State> s_;
};

}  // namespace cp2::dist
