// cp2 predict: label PNGs (dataset palette) and overlays for images and folders.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/seg/model.h"
#include "cp2/seg/predict.h"
#include "cp2/train/state.h"

namespace cp2::app {

namespace {

struct PredictArgs {
  std::string model, out = "predictions", mode, scales, device = "cpu";
  std::vector<std::string> inputs, sets;
  double alpha = 0.5;
  bool flip = false, no_overlay = false, quiet = false, skip_bad = false;
};

int run(const PredictArgs& a) {
  const auto file = seg::read_finetuned(a.model);
  seg::FinetuneConfig cfg;  // no dataset needed: only the stored eval and model keys matter here
  config::Sources src;
  if (!a.mode.empty()) src.flags.emplace_back("eval.mode", a.mode);
  if (a.flip) src.flags.emplace_back("eval.flip", "true");
  if (!a.scales.empty()) src.flags.emplace_back("eval.scales", "[" + a.scales + "]");
  src.sets = a.sets;
  src.stored_config = file.config_text;
  src.stored_origin = file.path + " (stored config)";
  auto f = cfg.fields();
  config::apply_sources(f, src);  // not validated whole: predict needs no dataset
  seg::EvalOptions eo;
  config::check_naming_origin(f, [&] {
    eo = cfg.eval_options();
    eo.validate();
  });
  auto m = seg::build_finetuned(file, seg::model_settings(file, cfg.model, src));
  m.model->to(train::parse_device(a.device, "--device"));
  std::string note;  // the stored config may name what only its training device could run
  m.model->set_numerics(compute::resolve_inference_numerics(cfg.train.numerics, a.device,
                                                               m.model->options().backbone.depth, &note));
  if (!note.empty()) std::fprintf(stderr, "note: %s\n", note.c_str());
  seg::PredictOptions po;
  po.out = a.out;
  po.alpha = a.alpha;
  po.overlays = !a.no_overlay;
  po.skip_bad = a.skip_bad;
  auto r = seg::predict_files(m, a.inputs, eo, po, !a.quiet);
  std::printf("wrote %s%s to %s\n", count_of(r.labels.size(), "label PNG").c_str(),
              po.overlays ? (" and " + count_of(r.overlays.size(), "overlay")).c_str() : "", a.out.c_str());
  if (!r.bad.empty()) {
    std::printf("skipped %s:\n", count_of(r.bad.size(), "unreadable image").c_str());
    for (const auto& b : r.bad) std::printf("  %s\n", b.c_str());
  }
  return 0;
}

}  // namespace

Command register_predict(CLI::App& app) {
  auto a = std::make_shared<PredictArgs>();
  auto* c = app.add_subcommand("predict", "Label PNGs with the dataset palette and blended overlays, any image size");
  c->add_option("model", a->model, "finetuned checkpoint or run folder (its best.pt)")->required();
  c->add_option("inputs", a->inputs, "images and folders of images (outputs mirror their paths below the folder holding them all)")
      ->required();
  c->add_option("--out", a->out, "output folder")->capture_default_str();
  c->add_option("--alpha", a->alpha, "overlay opacity 0..1")->capture_default_str();
  c->add_flag("--no-overlay", a->no_overlay, "label PNGs only");
  c->add_option("--mode", a->mode, "whole or slide (eval.mode)");
  c->add_flag("--flip", a->flip, "average with the flipped image");
  c->add_option("--scales", a->scales, "comma-separated test ratios");
  c->add_option("--set", a->sets, "override eval.* and model.* keys (repeatable)");
  c->add_flag("--skip-bad", a->skip_bad, "continue past unreadable images, listing them at the end");
  c->add_option("--device", a->device, "cpu, cuda, cuda:N")->capture_default_str();
  c->add_flag("--quiet", a->quiet, "no per-image lines");
  return {c, [a] { return run(*a); }};
}

}  // namespace cp2::app
