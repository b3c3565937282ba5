// `cp2 finetune` / `cp2 evaluate` configuration (SPEC §5, the authors' VOC recipe by
// default): one struct per subsystem, bound to dotted keys for YAML files and --set.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "cp2/config/fields.h"
#include "cp2/data/loader.h"
#include "cp2/models/segmentor.h"
#include "cp2/seg/dataset.h"
#include "cp2/seg/pipeline.h"
#include "cp2/seg/step.h"
#include "cp2/train/keys.h"
#include "cp2/train/optim.h"
#include "cp2/compute/precision.h"

namespace cp2::seg {

struct SegDataConfig : train::LoaderKeys {  // data.workers, data.prefetch, data.priority
  std::string type = "voc", root;
  std::string train_split, val_split;  // "" = the type's default
  std::string ann_dir, classes_file;
  DatasetOptions dataset(bool train) const;
};

// Test-time inference (mmseg test_cfg + MultiScaleFlipAug).
struct EvalOptions {
  std::string mode = "whole";  // whole | slide
  int crop_h = 512, crop_w = 512, stride_h = 341, stride_w = 341;  // slide
  bool flip = false;
  std::vector<double> scales{1.0};  // img_ratios of the test scale
  int scale_long = 2048, scale_short = 512;  // test resize, aspect kept; 0 = keep the image size
  std::array<double, 3> mean{123.675, 116.28, 103.53}, std{58.395, 57.12, 57.375};  // not keys: the pipeline's
  int64_t max_images = 0;  // evaluate the first N images only (0 = all)
  void validate() const;
};

struct FinetuneOptions {
  int64_t iters = 40000, batch = 16;
  uint64_t seed = 0;
  int64_t log_every = 50, eval_every = 4000, checkpoint_every = 4000;  // 0 = off
  int keep_last = 2;
  std::string out = "runs/finetune";
  std::string init;                 // pretrained checkpoint ("" = from scratch)
  std::string init_preset = "auto";  // its key layout
  std::string device = "cpu";
  bool avg_non_ignore = false;  // false: mean over all pixels, as mmseg 0.x (the authors')
  compute::NumericsOptions numerics;  // train.precision, train.channels_last
  void validate() const;
};

struct FinetuneConfig {
  SegDataConfig data;
  PipelineOptions pipeline;
  SegModelConfig model;
  train::OptimOptions optim = finetune_optim();
  FinetuneOptions train;
  EvalOptions eval;

  config::Fields fields();
  std::string to_yaml() const;  // from these structs: what a run stores is what ran
  data::LoaderOptions loader_options() const;
  // `eval` with the pipeline's normalisation (test images are normalised as training's).
  EvalOptions eval_options() const;
  void validate() const;
};

// Defaults < config file (or stored config) < flags < --set; validates; returns YAML.
std::string resolve_config(FinetuneConfig& cfg, const config::Sources& src);

}  // namespace cp2::seg
