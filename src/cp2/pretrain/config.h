// `cp2 pretrain`'s configuration: one struct per subsystem (data/view/copy-paste, model,
// loss, optimizer, training), all bound to dotted keys for YAML files and --set.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "cp2/config/fields.h"
#include "cp2/data/copypaste.h"
#include "cp2/data/loader.h"
#include "cp2/pretrain/model.h"
#include "cp2/train/keys.h"
#include "cp2/train/optim.h"
#include "cp2/compute/precision.h"

namespace cp2::pretrain {

struct DataConfig : train::LoaderKeys {  // data.workers, data.prefetch, data.priority
  std::string root;  // image folder
};

struct ModelConfig {
  int arch = 50, output_stride = 16;
  int head_channels = 512, proj_channels = 128;
  std::string mode = "cp2";
  int64_t queue = 65536;
  double momentum = 0.999;
  int key_bn_splits = 1;
  bool key_bn_shuffle = false;
  int query_bn_splits = 1;
  double temperature = 0.2, dense_weight = 0.2;
  double dense_temperature = 0;  // 0 = none (the authors' code)
};

struct TrainOptions {
  int64_t batch = 256, epochs = 200;
  int64_t iters_per_epoch = 0;  // cap per epoch (0 = the whole dataset)
  uint64_t seed = 0;
  int64_t log_every = 10;
  int64_t checkpoint_every_epochs = 1, checkpoint_every_iters = 0;  // 0 = off
  int keep_last = 2;
  std::string out = "runs/pretrain";
  std::string init;                 // Quick Tuning: backbone checkpoint
  std::string init_preset = "auto";  // its key layout (auto: detected, as finetuning)
  std::string device = "cpu";
  compute::NumericsOptions numerics;  // train.precision, train.channels_last
  std::string cuda_graph = "off";     // off | on | auto: each step as a replayed CUDA graph
  void validate() const;
};

struct PretrainConfig {
  DataConfig data;
  data::CopyPasteOptions aug;
  ModelConfig model;
  train::OptimOptions optim;
  TrainOptions train;

  // The key table bound to this object's members (keep the object alive while using it).
  config::Fields fields();
  // The resolved config as YAML, from these structs (what a run stores is what ran).
  std::string to_yaml() const;
  // Resolved options for the subsystems.
  CP2Options model_options() const;
  data::CopyPasteOptions aug_options() const;  // copy-paste off in no-copy-paste / moco
  data::LoaderOptions loader_options() const;
  double lr() const { return optim.lr * static_cast<double>(train.batch) / 256.0; }  // linear scaling
  void validate() const;  // every subsystem, plus cross-key checks
  void validate_model() const;  // the model.* and loss.* keys alone (cp2 loss reads no data)
};

using ConfigSources = config::Sources;

// Fills `cfg` and validates it; returns the resolved config as YAML.
std::string resolve_config(PretrainConfig& cfg, const ConfigSources& src);

}  // namespace cp2::pretrain
