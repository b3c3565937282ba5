// cp2 demo: the main job on built-in data. Until the CP² demo pipeline exists this is a
// small end-to-end model run: build an R18-ASPP segmentor, run it on generated images,
// save a checkpoint, reload it through the key-mapping path, export a torchvision
// backbone, and check that every reload reproduces the outputs.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/io/keymap.h"
#include "cp2/io/weights.h"
#include "cp2/models/init.h"
#include "cp2/models/segmentor.h"

namespace cp2::app {

namespace {

struct DemoArgs {
  std::string out = "runs/demo";
  int depth = 18, size = 96, batch = 2, classes = 21;
  uint64_t seed = 0;
};

double max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

int run_demo(const DemoArgs& a) {
  namespace fs = std::filesystem;
  fs::create_directories(a.out);
  auto t0 = std::chrono::steady_clock::now();
  models::SegmentorOptions so;
  so.backbone.depth = a.depth;
  so.head.num_classes = a.classes;
  torch::manual_seed(a.seed);
  models::Segmentor seg(so);
  models::init_weights(*seg, a.seed);
  models::randomize_bn(*seg, a.seed + 1);
  seg->eval();
  auto x = torch::randn({a.batch, 3, a.size, a.size}, torch::Generator(at::detail::createCPUGenerator(a.seed)));
  torch::NoGradGuard ng;
  auto proj = seg->project(x), logits = seg->predict(x);
  std::printf("model: ResNet-%d + ASPP (output stride %d), %zu tensors, %.2fM parameters, %d threads\n", a.depth,
              so.backbone.output_stride, io::state_dict(*seg).size(),
              [&] { double n = 0; for (auto& p : seg->parameters()) n += p.numel(); return n / 1e6; }(),
              at::get_num_threads());
  std::printf("input %s -> projection %s, logits %s\n", shape_str(x.sizes().vec()).c_str(),
              shape_str(proj.sizes().vec()).c_str(), shape_str(logits.sizes().vec()).c_str());

  std::string ck = a.out + "/segmentor.pt", tv = a.out + "/backbone_torchvision.pt";
  io::save_checkpoint(ck, io::export_layout(io::state_dict(*seg), io::Preset::Cp2));
  models::Segmentor back(so);
  auto m = io::map_to_segmentor(io::load_checkpoint(ck), io::Preset::Auto);
  auto rep = io::load_state(*back, m.tensors, /*strict=*/true, ck);
  std::printf("%s\n", rep.str().c_str());
  back->eval();
  double e1 = max_rel(back->predict(x), logits);
  std::printf("wrote %s; reloaded logits max relative error %.3g\n", ck.c_str(), e1);

  io::save_checkpoint(tv, io::export_layout(io::state_dict(*seg), io::Preset::Torchvision));
  models::Segmentor bb(so);
  auto m2 = io::map_to_segmentor(io::load_checkpoint(tv), io::Preset::Auto);
  auto rep2 = io::load_state(*bb, m2.tensors, false, tv);
  std::printf("wrote %s (torchvision layout): %zu backbone tensors reload, %zu head tensors left for the head\n",
              tv.c_str(), rep2.loaded.size(), rep2.missing.size());
  bb->eval();
  double e2 = max_rel(bb->backbone->forward(x).back(), seg->backbone->forward(x).back());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("backbone features after torchvision round trip: max relative error %.3g\n", e2);
  std::printf("demo done in %.1f s\n", secs);
  if (e1 > 0 || e2 > 0) throw Error("demo: a reloaded model does not reproduce the outputs");
  return 0;
}

}  // namespace

Command register_demo(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  auto* c = app.add_subcommand("demo", "Run the main job on built-in data (for now: a small model and checkpoint round trip)");
  c->add_option("--out", a->out, "output folder")->capture_default_str();
  c->add_option("--depth", a->depth, "ResNet depth (18/34/50/101)")->capture_default_str();
  c->add_option("--size", a->size, "image size")->capture_default_str();
  c->add_option("--batch", a->batch, "batch size")->capture_default_str();
  c->add_option("--seed", a->seed, "seed")->capture_default_str();
  return {c, [a] { return run_demo(*a); }};
}

}  // namespace cp2::app
