#include "cp2/pretrain/config.h"

#include "cp2/common.h"
#include "cp2/io/keymap.h"
#include "cp2/train/resolve.h"
#include "cp2/train/state.h"

namespace cp2::pretrain {

void TrainOptions::validate() const {
  using config::require_at_least;
  require_at_least("train.batch", batch, 1);
  require_at_least("train.epochs", epochs, 1);
  require_at_least("train.iters_per_epoch", iters_per_epoch, 0);
  require_at_least("train.log_every", log_every, 1);
  require_at_least("train.checkpoint_every_epochs", checkpoint_every_epochs, 0);
  require_at_least("train.checkpoint_every_iters", checkpoint_every_iters, 0);
  require_at_least("train.keep_last", keep_last, 1);
  if (out.empty()) throw Error("train.out: expected a run folder, found an empty string");
  train::check_device_name(device);
  io::parse_preset(init_preset);
  numerics.validate();
}

config::Fields PretrainConfig::fields() {
  config::Fields f;
  f.add("data.root", data.root, "image folder (root/<class>/<image> or flat)");
  data.bind(f);
  auto& v = aug.view;
  f.add("view.size", v.size, "crop size of every view");
  f.add("view.scale_min", v.scale_min, "RandomResizedCrop minimum area");
  f.add("view.scale_max", v.scale_max, "RandomResizedCrop maximum area");
  f.add("view.ratio_min", v.ratio_min, "RandomResizedCrop minimum aspect ratio");
  f.add("view.ratio_max", v.ratio_max, "RandomResizedCrop maximum aspect ratio");
  f.add("view.jitter_p", v.jitter_p, "ColorJitter probability");
  f.add("view.brightness", v.brightness, "ColorJitter brightness");
  f.add("view.contrast", v.contrast, "ColorJitter contrast");
  f.add("view.saturation", v.saturation, "ColorJitter saturation");
  f.add("view.hue", v.hue, "ColorJitter hue (<= 0.5)");
  f.add("view.gray_p", v.gray_p, "RandomGrayscale probability");
  f.add("view.blur_p", v.blur_p, "Gaussian blur probability");
  f.add("view.sigma_min", v.sigma_min, "blur sigma minimum");
  f.add("view.sigma_max", v.sigma_max, "blur sigma maximum");
  f.add("view.blur_kernel", v.blur_kernel, "blur kernel size (0 = 2*ceil(3 sigma)+1)");
  f.add("view.flip_p", v.flip_p, "horizontal flip probability");
  f.add("view.mean", v.mean, "normalisation mean (RGB, 0..1)");
  f.add("view.std", v.std, "normalisation std (RGB, 0..1)");
  f.add("copy_paste.erase_scale_min", aug.erase_scale_min, "foreground share of a composite, minimum");
  f.add("copy_paste.erase_scale_max", aug.erase_scale_max, "foreground share of a composite, maximum");
  f.add("copy_paste.erase_ratio_min", aug.erase_ratio_min, "erased rectangle aspect ratio, minimum");
  f.add("copy_paste.erase_ratio_max", aug.erase_ratio_max, "erased rectangle aspect ratio, maximum");
  f.add("model.arch", model.arch, "ResNet depth: 18, 34, 50, 101");
  f.add("model.output_stride", model.output_stride, "8, 16 or 32 (moco mode: always 32)");
  f.add("model.head_channels", model.head_channels, "ASPP channels");
  f.add("model.proj_channels", model.proj_channels, "projection / embedding dimension");
  f.add_choice("model.mode", model.mode, mode_names(),
               "what to train (Table 6 rows; moco = MoCo v2)");
  f.add("model.queue", model.queue, "queue length K");
  f.add("model.momentum", model.momentum, "key encoder momentum m");
  f.add("model.key_bn_splits", model.key_bn_splits, "key-encoder split-BN groups (1 = plain BN)");
  f.add("model.key_bn_shuffle", model.key_bn_shuffle,
        "shuffle the key batch around the split-BN forward (shuffle-BN in one process)");
  f.add("model.query_bn_splits", model.query_bn_splits,
        "query-encoder split-BN groups: N-process BN statistics in one process (1 = plain BN)");
  f.add("loss.temperature", model.temperature, "instance-loss temperature");
  f.add("loss.dense_weight", model.dense_weight, "weight of the dense loss");
  f.add("loss.dense_temperature", model.dense_temperature,
        "divide the dense logits by this (0 = none, as in the authors' code; a deviation from the method)");
  f.add_choice("optim.name", optim.name, {"sgd", "adamw"}, "optimizer");
  f.add("optim.lr", optim.lr, "learning rate at batch 256 (scaled by batch/256)");
  f.add("optim.momentum", optim.momentum, "SGD momentum");
  f.add("optim.weight_decay", optim.weight_decay, "weight decay (AdamW: decoupled)");
  f.add("optim.beta1", optim.beta1, "AdamW beta1");
  f.add("optim.beta2", optim.beta2, "AdamW beta2");
  f.add("optim.eps", optim.eps, "AdamW epsilon");
  f.add_choice("optim.schedule", optim.schedule, {"cosine-epoch", "cosine-iter", "constant"}, "learning-rate schedule");
  f.add("train.batch", train.batch, "images per step");
  f.add("train.epochs", train.epochs, "epochs");
  f.add("train.iters_per_epoch", train.iters_per_epoch, "cap on steps per epoch (0 = whole dataset)");
  f.add("train.seed", train.seed, "seed of weights, queue and data");
  f.add("train.log_every", train.log_every, "steps between log lines");
  f.add("train.checkpoint_every_epochs", train.checkpoint_every_epochs, "epochs between checkpoints (0 = off)");
  f.add("train.checkpoint_every_iters", train.checkpoint_every_iters, "steps between checkpoints (0 = off)");
  f.add("train.keep_last", train.keep_last, "checkpoints kept");
  f.add("train.out", train.out, "run folder");
  f.add("train.init", train.init, "Quick Tuning: checkpoint for the backbone, or a cp2 run folder (its newest checkpoint; empty = from scratch)");
  f.add_choice("train.init_preset", train.init_preset, {"auto", "torchvision", "moco", "cp2", "mmseg"},
               "key layout of train.init (auto: detected from the keys)");
  f.add("train.device", train.device, "cpu, cuda, cuda:N");
  train::bind_numerics(f, train.numerics);
  f.add_choice("train.cuda_graph", train.cuda_graph, {"off", "on", "auto"},
               "CUDA only: each step captured as a CUDA graph and replayed (one capture per learning rate, loss "
               "scale and batch shape; fp16 with loss scaling as two graphs with the skip decided between them; "
               "needs sgd with the cosine-epoch or constant schedule, one process, no key_bn_shuffle; on: refused "
               "otherwise, naming why; auto: eager steps then)");
  return f;
}

CP2Options PretrainConfig::model_options() const {
  CP2Options o;
  o.mode = parse_mode(model.mode);
  o.encoder.backbone.depth = model.arch;
  o.encoder.backbone.output_stride = mode_spec(o.mode).moco_encoder ? 32 : model.output_stride;
  o.encoder.head.channels = model.head_channels;
  o.encoder.head.proj_channels = model.proj_channels;
  o.queue_size = model.queue;
  o.momentum = model.momentum;
  o.key_bn_splits = model.key_bn_splits;
  o.key_bn_shuffle = model.key_bn_shuffle;
  o.query_bn_splits = model.query_bn_splits;
  o.loss.temperature = model.temperature;
  o.loss.dense_weight = model.dense_weight;
  o.loss.dense_temperature = model.dense_temperature;
  return o;
}

data::CopyPasteOptions PretrainConfig::aug_options() const {
  auto a = aug;
  a.copy_paste = mode_spec(model.mode).copy_paste;
  return a;
}

data::LoaderOptions PretrainConfig::loader_options() const {
  return data.loader_options(train.batch, train.device);
}

std::string PretrainConfig::to_yaml() const {
  PretrainConfig copy = *this;
  return copy.fields().to_yaml();
}

void PretrainConfig::validate() const {
  if (data.root.empty()) throw Error("data.root: expected an image folder (--data DIR or data.root in the config)");
  validate_model();
  data.validate();
  aug_options().validate();
  model_options().validate();
  optim.validate();
  train.validate();
  loader_options().validate();
  // A relation: its head names both keys, so the error says where each value came from.
  for (const auto& [key, splits] : {std::pair<const char*, int>{"query_bn_splits", model.query_bn_splits},
                                    std::pair<const char*, int>{"key_bn_splits", model.key_bn_splits}})
    if (train.batch % splits != 0)
      throw Error(std::string("model.") + key + "/train.batch: " + key + " " + std::to_string(splits) +
                  " does not divide the batch " + std::to_string(train.batch) +
                  " (batch norm runs over equal groups of the batch)");
}

void PretrainConfig::validate_model() const {
  // The user's key names first; the subsystems check again in their own terms.
  using config::require_at_least;
  config::require_one_of("model.arch", model.arch, {18, 34, 50, 101});
  config::require_one_of("model.output_stride", model.output_stride, {8, 16, 32});
  require_at_least("model.head_channels", model.head_channels, 1);
  require_at_least("model.proj_channels", model.proj_channels, 1);
  require_at_least("model.queue", model.queue, 1);
  require_at_least("model.key_bn_splits", model.key_bn_splits, 1);
  require_at_least("model.query_bn_splits", model.query_bn_splits, 1);
  if (!(model.momentum >= 0 && model.momentum <= 1))
    throw Error("model.momentum: expected 0..1, found " + num_str(model.momentum));
  if (!(model.temperature > 0)) throw Error("loss.temperature: expected > 0, found " + num_str(model.temperature));
  if (!(model.dense_temperature >= 0))
    throw Error("loss.dense_temperature: expected >= 0 (0 = none), found " + num_str(model.dense_temperature));
}

std::string resolve_config(PretrainConfig& cfg, const ConfigSources& src) {
  return train::resolve_run(cfg, {src, std::nullopt}, train::pretrain_kind()).yaml;
}

}  // namespace cp2::pretrain
