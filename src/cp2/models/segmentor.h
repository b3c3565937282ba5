// Encoder-decoder segmentor (mmsegmentation's EncoderDecoder): `backbone.` + `decode_head.`.
// With a projection it is CP²'s encoder; with a classifier it is DeepLabV3.
#pragma once
#include "cp2/compute/precision.h"
#include "cp2/models/aspp.h"
#include "cp2/models/resnet.h"

namespace cp2::models {

struct SegmentorOptions {
  ResNetOptions backbone;
  ASPPHeadOptions head;  // head.in_channels is taken from the backbone
  void validate() const;
};

class SegmentorImpl : public torch::nn::Module {
 public:
  explicit SegmentorImpl(SegmentorOptions opt = {});
  // Bottleneck features of the ASPP head (N x channels x H/s x W/s), any input size.
  torch::Tensor features(const torch::Tensor& x);
  // CP² projection output (N x proj x H/s x W/s), not normalised.
  torch::Tensor project(const torch::Tensor& x);
  // Class logits at feature resolution (N x classes x H/s x W/s).
  torch::Tensor logits(const torch::Tensor& x);
  // Class logits bilinearly resized to the input size (mmsegmentation's encode_decode).
  torch::Tensor predict(const torch::Tensor& x);
  const SegmentorOptions& options() const { return opt_; }
  // Compute in bf16 autocast and/or channels-last from now on (weights moved to that
  // layout); the four outputs above stay fp32 either way.
  void set_numerics(const compute::Numerics& n);
  const compute::Numerics& numerics() const { return num_; }

  ResNet backbone{nullptr};
  ASPPHead decode_head{nullptr};

 private:
  torch::Tensor encode(const torch::Tensor& x);  // backbone's last stage, in the numerics' layout
  torch::Tensor fp32(const torch::Tensor& t) const;
  SegmentorOptions opt_;
  compute::Numerics num_;
};
TORCH_MODULE(Segmentor);

}  // namespace cp2::models
