// Generated segmentation datasets in each supported layout (tests, benchmarks, the demo):
// filled shapes whose colour identifies their class, on smooth random backgrounds.
#pragma once
#include <cstdint>
#include <string>
#include <utility>

namespace cp2::seg {

struct SynthSegOptions {
  std::string layout = "voc";  // voc | cityscapes | ade20k | list
  int train = 8, val = 4;      // images per split
  int width = 96, height = 72;
  int classes = 3;              // foreground classes used (label 1..classes; cityscapes: train ids 0..classes-1)
  int shapes = 3;               // shapes per image
  bool boundaries = false;      // voc: 255 outlines around shapes, as VOC's annotations
  bool label_ids = false;       // cityscapes: write *_labelIds.png instead of *_labelTrainIds.png
  uint64_t seed = 0;
  // "shapes" (primitives coloured by class) or "fashion-mnist": scenes of 1..4 real
  // Fashion-MNIST items (label = item class + 1, 1..10; background 0; a 255 band along
  // each item's edge as VOC's), training scenes from the train split, validation scenes
  // from t10k only. `classes`, `shapes` and `boundaries` apply to shapes only.
  std::string source = "shapes";
  std::string fashion_dir;  // "" = Debian's /usr/share/datasets/fashion-mnist
  int max_items = 4;        // fashion-mnist: items per scene, 1..max_items
  std::string backgrounds = "all";  // fashion-mnist: all (5 procedural kinds) or plain (gradients only)
  std::string fashion_classes = "fine";  // fashion-mnist: fine (the 10 classes) or coarse (4 groups)
};

// Writes the dataset under `root` with the layout's split files/folders; returns the
// split names to put in data.train_split / data.val_split (voc/list: files; else folders).
std::pair<std::string, std::string> write_synthetic_dataset(const std::string& root, const SynthSegOptions& o);

}  // namespace cp2::seg
