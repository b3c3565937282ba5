// Parity against independent PyTorch computations (tools/make_parity_fixtures.py,
// tools/check_cpp_export.py). Tolerance: max |cpp - torch| / max |torch| <= 1e-4.
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>

#include "../helpers.h"
#include "cp2/io/keymap.h"
#include "cp2/io/weights.h"
#include "cp2/models/init.h"
#include "cp2/models/segmentor.h"

using namespace cp2;
using cp2::test::fixture;
using cp2::test::load_tensors;
using cp2::test::max_rel;

namespace {

constexpr double kTol = 1e-4;

struct ResNetCase {
  int depth, os;
  bool legacy;
};

class ResNetParity : public ::testing::TestWithParam<ResNetCase> {};

TEST_P(ResNetParity, EvalAndTrainForwardMatchTorchvision) {
  auto c = GetParam();
  std::string name = "resnet" + std::to_string(c.depth) + "_os" + std::to_string(c.os);
  auto ck = io::load_checkpoint(fixture(name + (c.legacy ? "_legacy.pt" : ".pt")));
  models::ResNetOptions o;
  o.depth = c.depth;
  o.output_stride = c.os;
  models::ResNet net(o);
  auto rep = io::load_state(*net, io::find_state_dict(ck), false, ck.path);
  EXPECT_TRUE(rep.missing.empty()) << rep.str();
  EXPECT_TRUE(rep.mismatched.empty()) << rep.str();
  EXPECT_EQ(rep.unexpected, (std::vector<std::string>{"fc.weight", "fc.bias"}));
  auto io_ = load_tensors(fixture(name + "_io.pt"));
  torch::NoGradGuard ng;
  net->eval();
  double e_eval = max_rel(net->forward(io_["input"]).back(), io_["out_eval"]);
  net->train();
  double e_train = max_rel(net->forward(io_["input"]).back(), io_["out_train"]);
  double e_stats = max_rel(net->bn1->running_mean, io_["bn1_running_mean_after_train"]);
  std::printf("[parity] %s%s eval %.2e train %.2e running_mean %.2e\n", name.c_str(), c.legacy ? " (legacy)" : "",
              e_eval, e_train, e_stats);
  EXPECT_LE(e_eval, kTol);
  EXPECT_LE(e_train, kTol);
  EXPECT_LE(e_stats, kTol);
}

INSTANTIATE_TEST_SUITE_P(All, ResNetParity,
                         ::testing::Values(ResNetCase{18, 16, false}, ResNetCase{18, 16, true}, ResNetCase{18, 8, false},
                                           ResNetCase{18, 8, true}, ResNetCase{50, 16, false}, ResNetCase{50, 16, true},
                                           ResNetCase{50, 8, false}, ResNetCase{50, 8, true}),
                         [](const auto& i) {
                           std::string s = "R";  // not "R" + ...: GCC 12 warns falsely on it in C++20
                           s += std::to_string(i.param.depth) + "_OS" + std::to_string(i.param.os);
                           return s + (i.param.legacy ? "_legacy" : "_zip");
                         });

struct SegCase {
  int depth;
  bool legacy;
};
class SegmentorParity : public ::testing::TestWithParam<SegCase> {};

models::Segmentor make_seg(int depth, int classes = 21) {
  models::SegmentorOptions so;
  so.backbone.depth = depth;
  so.head.num_classes = classes;
  return models::Segmentor(so);
}

TEST_P(SegmentorParity, ProjectionAndLogitsMatchPyTorchRebuild) {
  auto c = GetParam();
  std::string name = "seg_r" + std::to_string(c.depth) + "_os16";
  auto ck = io::load_checkpoint(fixture(name + (c.legacy ? "_legacy.pt" : ".pt")));
  auto m = io::map_to_segmentor(ck, io::Preset::Auto);
  EXPECT_EQ(m.preset, io::Preset::Mmseg);
  auto seg = make_seg(c.depth);
  io::load_state(*seg, m.tensors, /*strict=*/true, ck.path);
  auto io_ = load_tensors(fixture(name + "_io.pt"));
  torch::NoGradGuard ng;
  seg->eval();
  auto f = seg->features(io_["input"]);
  double e_proj = max_rel(seg->decode_head->project(f), io_["project_eval"]);
  double e_log = max_rel(seg->decode_head->classify(f), io_["logits_eval"]);
  seg->train();
  double e_train = max_rel(seg->project(io_["input"]), io_["project_train"]);
  std::printf("[parity] %s%s projection %.2e logits %.2e train projection %.2e\n", name.c_str(),
              c.legacy ? " (legacy)" : "", e_proj, e_log, e_train);
  EXPECT_LE(e_proj, kTol);
  EXPECT_LE(e_log, kTol);
  EXPECT_LE(e_train, kTol);
}

TEST_P(SegmentorParity, AsppHeadAloneMatchesMmsegRebuild) {
  auto c = GetParam();
  std::string name = "seg_r" + std::to_string(c.depth) + "_os16";
  auto ck = io::load_checkpoint(fixture(name + (c.legacy ? "_legacy.pt" : ".pt")));
  io::TensorList head;
  for (auto& [k, t] : io::find_state_dict(ck))
    if (k.rfind("decode_head.", 0) == 0) head.emplace_back(k.substr(12), t);
  models::ASPPHeadOptions ho;
  ho.in_channels = c.depth >= 50 ? 2048 : 512;
  ho.num_classes = 21;
  models::ASPPHead h(ho);
  io::load_state(*h, head, /*strict=*/true, ck.path);
  auto io_ = load_tensors(fixture(name + "_io.pt"));
  torch::NoGradGuard ng;
  h->eval();
  auto f = h->features(io_["head_input"]);
  double e_f = max_rel(f, io_["head_features_eval"]);
  double e_p = max_rel(h->project(f), io_["head_project_eval"]);
  double e_l = max_rel(h->classify(f), io_["head_logits_eval"]);
  h->train();
  double e_t = max_rel(h->project(h->features(io_["head_input"])), io_["head_project_train"]);
  std::printf("[parity] ASPP head (%s) features %.2e projection %.2e logits %.2e train %.2e\n", name.c_str(), e_f, e_p,
              e_l, e_t);
  for (double e : {e_f, e_p, e_l, e_t}) EXPECT_LE(e, kTol);
}

INSTANTIATE_TEST_SUITE_P(All, SegmentorParity,
                         ::testing::Values(SegCase{18, false}, SegCase{18, true}, SegCase{50, false}, SegCase{50, true}),
                         [](const auto& i) {
                           std::string s = "R";  // as above
                           s += std::to_string(i.param.depth);
                           return s + (i.param.legacy ? "_legacy" : "_zip");
                         });

// C++ writes a checkpoint; Python's torch.load + torchvision reproduce the C++ outputs.
TEST(ExportParity, PyTorchLoadsCppCheckpointAndReproducesOutputs) {
  std::string dir = ::testing::TempDir() + "cp2_export";
  std::filesystem::create_directories(dir);
  auto seg = make_seg(50);
  models::init_weights(*seg, 7);
  models::randomize_bn(*seg, 8);
  seg->eval();
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 3, 72, 88});
  auto sd = io::state_dict(*seg);
  io::save_checkpoint(dir + "/r50_torchvision.pt", io::export_layout(sd, io::Preset::Torchvision));
  io::save_checkpoint(dir + "/r50_mmseg.pt", io::export_layout(sd, io::Preset::Mmseg));
  auto out = py::dict();
  py::set(out, "input", py::tensor(x));
  py::set(out, "backbone", py::tensor(seg->backbone->forward(x).back()));
  auto f = seg->features(x);
  py::set(out, "project", py::tensor(seg->decode_head->project(f)));
  py::set(out, "logits", py::tensor(seg->decode_head->classify(f)));
  io::save_checkpoint(dir + "/r50_io.pt", out);
  std::string cmd = std::string(CP2_PYTHON) + " " + CP2_TOOLS + "/check_cpp_export.py " + dir;
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << cmd;
}

}  // namespace
