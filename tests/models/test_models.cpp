#include <torch/torch.h>

#include <set>

#include "../helpers.h"
#include "cp2/io/weights.h"
#include "cp2/models/init.h"
#include "cp2/models/segmentor.h"

using namespace cp2;

namespace {

TEST(ResNet, OutputStrideAndChannelsForAnyInputSize) {
  struct C { int depth, os, ch; };
  for (C c : {C{18, 8, 512}, C{18, 16, 512}, C{18, 32, 512}, C{34, 16, 512}, C{50, 16, 2048}, C{50, 8, 2048}}) {
    models::ResNetOptions o;
    o.depth = c.depth;
    o.output_stride = c.os;
    models::ResNet net(o);
    net->eval();
    torch::NoGradGuard ng;
    auto outs = net->forward(torch::randn({1, 3, 97, 130}));
    ASSERT_EQ(outs.size(), 4u);
    auto y = outs.back();
    EXPECT_EQ(y.size(1), c.ch);
    // conv (stride 2, pad 3) + maxpool + stages: ceil-like division of 97 x 130
    int64_t h = (97 + 1) / 2, w = (130 + 1) / 2;
    h = (h + 1) / 2; w = (w + 1) / 2;
    for (int s = 2; s <= 32 / 4 && 4 * s <= c.os; s *= 2) { h = (h + 1) / 2; w = (w + 1) / 2; }
    EXPECT_EQ(y.size(2), h) << "depth " << c.depth << " os " << c.os;
    EXPECT_EQ(y.size(3), w);
  }
}

TEST(ResNet, DilationScheduleFollowsMmseg) {
  models::ResNetOptions o;
  o.depth = 18;
  o.output_stride = 8;
  models::ResNet net(o);
  auto b = [&](torch::nn::Sequential& l, int i) { return l[i]->as<models::BasicBlockImpl>(); };
  EXPECT_EQ(b(net->layer3, 0)->conv1->options.dilation()->at(0), 1);  // contracted: 2 / 2
  EXPECT_EQ(b(net->layer3, 0)->conv1->options.stride()->at(0), 1);
  EXPECT_EQ(b(net->layer3, 1)->conv1->options.dilation()->at(0), 2);
  EXPECT_EQ(b(net->layer3, 1)->conv2->options.dilation()->at(0), 1);  // BasicBlock conv2 stays undilated
  EXPECT_EQ(b(net->layer4, 0)->conv1->options.dilation()->at(0), 2);  // contracted: 4 / 2
  EXPECT_EQ(b(net->layer4, 1)->conv1->options.dilation()->at(0), 4);
  EXPECT_EQ(b(net->layer4, 0)->downsample[0]->as<torch::nn::Conv2dImpl>()->options.stride()->at(0), 1);
}

TEST(Segmentor, ParameterNamesFollowMmsegAndTorchvision) {
  models::SegmentorOptions so;
  so.head.num_classes = 21;
  models::Segmentor seg(so);
  std::set<std::string> names;
  for (auto& [k, t] : io::state_dict(*seg)) names.insert(k);
  for (const char* k : {"backbone.conv1.weight", "backbone.bn1.running_var", "backbone.bn1.num_batches_tracked",
                        "backbone.layer3.0.downsample.0.weight", "backbone.layer3.0.downsample.1.weight",
                        "backbone.layer4.2.conv3.weight", "decode_head.image_pool.1.conv.weight",
                        "decode_head.image_pool.1.bn.running_mean", "decode_head.aspp_modules.2.conv.weight",
                        "decode_head.aspp_modules.3.bn.bias", "decode_head.bottleneck.conv.weight",
                        "decode_head.contrast_conv.0.weight", "decode_head.contrast_conv.0.bias",
                        "decode_head.contrast_conv.2.weight", "decode_head.conv_seg.weight", "decode_head.conv_seg.bias"})
    EXPECT_TRUE(names.count(k)) << k;
  EXPECT_FALSE(names.count("decode_head.image_pool.1.conv.bias"));  // conv before BN has no bias
  EXPECT_EQ(names.size(), 318u + 36u + 4u + 2u);  // torchvision resnet50 without fc + ASPP(5 ConvModules + bottleneck) + proj + cls
}

TEST(Segmentor, OutputsForAnyInputSize) {
  models::SegmentorOptions so;
  so.backbone.depth = 18;
  so.head.num_classes = 5;
  models::Segmentor seg(so);
  seg->eval();
  torch::NoGradGuard ng;
  for (auto hw : {std::pair<int, int>{96, 96}, {224, 224}, {65, 129}}) {
    auto x = torch::randn({2, 3, hw.first, hw.second});
    auto p = seg->project(x);
    EXPECT_EQ(p.size(1), 128);
    EXPECT_EQ(p.size(2), (hw.first + 15) / 16);
    EXPECT_EQ(p.size(3), (hw.second + 15) / 16);
    auto y = seg->predict(x);
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, hw.first, hw.second}));
  }
}

