// cp2 evaluate: mIoU / mAcc / aAcc and the per-class table of a finetuned model on a split.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/seg/inference.h"
#include "cp2/seg/model.h"
#include "cp2/io/atomic_file.h"
#include "cp2/train/progress.h"
#include "cp2/train/state.h"

namespace cp2::app {

namespace {

struct EvalArgs {
  std::string model, config, json, data, type, split, mode, scales, max_images, device = "cpu";
  std::vector<std::string> sets;
  bool flip = false, quiet = false;
};

int run(const EvalArgs& a) {
  const auto file = seg::read_finetuned(a.model);
  const auto& path = file.path;
  seg::FinetuneConfig cfg;
  config::Sources src;
  src.file = a.config;
  src.stored_config = file.config_text;
  src.stored_origin = path + " (stored config)";
  const std::pair<const char*, const std::string*> shortcuts[] = {
      {"data.root", &a.data}, {"data.type", &a.type}, {"data.val_split", &a.split},
      {"eval.mode", &a.mode}, {"eval.max_images", &a.max_images}};
  for (auto& [key, val] : shortcuts)
    if (!val->empty()) src.flags.emplace_back(key, *val);
  if (a.flip) src.flags.emplace_back("eval.flip", "true");
  if (!a.scales.empty()) src.flags.emplace_back("eval.scales", "[" + a.scales + "]");
  src.sets = a.sets;
  seg::resolve_config(cfg, src);

  // --set model.* reaches the model; the shapes must still be the file's.
  auto m = seg::build_finetuned(file, seg::model_settings(file, cfg.model, src));
  const auto device = train::parse_device(a.device, "--device");
  m.model->to(device);
  std::string note;  // the stored config may name what only its training device could run
  m.model->set_numerics(compute::resolve_inference_numerics(cfg.train.numerics, a.device,
                                                               m.model->options().backbone.depth, &note));
  if (!note.empty()) std::fprintf(stderr, "note: %s\n", note.c_str());
  seg::SegDataset ds(cfg.data.dataset(false));
  train::Progress progress(!a.quiet, 10);
  auto r = seg::evaluate(*m.model, ds, cfg.eval_options(), cfg.data.workers_for(a.device), [&](int64_t d, int64_t n) {
    progress.update("evaluating " + train::bar(d, n) + " " + std::to_string(d) + "/" + std::to_string(n), d, d == n);
  });
  progress.done();
  std::printf("%s", eval::format_table(r.metrics, ds.classes()).c_str());
  std::printf("%s in %.1f s (%.2f img/s), %s inference%s, scales", count_of(r.images, "image").c_str(), r.seconds,
              r.images / std::max(r.seconds, 1e-9), cfg.eval.mode.c_str(), cfg.eval.flip ? " + flip" : "");
  for (double s : cfg.eval.scales) std::printf(" %g", s);
  std::printf("\n");
  if (r.label_stats.pixels)
    std::printf("warning: %s in %s outside 0..%d and not 255 were ignored (first: %s)\n",
                count_of(r.label_stats.pixels, "label pixel").c_str(), count_of(r.label_stats.files, "file").c_str(),
                ds.num_classes() - 1, r.label_stats.first_file.c_str());

  auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(100 * v); };
  nlohmann::json per_class = nlohmann::json::array();
  for (int c = 0; c < ds.num_classes(); ++c)
    per_class.push_back({{"class", ds.classes()[c]}, {"iou", num(r.metrics.iou[c])}, {"acc", num(r.metrics.acc[c])}});
  std::vector<std::vector<int64_t>> conf(ds.num_classes(), std::vector<int64_t>(ds.num_classes()));
  auto acc = r.confusion.accessor<int64_t, 2>();
  for (int i = 0; i < ds.num_classes(); ++i)
    for (int j = 0; j < ds.num_classes(); ++j) conf[i][j] = acc[i][j];
  nlohmann::json j = {{"model", path},
                      {"dataset", {{"type", cfg.data.type}, {"root", cfg.data.root}, {"split", ds.options().split}}},
                      {"images", r.images},
                      {"eval", {{"mode", cfg.eval.mode}, {"flip", cfg.eval.flip}, {"scales", cfg.eval.scales}}},
                      {"units", "miou, macc, aacc and per-class iou/acc in percent"},
                      {"miou", num(r.metrics.miou)},
                      {"macc", num(r.metrics.macc)},
                      {"aacc", num(r.metrics.aacc)},
                      {"pixels", r.metrics.pixels},
                      {"per_class", per_class},
                      {"confusion", conf},
                      {"out_of_range_label_pixels", r.label_stats.pixels},
                      {"seconds", r.seconds}};
  std::string json_path = a.json;
  if (json_path.empty()) {
    auto p = std::filesystem::path(path);
    json_path = (p.parent_path() / (p.stem().string() + "_eval.json")).string();
  }
  io::write_file_atomic(json_path, j.dump(2) + "\n");
  std::printf("metrics: %s\n", json_path.c_str());
  return 0;
}

}  // namespace

Command register_evaluate(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* c = app.add_subcommand("evaluate", "mIoU, mAcc, aAcc and per-class IoU of a finetuned model (table + JSON)");
  c->add_option("model", a->model, "finetuned checkpoint (cp2 finetune's, or mmseg's) or run folder (its best.pt)")->required();
  c->add_option("--config", a->config, "YAML config (default: the one stored in the checkpoint)");
  c->add_option("--set", a->sets, "override any key, e.g. --set eval.crop_h=769 or model.align_corners=true (repeatable)");
  c->add_option("--data", a->data, "dataset folder (data.root)");
  c->add_option("--type", a->type, "voc, cityscapes, ade20k, list (data.type)");
  c->add_option("--split", a->split, "split to evaluate (data.val_split)");
  c->add_option("--mode", a->mode, "whole or slide (eval.mode)");
  c->add_flag("--flip", a->flip, "average with the flipped image (eval.flip)");
  c->add_option("--scales", a->scales, "comma-separated test ratios, e.g. 0.5,0.75,1,1.25,1.5,1.75 (eval.scales)");
  c->add_option("--max-images", a->max_images, "first N images only, 0 = all (eval.max_images)")->type_name("N");
  c->add_option("--device", a->device, "cpu, cuda, cuda:N")->capture_default_str();
  c->add_option("--json", a->json, "metrics file (default: <model>_eval.json next to the model)");
  c->add_flag("--quiet", a->quiet, "no progress output");
  return {c, [a] { return run(*a); }};
}

}  // namespace cp2::app
