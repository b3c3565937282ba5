// A pretraining batch (what the loader yields, `cp2 loss --batch` reads and
// `cp2 pretrain --dump-batch` writes), and the empty tensors both loaders build batches in.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace cp2::data {

// im_q, im_k: N x 3 x H x W normalised composites; mask_q, mask_k: N x H x W float,
// 1 = foreground (pasted) pixel.
struct Batch {
  at::Tensor im_q, im_k, mask_q, mask_k;
};

// An empty batch tensor: pageable, or page-locked for `pin_for` (a CUDA device), so that
// copying it there is asynchronous (the authors' DataLoader(pin_memory=True)). The calling
// (loader) thread is switched to pin_for meanwhile, as PyTorch's pin-memory thread is, so that
// no process of a multi-GPU run makes a CUDA context on device 0 for it.
at::Tensor batch_tensor(at::IntArrayRef shape, at::ScalarType dtype, const std::optional<c10::Device>& pin_for);
// What a run on `device` pins its batches for (LoaderOptions::pin_for): that device where it is
// CUDA, else nothing (the training loops and the benches' end-to-end loaders).
std::optional<c10::Device> pin_target(const c10::Device& device);

}  // namespace cp2::data
