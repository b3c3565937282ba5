#include "cp2/seg/config.h"

#include <utility>

#include "cp2/common.h"
#include "cp2/io/keymap.h"
#include "cp2/train/resolve.h"
#include "cp2/train/state.h"

namespace cp2::seg {

DatasetOptions SegDataConfig::dataset(bool train) const {
  DatasetOptions o;
  o.type = type;
  o.root = root;
  o.split = train ? train_split : val_split;
  if (o.split.empty()) o.split = default_split(type, train);
  o.ann_dir = ann_dir;
  o.classes_file = classes_file;
  return o;
}

void EvalOptions::validate() const {
  if (mode != "whole" && mode != "slide") throw Error("eval.mode: expected whole or slide, found '" + mode + "'");
  // Each message starts with its own key (config::check_naming_origin finds it there).
  for (auto [key, v] : {std::pair{"eval.crop_h", crop_h}, {"eval.crop_w", crop_w}, {"eval.stride_h", stride_h},
                        {"eval.stride_w", stride_w}})
    config::require_at_least(key, v, 1);
  for (double s : scales)
    if (!(s > 0)) throw Error("eval.scales: expected positive ratios, found " + num_str(s));
  config::require_at_least("eval.scale_long", scale_long, 0);
  config::require_at_least("eval.scale_short", scale_short, 0);
  if (max_images < 0) throw Error("eval.max_images: expected >= 0, found " + std::to_string(max_images));
}

void FinetuneOptions::validate() const {
  using config::require_at_least;
  require_at_least("train.iters", iters, 1);
  require_at_least("train.batch", batch, 1);
  require_at_least("train.log_every", log_every, 1);
  require_at_least("train.eval_every", eval_every, 0);
  require_at_least("train.checkpoint_every", checkpoint_every, 0);
  require_at_least("train.keep_last", keep_last, 1);
  if (out.empty()) throw Error("train.out: expected a run folder, found an empty string");
  train::check_device_name(device);
  io::parse_preset(init_preset);
  numerics.validate();
}

config::Fields FinetuneConfig::fields() {
  config::Fields f;
  f.add_choice("data.type", data.type, {"voc", "cityscapes", "ade20k", "list"}, "dataset layout");
  f.add("data.root", data.root, "dataset folder");
  f.add("data.train_split", data.train_split,
        "voc: split file under root (train_aug.txt); cityscapes/ade20k: subfolder; list: list file (\"\" = default)");
  f.add("data.val_split", data.val_split, "as data.train_split, for evaluation");
  f.add("data.ann_dir", data.ann_dir, "voc: label folder (\"\" = SegmentationClassAug; or SegmentationClass)");
  f.add("data.classes_file", data.classes_file, "list: file of class names, one per line");
  data.bind(f);
  auto& p = pipeline;
  f.add("pipeline.scale_long", p.scale_long, "train resize scale, long edge (x ratio)");
  f.add("pipeline.scale_short", p.scale_short, "train resize scale, short edge (x ratio)");
  f.add("pipeline.ratio_min", p.ratio_min, "resize ratio range, minimum");
  f.add("pipeline.ratio_max", p.ratio_max, "resize ratio range, maximum");
  f.add("pipeline.crop_h", p.crop_h, "crop height");
  f.add("pipeline.crop_w", p.crop_w, "crop width");
  f.add("pipeline.cat_max_ratio", p.cat_max_ratio, "reject crops where one class holds this share (1 = off)");
  f.add("pipeline.flip_p", p.flip_p, "horizontal flip probability");
  f.add("pipeline.photometric", p.photometric, "PhotoMetricDistortion on/off");
  f.add("pipeline.brightness_delta", p.brightness_delta, "brightness delta");
  f.add("pipeline.contrast_min", p.contrast_min, "contrast range, minimum");
  f.add("pipeline.contrast_max", p.contrast_max, "contrast range, maximum");
  f.add("pipeline.saturation_min", p.saturation_min, "saturation range, minimum");
  f.add("pipeline.saturation_max", p.saturation_max, "saturation range, maximum");
  f.add("pipeline.hue_delta", p.hue_delta, "hue delta (OpenCV 0..179 units)");
  f.add("pipeline.mean", p.mean, "normalisation mean (RGB, 0..255)");
  f.add("pipeline.std", p.std, "normalisation std (RGB, 0..255)");
  f.add("model.arch", model.arch, "ResNet depth: 18, 34, 50, 101");
  f.add("model.output_stride", model.output_stride, "8, 16 or 32");
  f.add("model.head_channels", model.head_channels, "ASPP channels");
  f.add("model.dropout", model.dropout, "dropout before the classifier");
  f.add("model.num_classes", model.num_classes, "classifier outputs (0 = the dataset's class count)");
  f.add("model.align_corners", model.align_corners, "bilinear resizes with align_corners");
  f.add_choice("optim.name", optim.name, {"sgd", "adamw"}, "optimizer");
  f.add("optim.lr", optim.lr, "base learning rate (not scaled by batch)");
  f.add("optim.momentum", optim.momentum, "SGD momentum");
  f.add("optim.weight_decay", optim.weight_decay, "weight decay");
  f.add_choice("optim.schedule", optim.schedule, {"poly", "constant"}, "learning-rate schedule");
  f.add("optim.power", optim.power, "poly power");
  f.add("optim.min_lr", optim.min_lr, "poly final learning rate");
  f.add("train.iters", train.iters, "iterations");
  f.add("train.batch", train.batch, "images per iteration");
  f.add("train.seed", train.seed, "seed of weights and data");
  f.add("train.log_every", train.log_every, "iterations between log lines");
  f.add("train.eval_every", train.eval_every, "iterations between evaluations (0 = at the end only)");
  f.add("train.checkpoint_every", train.checkpoint_every, "iterations between checkpoints (0 = at the end only)");
  f.add("train.keep_last", train.keep_last, "periodic checkpoints kept (best.pt is kept apart)");
  f.add("train.out", train.out, "run folder");
  f.add("train.init", train.init, "pretrained checkpoint (cp2, CP² authors', MoCo v2, torchvision, mmseg), or a cp2 run folder (its newest checkpoint; empty = scratch)");
  f.add_choice("train.init_preset", train.init_preset, {"auto", "torchvision", "moco", "cp2", "mmseg"},
               "key layout of train.init");
  f.add("train.device", train.device, "cpu, cuda, cuda:N");
  train::bind_numerics(f, train.numerics);
  f.add("train.avg_non_ignore", train.avg_non_ignore,
        "cross-entropy mean over labelled pixels only (false: over all pixels, as mmseg 0.x)");
  f.add_choice("eval.mode", eval.mode, {"whole", "slide"}, "test inference");
  f.add("eval.crop_h", eval.crop_h, "slide: window height");
  f.add("eval.crop_w", eval.crop_w, "slide: window width");
  f.add("eval.stride_h", eval.stride_h, "slide: vertical stride");
  f.add("eval.stride_w", eval.stride_w, "slide: horizontal stride");
  f.add("eval.flip", eval.flip, "also average the flipped image's prediction");
  f.add("eval.scales", eval.scales, "test scale ratios, e.g. [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]");
  f.add("eval.scale_long", eval.scale_long, "test resize long edge (0 = no resize)");
  f.add("eval.scale_short", eval.scale_short, "test resize short edge (0 = no resize)");
  f.add("eval.max_images", eval.max_images, "evaluate the first N images (0 = all)");
  return f;
}

data::LoaderOptions FinetuneConfig::loader_options() const {
  return data.loader_options(train.batch, train.device);
}

EvalOptions FinetuneConfig::eval_options() const {
  EvalOptions e = eval;
  e.mean = pipeline.mean;
  e.std = pipeline.std;
  return e;
}

std::string FinetuneConfig::to_yaml() const {
  FinetuneConfig copy = *this;
  return copy.fields().to_yaml();
}

void FinetuneConfig::validate() const {
  if (data.root.empty()) throw Error("data.root: expected the dataset folder (--data DIR or data.root in the config)");
  // The user's key names first; the subsystems below check again in their own terms.
  using config::require_at_least;
  config::require_one_of("model.arch", model.arch, {18, 34, 50, 101});
  config::require_one_of("model.output_stride", model.output_stride, {8, 16, 32});
  require_at_least("model.head_channels", model.head_channels, 1);
  require_at_least("model.num_classes", model.num_classes, 0);
  if (!(model.dropout >= 0 && model.dropout < 1))
    throw Error("model.dropout: expected 0 <= p < 1, found " + num_str(model.dropout));
  data.validate();
  data.dataset(true).validate();
  pipeline.validate();
  model.segmentor(1);
  optim.validate();
  train.validate();
  eval.validate();
  loader_options().validate();
}

std::string resolve_config(FinetuneConfig& cfg, const config::Sources& src) {
  return train::resolve_run(cfg, {src, std::nullopt}, train::finetune_kind()).yaml;
}

}  // namespace cp2::seg
