// Segmentation datasets in their published layouts (SPEC §6): PASCAL VOC 2012 (+SBD),
// Cityscapes, ADE20k, and a generic list file. Each yields (image, label) pairs with the
// dataset's label convention applied, its class names and palette.
#pragma once
#include <ATen/core/Tensor.h>

#include <atomic>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cp2/seg/label_png.h"

namespace cp2::seg {

struct DatasetOptions {
  // voc: root holds JPEGImages/, <ann_dir>/, and `split` (a file of ids, relative to root).
  // cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/<split>/<city>/
  //   *_gtFine_labelTrainIds.png (or *_gtFine_labelIds.png, mapped to train ids).
  // ade20k: images/<split>/*.jpg and annotations/<split>/*.png (label - 1, 0 -> 255).
  // list: `split` is a file of "image label" lines relative to root; classes from
  //   `classes_file` (one name per line).
  std::string type = "voc";
  std::string root;
  std::string split;     // "" = the type's training split
  std::string ann_dir;   // voc only; "" = SegmentationClassAug
  std::string classes_file;
  void validate() const;
};

// The split a type uses by default for training / validation.
std::string default_split(const std::string& type, bool train);

struct LabelStats {
  int64_t pixels = 0, files = 0;  // values outside 0..classes-1 other than 255 (made 255)
  std::string first_file;
};

class SegDataset {
 public:
  // Lists the split; throws naming what was expected and where when the layout is wrong,
  // and naming the image when its label is missing.
  explicit SegDataset(DatasetOptions o);

  int64_t size() const { return static_cast<int64_t>(items_.size()); }
  int num_classes() const { return static_cast<int>(classes_.size()); }
  const std::vector<std::string>& classes() const { return classes_; }
  const Palette& palette() const { return palette_; }
  const std::string& image_path(int64_t i) const { return items_.at(i).first; }
  const std::string& label_path(int64_t i) const { return items_.at(i).second; }
  const DatasetOptions& options() const { return opt_; }

  // H x W x 3 uint8 RGB (contiguous).
  at::Tensor image(int64_t i) const;
  // H x W uint8 train labels (the dataset's mapping applied; out-of-range values become
  // 255 and are counted). Throws when the label's size differs from the image's.
  at::Tensor label(int64_t i, int64_t image_h, int64_t image_w);
  // Out-of-range label counts since the last call.
  LabelStats take_label_stats();

 private:
  DatasetOptions opt_;
  std::vector<std::pair<std::string, std::string>> items_;
  std::vector<std::string> classes_;
  Palette palette_;
  std::mutex mu_;
  LabelStats stats_;
};

}  // namespace cp2::seg
