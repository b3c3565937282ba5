// The built-in data of `cp2 ablate`, `cp2 trials` and `cp2 demo` (no download): Fashion-
// MNIST items on procedural backgrounds as the ImageNet stand-in, and Fashion-MNIST scenes
// in the PASCAL VOC / Cityscapes / ADE20k layouts as the segmentation sets (validation
// items from t10k only). Written once per folder: a stamp file records the options, and
// a folder written with other options (or half-written) is written again.
#pragma once
#include <cstdint>
#include <string>

namespace cp2::study {

struct BuiltinData {
  int images = 1024;           // pretraining images
  int image_size = 128;        // their width = height
  int train_scenes = 256, val_scenes = 64;
  int scene_width = 128, scene_height = 96;
  uint64_t seed = 0;
  std::string fashion_classes = "coarse";  // fine (10 classes) or coarse (4 groups): docs/results.md
  std::string fashion_dir;     // "" = Debian's /usr/share/datasets/fashion-mnist
  void validate() const;
};

// dir/pretrain: the pretraining image folder (flat). Returns its absolute path.
std::string builtin_images(const std::string& dir, const BuiltinData& o);
// dir/<layout>: a segmentation dataset (voc, cityscapes or ade20k). Returns its absolute path.
std::string builtin_seg(const std::string& dir, const std::string& layout, const BuiltinData& o);

}  // namespace cp2::study
