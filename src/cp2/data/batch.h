// A pretraining batch: what the loader yields, `cp2 loss --batch` reads and
// `cp2 pretrain --dump-batch` writes.
#pragma once
#include <ATen/core/Tensor.h>

namespace cp2::data {

// im_q, im_k: N x 3 x H x W normalised composites; mask_q, mask_k: N x H x W float,
// 1 = foreground (pasted) pixel.
struct Batch {
  at::Tensor im_q, im_k, mask_q, mask_k;
};

}  // namespace cp2::data
