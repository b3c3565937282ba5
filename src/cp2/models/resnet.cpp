#include "cp2/models/resnet.h"

#include <torch/nn/functional/activation.h>

#include "cp2/common.h"
#include "cp2/compute/conv.h"
#include "cp2/compute/pool.h"

namespace cp2::models {

namespace nn = torch::nn;

void ResNetOptions::validate() const {
  if (depth != 18 && depth != 34 && depth != 50 && depth != 101)
    throw Error("model.depth: expected 18, 34, 50 or 101, found " + std::to_string(depth));
  if (output_stride != 8 && output_stride != 16 && output_stride != 32)
    throw Error("model.output_stride: expected 8, 16 or 32, found " + std::to_string(output_stride));
}

std::array<int, 4> ResNetOptions::blocks() const {
  switch (depth) {
    case 18: return {2, 2, 2, 2};
    case 34: case 50: return {3, 4, 6, 3};
    default: return {3, 4, 23, 3};
  }
}

std::array<int, 4> ResNetOptions::strides() const {
  if (output_stride == 8) return {1, 2, 1, 1};
  if (output_stride == 16) return {1, 2, 2, 1};
  return {1, 2, 2, 2};
}

std::array<int, 4> ResNetOptions::dilations() const {
  if (output_stride == 8) return {1, 1, 2, 4};
  if (output_stride == 16) return {1, 1, 1, 2};
  return {1, 1, 1, 1};
}

namespace {
nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t pad = 0, int64_t dil = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).dilation(dil).bias(false));
}
nn::Sequential make_downsample(int64_t in, int64_t out, int64_t stride) {
  return nn::Sequential(conv(in, out, 1, stride), SyncableBatchNorm2d(out));
}
// The shortcut's 1×1 convolution through compute::conv2d (a GEMM on channels-last maps where
// the fast algorithms are on), then its batch norm: what downsample->forward(x) computes.
torch::Tensor shortcut(nn::Sequential& ds, const torch::Tensor& x) {
  return ds->ptr<SyncableBatchNorm2dImpl>(1)->forward(compute::conv2d(*ds->ptr<nn::Conv2dImpl>(0), x));
}
}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, int64_t dilation, bool ds)
    : conv1(register_module("conv1", conv(inplanes, planes, 3, stride, dilation, dilation))),
      conv2(register_module("conv2", conv(planes, planes, 3, 1, 1, 1))),
      bn1(register_module("bn1", SyncableBatchNorm2d(planes))),
      bn2(register_module("bn2", SyncableBatchNorm2d(planes))) {
  if (ds) downsample = register_module("downsample", make_downsample(inplanes, planes, stride));
}

torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  // 3x3 convolutions may run as Winograd (train.conv_algorithm; compute/winograd.h).
  auto out = bn1->forward_relu(compute::conv2d(*conv1, x));
  return bn2->forward_relu(compute::conv2d(*conv2, out), downsample ? shortcut(downsample, x) : x);
}

BottleneckImpl::BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride, int64_t dilation, bool ds)
    : conv1(register_module("conv1", conv(inplanes, planes, 1))),
      conv2(register_module("conv2", conv(planes, planes, 3, stride, dilation, dilation))),
      conv3(register_module("conv3", conv(planes, planes * 4, 1))),
      bn1(register_module("bn1", SyncableBatchNorm2d(planes))),
      bn2(register_module("bn2", SyncableBatchNorm2d(planes))),
      bn3(register_module("bn3", SyncableBatchNorm2d(planes * 4))) {
  if (ds) downsample = register_module("downsample", make_downsample(inplanes, planes * 4, stride));
}

// ReLUs in place, as torchvision's ReLU(inplace=True) (models/aspp.cpp says why), or in one
// pass with their batch norm and the shortcut's sum (compute/bn_act.h). The 1×1s may run as
// GEMMs, the 3×3 as Winograd (train.conv_algorithm; compute/conv.h).
torch::Tensor BottleneckImpl::forward(torch::Tensor x) {
  auto out = bn1->forward_relu(compute::conv2d(*conv1, x));
  out = bn2->forward_relu(compute::conv2d(*conv2, out));
  return bn3->forward_relu(compute::conv2d(*conv3, out), downsample ? shortcut(downsample, x) : x);
}

ResNetImpl::ResNetImpl(const ResNetOptions& opt) : opt_(opt) {
  opt_.validate();
  conv1 = register_module("conv1", conv(3, 64, 7, 2, 3));
  bn1 = register_module("bn1", SyncableBatchNorm2d(64));
  maxpool = register_module("maxpool", nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));
  const int expansion = opt_.bottleneck() ? 4 : 1;
  int64_t inplanes = 64;
  auto blocks = opt_.blocks();
  auto strides = opt_.strides();
  auto dilations = opt_.dilations();
  nn::Sequential* layers[4] = {&layer1, &layer2, &layer3, &layer4};
  for (int s = 0; s < 4; ++s) {
    int64_t planes = 64 << s, stride = strides[s], dil = dilations[s];
    nn::Sequential seq;
    for (int b = 0; b < blocks[s]; ++b) {
      int64_t d = (b == 0 && opt_.contract_dilation && dil > 1) ? dil / 2 : dil;
      int64_t st = b == 0 ? stride : 1;
      bool ds = b == 0 && (stride != 1 || inplanes != planes * expansion);
      if (opt_.bottleneck()) seq->push_back(Bottleneck(inplanes, planes, st, d, ds));
      else seq->push_back(BasicBlock(inplanes, planes, st, d, ds));
      inplanes = planes * expansion;
    }
    *layers[s] = register_module("layer" + std::to_string(s + 1), seq);
  }
}

std::vector<torch::Tensor> ResNetImpl::forward(torch::Tensor x) {
  x = compute::max_pool2d(*maxpool, bn1->forward_relu(conv1(x)));  // compute/pool.h
  std::vector<torch::Tensor> outs;
  for (auto* l : {&layer1, &layer2, &layer3, &layer4}) {
    x = (*l)->forward(x);
    outs.push_back(x);
  }
  return outs;
}

}  // namespace cp2::models
