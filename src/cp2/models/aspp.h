// DeepLabV3 ASPP head with mmsegmentation's ASPPHead parameter names
// (image_pool.1.conv/bn, aspp_modules.N.conv/bn, bottleneck.conv/bn, conv_seg) and the
// CP² projection contrast_conv.0/.2 (SPEC §2).
#pragma once
#include <torch/nn/module.h>
#include "cp2/models/batchnorm.h"
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>

#include <vector>

namespace cp2::models {

struct ASPPHeadOptions {
  int in_channels = 2048;
  int channels = 512;
  std::vector<int> dilations{1, 6, 12, 18};
  int proj_channels = 128;  // contrast_conv output (pretraining); 0 = no projection
  int num_classes = 0;      // conv_seg output (finetuning); 0 = no classifier
  double dropout = 0.1;     // before conv_seg (mmsegmentation uses Dropout2d)
  bool align_corners = false;

  void validate() const;
};

// mmcv's ConvModule: conv (no bias, a BN follows) -> bn -> ReLU.
class ConvModuleImpl : public torch::nn::Module {
 public:
  ConvModuleImpl(int64_t in, int64_t out, int64_t k, int64_t pad, int64_t dil);
  torch::Tensor forward(torch::Tensor x);

  torch::nn::Conv2d conv{nullptr};
  SyncableBatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvModule);

class ASPPHeadImpl : public torch::nn::Module {
 public:
  explicit ASPPHeadImpl(const ASPPHeadOptions& opt = {});
  // Bottleneck output (channels x H/s x W/s): the shared dense feature.
  torch::Tensor features(const torch::Tensor& x);
  // contrast_conv(features): the CP² projection (before L2 normalisation).
  torch::Tensor project(const torch::Tensor& feat);
  // conv_seg(dropout(features)): class logits at feature resolution.
  torch::Tensor classify(const torch::Tensor& feat);
  const ASPPHeadOptions& options() const { return opt_; }

  torch::nn::Sequential image_pool{nullptr};
  torch::nn::ModuleList aspp_modules{nullptr};
  ConvModule bottleneck{nullptr};
  torch::nn::Sequential contrast_conv{nullptr};
  torch::nn::Dropout2d dropout{nullptr};
  torch::nn::Conv2d conv_seg{nullptr};

 private:
  ASPPHeadOptions opt_;
};
TORCH_MODULE(ASPPHead);

}  // namespace cp2::models
