// cp2 demo: the main job on built-in data, every stage the real code path at a smaller
// size: Fashion-MNIST images -> a small MoCo v2 base (cp2's moco mode) -> Quick Tuning
// with CP² -> DeepLabV3 finetuned on Fashion-MNIST scenes in the PASCAL VOC layout, next
// to finetuning from scratch and from the base without Quick Tuning (Table 6's protocol,
// three rows) -> the Quick-Tuned encoder exported to torchvision's and mmsegmentation's
// layouts, each reload checked against the trained model's outputs -> report.html.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/data/image.h"
#include "cp2/io/keymap.h"
#include "cp2/io/weights.h"
#include "cp2/models/segmentor.h"
#include "cp2/report/report.h"
#include "cp2/study/protocol.h"
#include "cp2/train/run_folder.h"
#include "run_flags.h"

namespace cp2::app {

namespace {

struct DemoArgs {
  std::string out = "runs/demo";
  int base_epochs = 3;
  uint64_t seed = 0;
  std::string scale = "demo";
  bool quiet = false;
};

double max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

// The Quick-Tuned query encoder as a segmentor, exported to torchvision's and mmseg's
// layouts; both reloads must reproduce its outputs exactly.
void export_check(const std::string& checkpoint, const std::string& image_dir, const std::string& out) {
  auto mapped = io::map_to_segmentor(io::load_checkpoint(checkpoint), io::Preset::Cp2);
  models::SegmentorOptions seg_opt;
  seg_opt.backbone.depth = 18;
  models::Segmentor seg(seg_opt);
  auto rep = io::load_state(*seg, mapped.tensors, /*strict=*/true, checkpoint);
  seg->eval();
  torch::NoGradGuard ng;
  auto x = torch::stack({data::read_image(data::list_images(image_dir)[0]).to(torch::kFloat).div(255)});
  auto feats = seg->backbone->forward(x).back(), proj = seg->project(x);
  const std::string tv = out + "/backbone_torchvision.pt", mm = out + "/encoder_mmseg.pt";
  io::save_checkpoint(tv, io::export_layout(mapped.tensors, io::Preset::Torchvision));
  io::save_checkpoint(mm, io::export_layout(mapped.tensors, io::Preset::Mmseg));
  models::Segmentor from_tv(seg_opt), from_mm(seg_opt);
  io::load_state(*from_tv, io::map_to_segmentor(io::load_checkpoint(tv), io::Preset::Auto).tensors, false, tv);
  io::load_state(*from_mm, io::map_to_segmentor(io::load_checkpoint(mm), io::Preset::Auto).tensors, true, mm);
  from_tv->eval();
  from_mm->eval();
  const double e_tv = max_rel(from_tv->backbone->forward(x).back(), feats);
  const double e_mm = max_rel(from_mm->project(x), proj);
  std::printf("exported the Quick-Tuned encoder (%zu tensors): %s (torchvision ResNet-18), %s (mmsegmentation); "
              "reloads reproduce its outputs (max relative error %.3g, %.3g)\n",
              rep.loaded.size(), tv.c_str(), mm.c_str(), e_tv, e_mm);
  if (e_tv > 0 || e_mm > 0) throw Error("demo: a reloaded model does not reproduce the trained outputs");
}

int run_demo(const DemoArgs& a) {
  namespace fs = std::filesystem;
  const auto t0 = std::chrono::steady_clock::now();
  // A fresh demo each time (the built-in data in OUT/data is kept: it is deterministic).
  for (const char* d : {"base", "qt_cp2", "ft_base", "ft_cp2", "ft_scratch"}) fs::remove_all(fs::path(a.out) / d);
  for (const char* f : {"results.json", "results.csv", "table.txt", "report.html"}) fs::remove(fs::path(a.out) / f);
  study::AblateOptions o;
  o.out = a.out;
  o.base_epochs = a.base_epochs;
  o.rows = {"base", "cp2", "scratch"};
  o.label = "demo";
  o.recipe.scale = a.scale;
  o.recipe.builtin = study::builtin_for_scale(a.scale);
  o.recipe.builtin.seed = o.recipe.seed = a.seed;
  o.recipe.progress = !a.quiet;
  std::printf("cp2 demo: MoCo v2 base (%d epochs) -> Quick Tuning with CP² -> DeepLabV3 finetuning on Fashion-MNIST "
              "scenes (VOC layout), beside scratch and the base without Quick Tuning; output %s\n",
              a.base_epochs, a.out.c_str());
  std::fflush(stdout);
  auto r = study::run_ablate(o);
  if (r.signal) {
    std::printf("stopped by %s\n", signal_name(r.signal).c_str());
    return exit_status(r.signal);
  }
  std::printf("%s", study::format_ablate_table(r.rows).c_str());
  export_check(train::latest_checkpoint(r.rows[1].pretrain_run), a.out + "/data/pretrain", a.out);
  const std::string report = a.out + "/report.html";
  report::write(report, {a.out}, {4, "cp2 demo"});
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("report: %s\ndemo done in %.1f s; run folders under %s (log.jsonl, checkpoints/, summary.json)\n",
              report.c_str(), secs, a.out.c_str());
  return 0;
}

}  // namespace

Command register_demo(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  auto* c = app.add_subcommand("demo", "The main job on built-in data: a MoCo v2 base, Quick Tuning with CP², DeepLabV3 "
                                       "finetuning beside scratch and the base (a three-row Table 6), encoder export "
                                       "check, report.html");
  c->add_option("--out", a->out, "output folder")->capture_default_str();
  c->add_option("--base-epochs", a->base_epochs, "epochs of the MoCo v2 base")->capture_default_str()->check(positive);
  c->add_option("--scale", a->scale, "recipe and data size: demo, default (larger, as cp2 ablate) or test (tiny)")->capture_default_str();
  c->add_option("--seed", a->seed, "seed")->capture_default_str()->check(non_negative_int);
  c->add_flag("--quiet", a->quiet, "only the protocol's progress lines");
  return {c, [a] { return run_demo(*a); }};
}

}  // namespace cp2::app
