#include <torch/torch.h>

#include "../helpers.h"
#include "cp2/io/keymap.h"
#include "cp2/io/weights.h"
#include "cp2/models/segmentor.h"

using namespace cp2;
using cp2::test::expect_error;
using cp2::test::fixture;

namespace {

models::Segmentor r18(int classes) {
  models::SegmentorOptions so;
  so.backbone.depth = 18;
  so.head.num_classes = classes;
  return models::Segmentor(so);
}

TEST(Keymap, MocoLegacyTrainingCheckpoint) {
  auto ck = io::load_checkpoint(fixture("moco_r18_legacy.pt"));
  EXPECT_EQ(ck.format, io::Format::Legacy);
  auto m = io::map_to_segmentor(ck, io::Preset::Auto);
  EXPECT_EQ(m.preset, io::Preset::Moco);
  auto src = io::find_state_dict(ck);
  std::map<std::string, at::Tensor> by_name(src.begin(), src.end());
  for (auto& [k, t] : m.tensors) {
    ASSERT_EQ(k.rfind("backbone.", 0), 0u) << k;
    EXPECT_TRUE(torch::equal(t, by_name.at("module.encoder_q." + k.substr(9)))) << k;
  }
  auto dropped = [&](const std::string& k) { return std::count(m.dropped.begin(), m.dropped.end(), k) == 1; };
  EXPECT_TRUE(dropped("module.encoder_q.fc.0.weight"));
  EXPECT_TRUE(dropped("module.encoder_k.conv1.weight"));
  EXPECT_TRUE(dropped("module.queue"));
  auto seg = r18(0);
  auto rep = io::load_state(*seg, m.tensors, false, ck.path);
  EXPECT_EQ(rep.loaded.size(), m.tensors.size());  // every backbone tensor lands (incl. num_batches_tracked)
  EXPECT_TRUE(rep.unexpected.empty());
  EXPECT_TRUE(rep.mismatched.empty());
  for (auto& k : rep.missing) EXPECT_EQ(k.rfind("decode_head.", 0), 0u) << k;
  // The rest of the training checkpoint is readable too.
  std::map<std::string, py::ObjPtr> flat;
  for (auto& [k, v] : io::flatten(ck.root)) flat[k] = v;
  EXPECT_EQ(flat.at("epoch")->i, 800);
  EXPECT_EQ(flat.at("arch")->s, "resnet18");
  EXPECT_DOUBLE_EQ(flat.at("optimizer.param_groups.0.lr")->f, 0.03);
  EXPECT_EQ(flat.at("optimizer.state.0.momentum_buffer")->tensor.sizes(), (std::vector<int64_t>{64, 3, 7, 7}));
}

TEST(Keymap, Cp2AuthorsCheckpointLoadsStrictly) {
  auto ck = io::load_checkpoint(fixture("cp2_authors_r18.pt"));
  auto m = io::map_to_segmentor(ck, io::Preset::Auto);
  EXPECT_EQ(m.preset, io::Preset::Cp2);
  auto seg = r18(0);
  auto rep = io::load_state(*seg, m.tensors, /*strict=*/true, ck.path);
  EXPECT_TRUE(rep.clean());
  EXPECT_EQ(rep.loaded.size(), io::state_dict(*seg).size());
}

TEST(Keymap, DroppedLinesGroupLongRuns) {
  std::vector<std::string> d{"queue", "encoder_k.backbone.conv1.weight"};
  for (int i = 0; i < 6; ++i) d.push_back("encoder_k.decode_head.w" + std::to_string(i));
  d.push_back("encoder_k.backbone.bn1.weight");
  d.push_back("fc.weight");
  d.push_back("fc.bias");
  d.push_back("queue_ptr");
  EXPECT_EQ(io::dropped_lines(d), (std::vector<std::string>{"queue", "encoder_k.backbone.conv1.weight",
                                                            "encoder_k.backbone.bn1.weight",
                                                            "encoder_k.decode_head.* (6 tensors)", "fc.weight",
                                                            "fc.bias", "queue_ptr"}));
  EXPECT_EQ(io::dropped_lines(d, 1).size(), 5u);  // queue, encoder_k.backbone.* (2), ...decode_head.* (6), fc.* (2), queue_ptr
  EXPECT_EQ(io::dropped_lines(d, 1)[2], "encoder_k.decode_head.* (6 tensors)");
  EXPECT_TRUE(io::dropped_lines({}).empty());
}

TEST(Keymap, TorchvisionDropsFcAndDetects) {
  auto ck = io::load_checkpoint(fixture("resnet50_os16.pt"));
  auto m = io::map_to_segmentor(ck, io::Preset::Auto);
  EXPECT_EQ(m.preset, io::Preset::Torchvision);
  EXPECT_EQ(m.dropped, (std::vector<std::string>{"fc.weight", "fc.bias"}));
  EXPECT_EQ(m.tensors.front().first, "backbone.conv1.weight");
}

TEST(Keymap, StrictFailuresNameKeysAndShapes) {
  auto ck = io::load_checkpoint(fixture("resnet18_os16.pt"));
  auto m = io::map_to_segmentor(ck, io::Preset::Auto);
  models::SegmentorOptions so;  // ResNet-50: wrong architecture for these weights
  models::Segmentor r50(so);
  expect_error([&] { io::load_state(*r50, m.tensors, true, ck.path); },
               {ck.path, "strict load failed", "mismatched: backbone.layer1.0.conv1.weight expected [64, 64, 1, 1], found [64, 64, 3, 3]",
                "missing:    backbone.layer1.0.conv3.weight"});
  auto seg = r18(0);  // right backbone, but the head is absent from a torchvision file
  expect_error([&] { io::load_state(*seg, m.tensors, true, ck.path); },
               {"missing:    decode_head.bottleneck.conv.weight"});
  io::TensorList extra = m.tensors;
  extra.emplace_back("backbone.bogus", torch::ones({1}));
  expect_error([&] { io::load_state(*r18(0)->backbone, {}, false, "x"); }, {"no tensor matched"});
  expect_error([&] { io::load_state(*seg, m.tensors, false, ck.path), io::load_state(*seg, extra, true, ck.path); },
               {"unexpected: backbone.bogus"});
}

TEST(Keymap, WrongPresetLoadsNothing) {
  auto ck = io::load_checkpoint(fixture("resnet18_os16.pt"));
  expect_error([&] { io::map_to_segmentor(ck, io::Preset::Moco); }, {ck.path, "preset 'moco' maps none", "conv1.weight"});
  expect_error([] { io::parse_preset("timm"); }, {"'timm'", "torchvision, moco, cp2, mmseg"});
  io::Checkpoint odd{py::dict(), io::Format::Zip, "odd.pt"};
  py::set(odd.root, "weird.key", py::tensor(torch::ones({1})));
  expect_error([&] { io::map_to_segmentor(odd, io::Preset::Auto); }, {"odd.pt", "cannot tell", "weird.key", "--from"});
}

TEST(Keymap, ExportLayouts) {
  io::TensorList seg = {{"backbone.conv1.weight", torch::ones({1})}, {"decode_head.conv_seg.weight", torch::ones({2})}};
  auto tv = io::export_layout(seg, io::Preset::Torchvision);
  ASSERT_EQ(tv->dict.size(), 1u);
  EXPECT_EQ(tv->dict[0].first->s, "conv1.weight");
  auto moco = io::export_layout(seg, io::Preset::Moco);
  EXPECT_EQ(moco->get("state_dict")->dict[0].first->s, "module.encoder_q.conv1.weight");
  auto mm = io::export_layout(seg, io::Preset::Mmseg);
  EXPECT_EQ(mm->get("state_dict")->dict.size(), 2u);
  auto c = io::export_layout(seg, io::Preset::Cp2);
  EXPECT_EQ(c->get("cp2")->get("kind")->s, "segmentor");
}

}  // namespace
