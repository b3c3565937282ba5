// ResNet-18/34/50/101 with torchvision's parameter names (conv1, bn1, layerN.M.convK,
// downsample.0/1) and mmsegmentation's dilation schedule for output stride 8/16/32.
#pragma once
#include <torch/nn/module.h>
#include "cp2/models/batchnorm.h"
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/pooling.h>

#include <array>
#include <vector>

namespace cp2::models {

struct ResNetOptions {
  int depth = 50;           // 18, 34, 50 or 101
  int output_stride = 16;   // 8, 16 or 32
  // mmsegmentation's contract_dilation: the first block of a dilated stage uses half the
  // dilation (the same thing torchvision's replace_stride_with_dilation does).
  bool contract_dilation = true;

  void validate() const;
  bool bottleneck() const { return depth >= 50; }
  std::array<int, 4> blocks() const;
  std::array<int, 4> strides() const;    // per stage, on the first block
  std::array<int, 4> dilations() const;  // per stage
  int out_channels() const { return bottleneck() ? 2048 : 512; }
};

// mmsegmentation's BasicBlock: only conv1 is dilated; conv2 stays at dilation 1.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, int64_t dilation, bool downsample);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  SyncableBatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(BasicBlock);

// torchvision's Bottleneck (ResNet v1.5 / "v1b"): the stride sits on the 3x3 conv2.
class BottleneckImpl : public torch::nn::Module {
 public:
  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride, int64_t dilation, bool downsample);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  SyncableBatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

class ResNetImpl : public torch::nn::Module {
 public:
  explicit ResNetImpl(const ResNetOptions& opt = {});
  // Outputs of layer1..layer4 (strides 4, 8, 16/8, 32/16/8).
  std::vector<torch::Tensor> forward(torch::Tensor x);
  const ResNetOptions& options() const { return opt_; }

  torch::nn::Conv2d conv1{nullptr};
  SyncableBatchNorm2d bn1{nullptr};
  torch::nn::MaxPool2d maxpool{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};

 private:
  ResNetOptions opt_;
};
TORCH_MODULE(ResNet);

}  // namespace cp2::models
