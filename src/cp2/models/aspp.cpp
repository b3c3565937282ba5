#include "cp2/models/aspp.h"

#include <torch/nn/functional/upsampling.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/pooling.h>

#include "cp2/common.h"
#include "cp2/compute/conv.h"

namespace cp2::models {

namespace nn = torch::nn;

void ASPPHeadOptions::validate() const {
  if (in_channels <= 0 || channels <= 0)
    throw Error("head.channels: expected positive channel counts, found in=" + std::to_string(in_channels) +
                " channels=" + std::to_string(channels));
  if (dilations.empty()) throw Error("head.dilations: expected at least one dilation, found none");
  for (int d : dilations)
    if (d < 1) throw Error("head.dilations: expected values >= 1, found " + std::to_string(d));
  if (proj_channels < 0 || num_classes < 0)
    throw Error("head: proj_channels and num_classes must be >= 0");
  if (dropout < 0 || dropout >= 1) throw Error("head.dropout: expected 0 <= p < 1, found " + num_str(dropout));
}

ConvModuleImpl::ConvModuleImpl(int64_t in, int64_t out, int64_t k, int64_t pad, int64_t dil)
    : conv(register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, k).padding(pad).dilation(dil).bias(false)))),
      bn(register_module("bn", SyncableBatchNorm2d(out))) {}

// compute::conv2d drops the taps that only read padding (ASPP's rates on small maps) and runs
// rates that read the image in part as tap GEMMs under the fast algorithms (compute/conv.h).
// ReLU in place, as mmcv ConvModule(inplace=True) and torchvision (the batch norm keeps its
// input, not its output): no new tensor per activation (R50 512² step: 35.5 -> 13.9 ms); or
// in one pass with the batch norm (compute/bn_act.h).
torch::Tensor ConvModuleImpl::forward(torch::Tensor x) { return bn->forward_relu(compute::conv2d(*conv, x)); }

ASPPHeadImpl::ASPPHeadImpl(const ASPPHeadOptions& opt) : opt_(opt) {
  opt_.validate();
  image_pool = register_module(
      "image_pool", nn::Sequential(nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)),
                                   ConvModule(opt_.in_channels, opt_.channels, 1, 0, 1)));
  aspp_modules = register_module("aspp_modules", nn::ModuleList());
  for (int d : opt_.dilations) {
    // mmsegmentation: 1x1 conv for dilation 1, otherwise 3x3 with padding = dilation.
    aspp_modules->push_back(d == 1 ? ConvModule(opt_.in_channels, opt_.channels, 1, 0, 1)
                                   : ConvModule(opt_.in_channels, opt_.channels, 3, d, d));
  }
  int64_t cat = static_cast<int64_t>(opt_.dilations.size() + 1) * opt_.channels;
  bottleneck = register_module("bottleneck", ConvModule(cat, opt_.channels, 3, 1, 1));
  if (opt_.proj_channels > 0) {
    contrast_conv = register_module(
        "contrast_conv", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(opt_.channels, opt_.channels, 1)), nn::ReLU(),
                                        nn::Conv2d(nn::Conv2dOptions(opt_.channels, opt_.proj_channels, 1))));
  }
  if (opt_.num_classes > 0) {
    dropout = register_module("dropout", nn::Dropout2d(nn::Dropout2dOptions(opt_.dropout)));
    conv_seg = register_module("conv_seg", nn::Conv2d(nn::Conv2dOptions(opt_.channels, opt_.num_classes, 1)));
  }
}

torch::Tensor ASPPHeadImpl::features(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  const auto pooled = image_pool->forward(x);  // (N, channels, 1, 1)
  std::vector<torch::Tensor> outs;
  for (const auto& m : *aspp_modules) outs.push_back(m->as<ConvModuleImpl>()->forward(x));
  // Upsampled from 1×1, the image-pool branch is constant over the map: under the fast
  // algorithms its channels of the bottleneck's products are made once per image
  // (compute/conv.h), not concatenated.
  if (compute::pooled_runs(*bottleneck->conv, pooled, outs))
    return bottleneck->bn->forward_relu(compute::conv2d_pooled(*bottleneck->conv, pooled, outs));
  std::vector<int64_t> size{x.size(2), x.size(3)};
  outs.insert(outs.begin(), F::interpolate(pooled, F::InterpolateFuncOptions()
                                                       .size(size)
                                                       .mode(torch::kBilinear)
                                                       .align_corners(opt_.align_corners)));
  return bottleneck(torch::cat(outs, 1));
}

torch::Tensor ASPPHeadImpl::project(const torch::Tensor& feat) {
  if (!contrast_conv) throw Error("model has no projection head (head.proj_channels = 0)");
  return contrast_conv->forward(feat);
}

torch::Tensor ASPPHeadImpl::classify(const torch::Tensor& feat) {
  if (!conv_seg) throw Error("model has no classifier (head.num_classes = 0)");
  return conv_seg(dropout(feat));
}

}  // namespace cp2::models
