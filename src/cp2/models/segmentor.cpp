#include "cp2/models/segmentor.h"

#include <torch/nn/functional/upsampling.h>

#include "cp2/compute/winograd.h"

namespace cp2::models {

void SegmentorOptions::validate() const {
  backbone.validate();
  head.validate();
}

SegmentorImpl::SegmentorImpl(SegmentorOptions opt) : opt_(std::move(opt)) {
  opt_.head.in_channels = opt_.backbone.out_channels();
  opt_.validate();
  backbone = register_module("backbone", ResNet(opt_.backbone));
  decode_head = register_module("decode_head", ASPPHead(opt_.head));
}

void SegmentorImpl::set_numerics(const compute::Numerics& n) {
  num_ = n;
  if (n.channels_last) compute::to_channels_last(*this);
}

torch::Tensor SegmentorImpl::encode(const torch::Tensor& x) {
  return backbone->forward(compute::in_layout(x, num_)).back();
}

// Under bf16 autocast the network's outputs come back in fp32: losses, softmax and the
// normalisation of CP²'s projections stay in fp32.
torch::Tensor SegmentorImpl::fp32(const torch::Tensor& t) const { return num_.amp() ? t.to(torch::kFloat) : t; }

torch::Tensor SegmentorImpl::features(const torch::Tensor& x) {
  compute::AutocastScope ac(num_, x.is_cuda());
  compute::WinogradScope wg(num_.winograd);
  return fp32(decode_head->features(encode(x)));
}

torch::Tensor SegmentorImpl::project(const torch::Tensor& x) {
  compute::AutocastScope ac(num_, x.is_cuda());
  compute::WinogradScope wg(num_.winograd);
  return fp32(decode_head->project(decode_head->features(encode(x))));
}

torch::Tensor SegmentorImpl::logits(const torch::Tensor& x) {
  compute::AutocastScope ac(num_, x.is_cuda());
  compute::WinogradScope wg(num_.winograd);
  return fp32(decode_head->classify(decode_head->features(encode(x))));
}

torch::Tensor SegmentorImpl::predict(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  return F::interpolate(logits(x), F::InterpolateFuncOptions()
                                       .size(std::vector<int64_t>{x.size(2), x.size(3)})
                                       .mode(torch::kBilinear)
                                       .align_corners(opt_.head.align_corners));
}

}  // namespace cp2::models
