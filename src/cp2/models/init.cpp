#include "cp2/models/init.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>

#include <cmath>

#include "cp2/models/resnet.h"

namespace cp2::models {

void init_weights(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard ng;
  torch::manual_seed(seed);
  for (const auto& item : m.named_modules()) {
    const std::string& name = item.key();
    auto& mod = item.value();
    if (auto* c = mod->as<torch::nn::Conv2dImpl>()) {
      if (name.find("contrast_conv") != std::string::npos) {
        // PyTorch's default Conv2d init (kaiming_uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))),
        // redrawn here so the whole model depends on the seed alone.
        torch::nn::init::kaiming_uniform_(c->weight, std::sqrt(5.0));
        double bound = 1.0 / std::sqrt(static_cast<double>(c->weight[0].numel()));
        torch::nn::init::uniform_(c->bias, -bound, bound);
        continue;
      }
      if (name.size() >= 8 && name.compare(name.size() - 8, 8, "conv_seg") == 0) {
        torch::nn::init::normal_(c->weight, 0, 0.01);
      } else {
        torch::nn::init::kaiming_normal_(c->weight, 0, torch::kFanOut, torch::kReLU);
      }
      if (c->bias.defined()) torch::nn::init::zeros_(c->bias);
    } else if (auto* bn = mod->as<SyncableBatchNorm2dImpl>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    }
  }
  for (const auto& mod : m.modules()) {
    if (auto* b = mod->as<BottleneckImpl>()) torch::nn::init::zeros_(b->bn3->weight);
    if (auto* b = mod->as<BasicBlockImpl>()) torch::nn::init::zeros_(b->bn2->weight);
  }
}

void randomize_bn(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  for (const auto& mod : m.modules()) {
    if (auto* bn = mod->as<SyncableBatchNorm2dImpl>()) {
      auto n = bn->weight.size(0);
      bn->weight.copy_(at::rand({n}, gen) + 0.5);
      bn->bias.copy_(at::randn({n}, gen) * 0.2);
      bn->running_mean.copy_(at::randn({n}, gen) * 0.2);
      bn->running_var.copy_(at::rand({n}, gen) + 0.5);
    }
  }
}

}  // namespace cp2::models
