// DeepLabV3 for finetuning: building it, initialising it from a pretrained checkpoint,
// and the finetuned-model files that `cp2 evaluate` and `cp2 predict` read.
#pragma once
#include <string>
#include <vector>

#include "cp2/io/keymap.h"
#include "cp2/io/weights.h"
#include "cp2/models/segmentor.h"
#include "cp2/seg/config.h"
#include "cp2/seg/label_png.h"

namespace cp2::seg {

// A fresh segmentor with mmsegmentation's init, drawn from `seed`.
models::Segmentor make_segmentor(const models::SegmentorOptions& o, uint64_t seed);

struct InitResult {
  io::Preset preset = io::Preset::Auto;
  io::LoadReport report;
  std::vector<std::string> dropped;  // file keys not mapped, plus projection/classifier tensors
  std::string str() const;           // the printed report
};

// Loads a pretrained checkpoint into a fresh segmentor as the authors finetune: the
// backbone and (when present) the ASPP head; CP²'s projection `contrast_conv` is dropped
// and the classifier `conv_seg` keeps its fresh init. Any layout io::keymap knows (cp2
// and the CP² authors' pretraining, MoCo v2, torchvision, mmseg). Throws naming the file
// and the first tensor when shapes do not fit the model (wrong model.arch).
InitResult init_from_pretrained(models::SegmentorImpl& m, const std::string& path, io::Preset preset);

// What evaluate/predict need from a finetuned model file.
struct FinetunedModel {
  models::Segmentor model{nullptr};
  std::vector<std::string> classes;
  Palette palette;
  std::string config_text;  // cp2 finetune checkpoints: the run's resolved config ("" otherwise)
  std::string path;
};

// Segmentor options guessed from an mmseg-layout state dict: depth from the block
// counts, head channels and class count from the tensor shapes (output stride cannot be
// seen in the weights: `output_stride` is used).
models::SegmentorOptions infer_segmentor_options(const io::TensorList& sd, int output_stride, const std::string& path);

// A finetuned model file read once: a cp2 finetune checkpoint (or run folder: its best.pt,
// else the newest checkpoint) or an mmseg checkpoint (backbone.* / decode_head.* with
// conv_seg). Throws for layouts without a trained classifier (pretraining checkpoints).
struct FinetunedFile {
  std::string path;
  std::string config_text;  // cp2's stored config, "" for other files
  io::TensorList tensors;   // segmentor names
  py::ObjPtr root;          // for meta.CLASSES / PALETTE
};
FinetunedFile read_finetuned(const std::string& file_or_run);

// The settings a file's model is built with: its stored config (cp2 finetune files),
// then the caller's overrides (--config / --set). Depth, head width and class count are
// read from the tensor shapes; model.arch / model.head_channels are checked against them
// when `check_shapes` (the file stores a config, or the user named those keys).
struct ModelSettings {
  SegModelConfig model;
  bool check_shapes = false;
};
// The settings evaluate/predict use: `model` as resolved (stored config, then the
// user's --config/--set); shapes are checked when the file stores a config or the user
// named model.arch / model.head_channels.
ModelSettings model_settings(const FinetunedFile& file, const SegModelConfig& model, const config::Sources& src);
// The model of such a file with those settings (output stride, align_corners, dropout
// applied); strict load; returned in eval mode.
FinetunedModel build_finetuned(const FinetunedFile& file, const ModelSettings& settings);
// Read + build with the file's stored settings.
FinetunedModel load_finetuned(const std::string& file_or_run);

// The model file a run folder designates: best.pt if present, else its newest checkpoint.
std::string resolve_model_file(const std::string& file_or_run);

}  // namespace cp2::seg