TEST(Init, MmsegSchemeAndSeeded) {
  models::SegmentorOptions so;
  so.backbone.depth = 18;
  so.head.num_classes = 21;
  models::Segmentor a(so), b(so), c(so);
  models::init_weights(*a, 5);
  models::init_weights(*b, 5);
  models::init_weights(*c, 6);
  auto sa = io::state_dict(*a), sb = io::state_dict(*b), sc = io::state_dict(*c);
  bool any_diff = false;
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
    any_diff |= !torch::equal(sa[i].second, sc[i].second);
  }
  EXPECT_TRUE(any_diff);
  auto blk = a->backbone->layer2[1]->as<models::BasicBlockImpl>();
  EXPECT_EQ(blk->bn2->weight.abs().sum().item<float>(), 0.f);  // zero_init_residual
  EXPECT_EQ(blk->bn1->weight.min().item<float>(), 1.f);
  // Kaiming normal, fan_out, ReLU: std = sqrt(2 / (out * k * k)).
  auto w = a->backbone->layer3[0]->as<models::BasicBlockImpl>()->conv1->weight;
  double expect = std::sqrt(2.0 / (256 * 9));
  EXPECT_NEAR(w.std().item<double>(), expect, 0.05 * expect);
  auto cls = a->decode_head->conv_seg;
  EXPECT_NEAR(cls->weight.std().item<double>(), 0.01, 0.001);
  EXPECT_EQ(cls->bias.abs().sum().item<float>(), 0.f);
}

TEST(Options, BadValuesNameTheKey) {
  models::ResNetOptions o;
  o.depth = 20;
  cp2::test::expect_error([&] { o.validate(); }, {"model.depth", "18, 34, 50 or 101", "20"});
  o.depth = 50;
  o.output_stride = 4;
  cp2::test::expect_error([&] { o.validate(); }, {"model.output_stride", "found 4"});
  models::ASPPHeadOptions h;
  h.dropout = 1.5;
  cp2::test::expect_error([&] { h.validate(); }, {"head.dropout", "1.5"});
}

}  // namespace

namespace cp2::test {
namespace {

// ConvModule's forward (compute::conv2d: dilated 3x3 convs drop the taps that only read
// padding, ASPP's rates on small maps) equals the plain convolution, outputs and gradients,
// where taken and not.
TEST(AsppConv, PrunedTapsEqualPlainConvolution) {
  torch::manual_seed(3);
  for (int64_t d : {2, 6, 12, 18})
    for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{5, 6}, {14, 14}, {10, 23}, {40, 40}}) {
      // 16 output channels: see DilatedTaps.CentreTapsWhereOuterTapsReadOnlyPadding.
      models::ConvModule m(16, 16, 3, d, d);
      auto x = torch::randn({2, 16, hw.first, hw.second}, torch::requires_grad());
      auto y = m->forward(x);  // tap sums where they save work
      auto gy = torch::randn_like(y);
      auto gx = torch::autograd::grad({y}, {x, m->conv->weight}, {gy});
      auto ref = torch::relu(m->bn(m->conv(x)));  // the module's plain conv
      auto gref = torch::autograd::grad({ref}, {x, m->conv->weight}, {gy});
      EXPECT_LE(max_rel(y, ref), 1e-5) << d << " " << hw.first << "x" << hw.second;
      EXPECT_LE(max_rel(gx[0], gref[0]), 1e-5) << d;
      EXPECT_LE(max_rel(gx[1], gref[1]), 1e-5) << d;
    }
}

}  // namespace
}  // namespace cp2::test
