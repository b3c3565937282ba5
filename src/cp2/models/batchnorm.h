// BatchNorm2d that can synchronise its statistics across processes: torch's BatchNorm2d
// (the same parameter and buffer names, so state dicts and torchvision/mmseg files are
// unchanged; a separate class because libtorch does not export BatchNorm2dImpl's base
// for subclassing) whose training-mode forward, once given a multi-process communicator, uses
// the global batch's mean and variance and all-reduces the statistics' gradients in
// backward, as PyTorch's SyncBatchNorm (the authors finetune with mmseg's SyncBN).
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/options/batchnorm.h>

#include <memory>

namespace cp2::dist {
class Comm;
}

namespace cp2::models {

class SyncableBatchNorm2dImpl : public torch::nn::Cloneable<SyncableBatchNorm2dImpl> {
 public:
  explicit SyncableBatchNorm2dImpl(int64_t num_features)
      : SyncableBatchNorm2dImpl(torch::nn::BatchNormOptions(num_features)) {}
  explicit SyncableBatchNorm2dImpl(const torch::nn::BatchNormOptions& o);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  // Training: batch statistics (over every rank's batch when synced), running statistics
  // updated; eval: the running statistics. torch's BatchNorm2d semantics otherwise.
  torch::Tensor forward(const torch::Tensor& x) { return forward_act(x, torch::Tensor(), false); }
  // relu(forward(x) + residual) (residual optional): ResNet's and ASPP's batch norms are
  // followed by a ReLU, a block's last one after the shortcut's sum. One pass each way over
  // channels-last fp32 maps with the fast algorithms on (compute/bn_act.h), else these ops
  // as PyTorch runs them (`+=`, then relu_).
  torch::Tensor forward_relu(const torch::Tensor& x, const torch::Tensor& residual = torch::Tensor()) {
    return forward_act(x, residual, true);
  }
  void set_comm(std::shared_ptr<dist::Comm> comm) { comm_ = std::move(comm); }
  bool synced() const;

  torch::nn::BatchNormOptions options;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  torch::Tensor forward_act(const torch::Tensor& x, const torch::Tensor& residual, bool relu);
  std::shared_ptr<dist::Comm> comm_;
};
TORCH_MODULE(SyncableBatchNorm2d);

// Makes every SyncableBatchNorm2d under `m` synchronise over `comm` (nullptr or world
// size 1: plain BatchNorm). Returns how many there are.
int set_sync_bn(torch::nn::Module& m, std::shared_ptr<dist::Comm> comm);

// Whether every floating-point buffer under `m` (BatchNorm's running statistics, MoCo's
// queue) is finite: a forward pass that overflowed leaves the statistics non-finite, and no
// skipped step undoes that. One host read.
bool buffers_finite(torch::nn::Module& m);

}  // namespace cp2::models
