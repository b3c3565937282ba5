#include "cp2/train/one_pass.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/variable.h>

#include "cp2/train/sgd_fma.h"

namespace cp2::train {

namespace {

bool dense_fp32_cpu(const at::Tensor& t) {
  return t.defined() && t.layout() == at::kStrided && t.device().is_cpu() && t.scalar_type() == at::kFloat &&
         t.is_non_overlapping_and_dense();
}

}  // namespace

bool one_pass_fits(const at::Tensor& t, std::initializer_list<const at::Tensor*> with) {
  if (!sgd_fma::cpu_supported() || !dense_fp32_cpu(t)) return false;
  for (const at::Tensor* u : with)
    if (!dense_fp32_cpu(*u) || u->sizes() != t.sizes() || u->strides() != t.strides()) return false;
  return true;
}

void one_pass(at::Tensor& t, const std::function<void(int64_t, int64_t)>& body) {
  // 16384 floats a task: the loops are memory-bound, and smaller tensors (biases, batch norm's
  // affine parameters) run on the calling thread.
  at::parallel_for(0, t.numel(), 1 << 14, body);
  torch::autograd::impl::bump_version(t);
}

}  // namespace cp2::train
