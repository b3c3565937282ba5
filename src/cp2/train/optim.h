// SGD (momentum, weight decay) and AdamW with PyTorch's update rules (torch.optim.SGD /
// AdamW, 1.13), written out so their state is plain named tensors: checkpointable,
// device-generic and identical across LibTorch versions (whose Optimizer state maps differ).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace cp2::train {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct OptimOptions {
  std::string name = "sgd";  // sgd | adamw
  double lr = 0.015;         // at batch 256; scaled linearly with the batch (SPEC §5)
  double momentum = 0.9;     // sgd
  double weight_decay = 1e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adamw
  // cosine-epoch: lr·½(1 + cos(π·epoch/epochs)) as the authors; cosine-iter: the same
  // on the fractional epoch; poly: (lr - min_lr)·(1 - t/T)^power + min_lr per iteration
  // (mmsegmentation's finetuning); constant.
  std::string schedule = "cosine-epoch";
  double power = 0.9, min_lr = 1e-4;  // poly
  void validate() const;
};

// Learning rate at (epoch, iteration within it).
double scheduled_lr(const OptimOptions& o, double lr0, int64_t epoch, int64_t iter, int64_t iters_per_epoch,
                    int64_t epochs);

class Optimizer {
 public:
  Optimizer(NamedTensors params, OptimOptions o);
  void zero_grad();
  void step(double lr);  // parameters without a gradient are skipped, as in PyTorch
  // "momentum_buffer.<param>" (sgd) or "exp_avg.<param>", "exp_avg_sq.<param>", "step" (adamw).
  NamedTensors state() const;
  // Strict: every buffer present with the right shape; throws naming `source` and the key.
  void load_state(const NamedTensors& s, const std::string& source);
  const OptimOptions& options() const { return opt_; }

 private:
  NamedTensors params_;
  OptimOptions opt_;
  std::vector<at::Tensor> buf1_, buf2_;  // momentum / exp_avg, exp_avg_sq (undefined until the first step)
  int64_t steps_ = 0;
};

}  // namespace cp2::train
