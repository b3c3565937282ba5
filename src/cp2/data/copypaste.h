// CP²'s copy-paste composer (SPEC §1): a foreground image gives two MoCo v2 views, two
// other images give backgrounds with a rectangle erased (RandomErasing after
// normalisation), and each view is pasted into its background's hole.
#pragma once
#include <ATen/core/Tensor.h>

#include "cp2/data/augment.h"

namespace cp2::data {

struct CopyPasteOptions {
  ViewOptions view;
  double erase_scale_min = 0.5, erase_scale_max = 0.8;  // share of the composite that is foreground
  double erase_ratio_min = 0.8, erase_ratio_max = 1.25;
  // false: plain views and all-ones masks (Table 6's no-copy-paste row, and MoCo v2).
  bool copy_paste = true;
  void validate() const;
};

struct Sample {
  at::Tensor im_q, im_k;      // 3 x S x S, normalised
  at::Tensor mask_q, mask_k;  // S x S float, 1 = foreground
};

// fg, bg0, bg1: uint8 3 x H x W images (bg0/bg1 unused without copy-paste).
// Draw order from `rng`: view q, view k, bg0 view + erasing, bg1 view + erasing.
Sample compose(const at::Tensor& fg, const at::Tensor& bg0, const at::Tensor& bg1, const CopyPasteOptions& o,
               Rng& rng);

}  // namespace cp2::data
