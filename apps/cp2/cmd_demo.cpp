// cp2 demo: the main job on built-in data: generated images -> a short CP² pretraining
// run (R18-ASPP, CPU-sized) -> the query encoder exported to torchvision's and
// mmsegmentation's layouts, each reload checked against the trained model's outputs ->
// DeepLabV3 finetuned from the pretrained checkpoint on a generated VOC-layout dataset,
// evaluated (mIoU), and its predictions written as palette PNGs and overlays.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/data/image.h"
#include "cp2/data/synth.h"
#include "cp2/io/keymap.h"
#include "cp2/io/weights.h"
#include "cp2/models/segmentor.h"
#include "cp2/pretrain/trainer.h"
#include "cp2/seg/finetune.h"
#include "cp2/seg/model.h"
#include "cp2/seg/predict.h"
#include "cp2/seg/synth.h"

namespace cp2::app {

namespace {

struct DemoArgs {
  std::string out = "runs/demo";
  int images = 32, size = 64, epochs = 10, finetune_iters = 80;
  uint64_t seed = 0;
};

double max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

int run_demo(const DemoArgs& a) {
  namespace fs = std::filesystem;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string img_dir = a.out + "/images";
  data::SynthOptions so;
  so.count = a.images;
  so.seed = a.seed;
  data::write_synthetic_images(img_dir, so);
  std::printf("1/4 wrote %d generated images to %s\n", a.images, img_dir.c_str());
  std::fflush(stdout);

  // A CPU-sized CP² run: R18-ASPP, small views, a short queue, constant lr.
  pretrain::PretrainConfig cfg;
  pretrain::ConfigSources src;
  src.flags = {{"data.root", img_dir}, {"data.workers", "1"},       {"view.size", std::to_string(a.size)},
               {"model.arch", "18"},    {"model.queue", "16"},       {"model.momentum", "0.99"},
               {"optim.lr", "1.5"},     {"optim.schedule", "constant"}, {"train.batch", "8"},
               {"train.epochs", std::to_string(a.epochs)}, {"train.log_every", "4"},
               {"train.seed", std::to_string(a.seed)}, {"train.out", a.out + "/pretrain"}};
  fs::remove_all(a.out + "/pretrain");
  pretrain::RunControl rc;
  pretrain::resolve_config(cfg, src);
  std::printf("2/4 CP² pretraining (config: %s/pretrain/config.yaml)\n", a.out.c_str());
  std::fflush(stdout);
  auto run = pretrain::run_pretrain(cfg, rc);
  // The first two steps compare against the random initial queue; average after it filled.
  auto mean = [&](size_t from, size_t to) {
    double m = 0;
    for (size_t i = from; i < to; ++i) m += run.losses[i];
    return m / static_cast<double>(std::max<size_t>(1, to - from));
  };
  const size_t n = run.losses.size(), w = std::max<size_t>(1, std::min<size_t>(10, n / 3));
  std::printf("    %lld steps, %.1f img/s; mean loss of steps %zu-%zu %.3f, of the last %zu steps %.3f; checkpoint %s\n",
              static_cast<long long>(run.last_step), run.images_per_s, std::min<size_t>(3, n), std::min(n, 2 + w),
              mean(std::min<size_t>(2, n), std::min(n, 2 + w)), w, mean(n - w, n), run.last_checkpoint.c_str());

  // The trained query encoder as a segmentor, and its exports.
  auto mapped = io::map_to_segmentor(io::load_checkpoint(run.last_checkpoint), io::Preset::Cp2);
  models::SegmentorOptions seg_opt;
  seg_opt.backbone.depth = 18;
  models::Segmentor seg(seg_opt);
  auto rep = io::load_state(*seg, mapped.tensors, /*strict=*/true, run.last_checkpoint);
  seg->eval();
  auto x = torch::stack({data::read_image(data::list_images(img_dir)[0]).to(torch::kFloat).div(255)});
  auto ng = std::make_unique<torch::NoGradGuard>();  // released before finetuning
  auto feats = seg->backbone->forward(x).back(), proj = seg->project(x);

  const std::string tv = a.out + "/backbone_torchvision.pt", mm = a.out + "/encoder_mmseg.pt";
  io::save_checkpoint(tv, io::export_layout(mapped.tensors, io::Preset::Torchvision));
  io::save_checkpoint(mm, io::export_layout(mapped.tensors, io::Preset::Mmseg));
  models::Segmentor from_tv(seg_opt), from_mm(seg_opt);
  io::load_state(*from_tv, io::map_to_segmentor(io::load_checkpoint(tv), io::Preset::Auto).tensors, false, tv);
  io::load_state(*from_mm, io::map_to_segmentor(io::load_checkpoint(mm), io::Preset::Auto).tensors, true, mm);
  from_tv->eval();
  from_mm->eval();
  const double e_tv = max_rel(from_tv->backbone->forward(x).back(), feats);
  const double e_mm = max_rel(from_mm->project(x), proj);
  std::printf("3/4 exported the query encoder (%zu tensors): %s (torchvision ResNet-18), %s (mmsegmentation)\n",
              rep.loaded.size(), tv.c_str(), mm.c_str());
  std::printf("    reloaded outputs, max relative error: torchvision backbone %.3g, mmseg projection %.3g\n", e_tv, e_mm);
  if (e_tv > 0 || e_mm > 0) throw Error("demo: a reloaded model does not reproduce the trained outputs");
  ng.reset();
  std::fflush(stdout);

  // DeepLabV3 from the pretrained checkpoint (backbone + ASPP; projection dropped) on a
  // generated VOC-layout dataset: mmseg's pipeline and recipe at CPU size.
  const std::string voc = a.out + "/voc";
  seg::SynthSegOptions sso;
  sso.train = 16;
  sso.val = 4;
  sso.width = 128;
  sso.height = 96;
  sso.boundaries = true;
  sso.seed = a.seed;
  fs::remove_all(voc);
  seg::write_synthetic_dataset(voc, sso);
  seg::FinetuneConfig fcfg;
  config::Sources fsrc;
  fsrc.flags = {{"data.root", voc},          {"data.workers", "1"},           {"pipeline.scale_long", "160"},
                {"pipeline.scale_short", "120"}, {"pipeline.crop_h", "96"},  {"pipeline.crop_w", "96"},
                {"model.arch", "18"},          {"optim.lr", "0.02"},            {"train.iters", std::to_string(a.finetune_iters)},
                {"train.batch", "4"},          {"train.eval_every", std::to_string(std::max(1, a.finetune_iters / 2))},
                {"train.checkpoint_every", "0"}, {"train.log_every", "10"},    {"train.seed", std::to_string(a.seed)},
                {"train.init", run.last_checkpoint}, {"train.out", a.out + "/finetune"},
                {"eval.scale_long", "160"},    {"eval.scale_short", "120"}};
  fs::remove_all(a.out + "/finetune");
  seg::FinetuneControl fc;
  seg::resolve_config(fcfg, fsrc);
  std::printf("4/4 DeepLabV3 finetuning from %s on %s (%d train / %d val generated images)\n",
              run.last_checkpoint.c_str(), voc.c_str(), sso.train, sso.val);
  std::fflush(stdout);
  auto ft = seg::run_finetune(fcfg, fc);
  auto fm = seg::load_finetuned(ft.best_checkpoint);
  seg::PredictOptions po;
  po.out = a.out + "/predictions";
  auto preds = seg::predict_files(fm, voc + "/JPEGImages", fcfg.eval_options(), po, false);
  std::printf("    %lld iterations, %.1f img/s; loss %.3f -> %.3f; best val mIoU %.1f at iteration %lld (%s)\n",
              static_cast<long long>(ft.last_iter), ft.images_per_s, ft.losses.front(), ft.losses.back(),
              ft.best_miou, static_cast<long long>(ft.best_iter), ft.best_checkpoint.c_str());
  std::printf("    %zu predictions (palette PNGs + overlays) in %s\n", preds.labels.size(), po.out.c_str());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("demo done in %.1f s; run folders %s/pretrain and %s/finetune (log.jsonl, checkpoints/, summary.json)\n",
              secs, a.out.c_str(), a.out.c_str());
  return 0;
}

}  // namespace

Command register_demo(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  auto* c = app.add_subcommand("demo", "The main job on built-in data: generated images, a short CP² pretraining "
                                       "run, the encoder exported and checked, DeepLabV3 finetuned and evaluated");
  c->add_option("--out", a->out, "output folder")->capture_default_str();
  c->add_option("--images", a->images, "generated images")->capture_default_str();
  c->add_option("--size", a->size, "view size")->capture_default_str();
  c->add_option("--epochs", a->epochs, "epochs (4 steps each at the default 32 images)")->capture_default_str();
  c->add_option("--finetune-iters", a->finetune_iters, "DeepLabV3 finetuning iterations")->capture_default_str();
  c->add_option("--seed", a->seed, "seed")->capture_default_str();
  return {c, [a] { return run_demo(*a); }};
}

}  // namespace cp2::app
