#include "cp2/pretrain/graph_step.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>

#ifdef CP2_WITH_CUDA  // CMake defines it for this file where the LibTorch has CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "cp2/common.h"
#include "cp2/dist/comm.h"

namespace cp2::pretrain {

std::string graph_unsupported(const CP2ModelImpl& model, const train::Optimizer& opt, const c10::Device& device) {
  if (!device.is_cuda()) return "a CUDA graph needs a CUDA device, found " + device.str();
#ifndef CP2_WITH_CUDA
  (void)model;
  (void)opt;
  return "this build of cp2 has no CUDA (build it against a CUDA LibTorch)";
#else
  if (opt.loss_scaling()) return "loss scaling (fp16) decides on the host whether a step is skipped: use bf16 or fp32";
  if (opt.options().name != "sgd") return "AdamW's bias correction changes every step: use sgd";
  if (model.comm() && model.comm()->size() > 1) return "several processes: their gradient all-reduce is not captured";
  if (model.options().key_bn_splits > 1 && model.options().key_bn_shuffle)
    return "key_bn_shuffle draws its permutation on the host";
  return "";
#endif
}

struct GraphedStep::Impl {
#ifdef CP2_WITH_CUDA
  at::cuda::CUDAGraph graph;
#endif
  train::Optimizer* opt = nullptr;
  data::Batch in;  // the graph's inputs: run() copies each batch into them
  LossParts parts;  // its outputs, rewritten by every replay
  double lr = 0;
};

namespace {
std::string shapes(const data::Batch& b) {
  return shape_str(b.im_q.sizes().vec()) + ", " + shape_str(b.im_k.sizes().vec()) + ", " +
         shape_str(b.mask_q.sizes().vec()) + ", " + shape_str(b.mask_k.sizes().vec());
}
}  // namespace

GraphedStep::GraphedStep(CP2ModelImpl& model, train::Optimizer& opt, const data::Batch& example, double lr)
    : impl_(std::make_unique<Impl>()) {
  const auto why = graph_unsupported(model, opt, example.im_q.device());
  if (!why.empty()) throw Error("CUDA graph: " + why);
#ifdef CP2_WITH_CUDA
  if (opt.steps() < 1)
    throw Error("CUDA graph: run one eager step at these shapes before capturing (cuDNN's algorithm choice and "
                "the optimizer's momentum buffers must exist before capture)");
  auto& I = *impl_;
  I.opt = &opt;
  I.lr = lr;
  auto copy = [](const at::Tensor& t) { return t.clone(t.suggest_memory_format()); };
  I.in = {copy(example.im_q), copy(example.im_k), copy(example.mask_q), copy(example.mask_k)};
  const int64_t steps = opt.steps();
  // As PyTorch's whole-network capture: gradients set to None first, so that the backward
  // pass allocates them from the graph's own memory; capture on a side stream (the default
  // stream cannot be captured); autocast's cast cache off, so that every replay casts the
  // weights as they are then (torch.cuda.graphs' rule under autocast).
  opt.zero_grad();
  torch::cuda::synchronize();
  const bool cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  auto side = c10::cuda::getStreamFromPool(false, example.im_q.device().index());
  bool capturing = false;
  try {
    c10::cuda::CUDAStreamGuard guard(side);
    I.graph.capture_begin();
    capturing = true;
    I.parts = model.forward_step(I.in.im_q, I.in.im_k, I.in.mask_q, I.in.mask_k, /*read=*/false);
    opt.scaled(I.parts.total).backward();
    opt.step(lr);
    model.enqueue(I.parts.k_ins);
    capturing = false;
    I.graph.capture_end();
  } catch (const std::exception& e) {
    at::autocast::set_autocast_cache_enabled(cache);
    std::string what = e.what();
    if (capturing) {
      try {
        I.graph.capture_end();  // ends the stream's capture, so that CUDA work can go on
      } catch (const std::exception&) {
        // the capture's own error (above) is the one to report
      }
    }
    throw Error("CUDA graph: capturing the step failed: " + what.substr(0, what.find('\n')));
  }
  at::autocast::set_autocast_cache_enabled(cache);
  opt.set_steps(steps);  // capturing ran nothing
  torch::cuda::synchronize();
#else
  (void)lr;
#endif
}

GraphedStep::~GraphedStep() = default;

double GraphedStep::lr() const { return impl_->lr; }

StepResult GraphedStep::run(const data::Batch& b) {
  auto& I = *impl_;
  if (b.im_q.sizes() != I.in.im_q.sizes() || b.im_k.sizes() != I.in.im_k.sizes() ||
      b.mask_q.sizes() != I.in.mask_q.sizes() || b.mask_k.sizes() != I.in.mask_k.sizes())
    throw Error("CUDA graph: captured for a batch of " + shapes(I.in) + ", found " + shapes(b) +
                " (capture again for another batch size, e.g. the last short batch)");
  I.in.im_q.copy_(b.im_q);
  I.in.im_k.copy_(b.im_k);
  I.in.mask_q.copy_(b.mask_q);
  I.in.mask_k.copy_(b.mask_k);
#ifdef CP2_WITH_CUDA
  I.graph.replay();
#endif
  I.opt->set_steps(I.opt->steps() + 1);
  StepResult r;
  r.parts = I.parts;
  read_values(r.parts);
  r.loss = r.parts.total_value;
  r.finite = std::isfinite(r.loss);
  r.stepped = true;
  return r;
}

}  // namespace cp2::pretrain
