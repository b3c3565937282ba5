// SGD (momentum, weight decay) and AdamW with PyTorch's update rules (torch.optim.SGD /
// AdamW, 1.13), written out so their state is plain named tensors: checkpointable,
// device-generic and identical across LibTorch versions (whose Optimizer state maps differ).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace cp2::dist {
class GradientReducer;
}

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
  // Dynamic loss scaling (train.loss_scale; torch.cuda.amp.GradScaler's rule, written out so
  // it runs on any device): backward() of scaled(loss); step() divides the gradients by the
  // scale and, where any is not finite, skips the update and halves the scale; after
  // `growth_interval` finite steps in a row (GradScaler's 2000) it doubles it.
  void enable_loss_scaling(double init_scale, int64_t growth_interval = 2000);
  at::Tensor scaled(const at::Tensor& loss) const;  // loss × scale, or loss without scaling
  bool loss_scaling() const { return scaling_; }
  double loss_scale() const { return scale_; }
  int64_t skipped_steps() const { return skipped_; }
  void zero_grad();
  // Parameters without a gradient are skipped, as in PyTorch. False where loss scaling found
  // a non-finite gradient and skipped the update (one host read of a flag per step). It is
  // the three parts below in order, which a CUDA graph runs apart (pretrain/graph_step.h).
  bool step(double lr);
  // Loss scaling's parts of step(): divide the gradients by the scale and return, on their
  // device and without reading it, whether every one is finite (true without gradients);
  // then, with that flag read, settle_scale skips the step (as skip_step) or counts it
  // towards growing the scale, and returns the flag; update applies the rule at `lr`.
  at::Tensor unscale_grads();
  bool settle_scale(bool grads_finite);
  void update(double lr);
  // A step whose loss is not finite (a forward overflow in fp16), with loss scaling on: what
  // step() does for non-finite gradients, without the backward pass that would make them
  // (GradScaler's loop backpropagates the non-finite loss, then skips): the skip is counted,
  // the scale halved, and the run stopped once no scale helps.
  void skip_step();
  // "momentum_buffer.<param>" (sgd) or "exp_avg.<param>", "exp_avg_sq.<param>", "step" (adamw);
  // with loss scaling also "loss_scale", "loss_scale_growth" and "loss_scale_skipped" (a
  // state without them, from a run without scaling, starts from the first scale).
  NamedTensors state() const;
  // Strict: every buffer present with the right shape; throws naming `source` and the key.
  void load_state(const NamedTensors& s, const std::string& source);
  const OptimOptions& options() const { return opt_; }
  // Steps taken (AdamW's bias correction counts them; saved as "step"). set_steps is for a
  // CUDA graph, whose replays step without calling step().
  int64_t steps() const { return steps_; }
  void set_steps(int64_t n) { steps_ = n; }

 private:
  NamedTensors params_;
  OptimOptions opt_;
  std::vector<at::Tensor> buf1_, buf2_;  // momentum / exp_avg, exp_avg_sq (undefined until the first step)
  int64_t steps_ = 0;
  bool scaling_ = false;
  double scale_ = 1.0;
  int64_t growth_interval_ = 0, growth_ = 0, skipped_ = 0;
  void sgd_step(double lr);
  bool sgd_one_pass(size_t i, double lr);  // parameter i by train/sgd_fma.h, where it applies
};

// A training step's backward pass (pretraining's and finetuning's alike): the gradients of
// opt.scaled(loss), set afresh, with `reducer` averaging them over ranks (null: one process).
// The steps run it before they read their logged numbers, so that on a GPU the host's one
// wait of the step comes with the backward pass already queued (the authors' loop reads
// loss.item() between forward and backward: the card then idles while the host issues the
// backward pass).
void backward(Optimizer& opt, const at::Tensor& loss, dist::GradientReducer* reducer = nullptr);
// The update after backward(): a loss that is not finite updates nothing and, with loss
// scaling, counts as a skipped step (GradScaler's loop; callers pass a loss averaged over
// ranks, so every rank agrees); a finite one runs opt.step(lr). True where the weights were
// updated.
bool step_if_finite(Optimizer& opt, bool finite, double lr);
// A step's logged numbers, kept on the model's device until now, as doubles: the one
// device-to-host read of the step (after backward(), above). `who` and `source` name the
// caller and what wrote them in the error for a tensor that does not hold `count` numbers.
std::vector<double> read_numbers(const at::Tensor& values, int64_t count, const std::string& who,
                                 const std::string& source);

}  // namespace cp2::train
