#include "cp2/models/segmentor.h"

#include <torch/nn/functional/upsampling.h>

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

torch::Tensor SegmentorImpl::features(const torch::Tensor& x) { return decode_head->features(backbone->forward(x).back()); }

torch::Tensor SegmentorImpl::project(const torch::Tensor& x) { return decode_head->project(features(x)); }

torch::Tensor SegmentorImpl::logits(const torch::Tensor& x) { return decode_head->classify(features(x)); }

torch::Tensor SegmentorImpl::predict(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  return F::interpolate(logits(x), F::InterpolateFuncOptions()
                                       .size(std::vector<int64_t>{x.size(2), x.size(3)})
                                       .mode(torch::kBilinear)
                                       .align_corners(opt_.head.align_corners));
}

}  // namespace cp2::models
