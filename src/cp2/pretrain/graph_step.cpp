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

GraphFacts graph_facts(const CP2Options& model, const train::OptimOptions& optim, const c10::Device& device,
                       int processes) {
  GraphFacts f;
  f.device = device;
  f.optimizer = optim.name;
  f.schedule = optim.schedule;
  f.processes = processes;
  f.key_bn_shuffle = model.key_bn_splits > 1 && model.key_bn_shuffle;
  return f;
}

GraphFacts graph_facts(const CP2ModelImpl& model, const train::Optimizer& opt) {
  return graph_facts(model.options(), opt.options(), model.queue.device(), model.comm() ? model.comm()->size() : 1);
}

std::string graph_unsupported(const GraphFacts& f) {
  // The config's reasons first (the same in every build, so the tests check them on a CPU),
  // then the device and the build.
  if (f.optimizer != "sgd") return "AdamW's bias correction changes every step: use sgd";
  if (f.processes > 1) return "several processes: their gradient all-reduce is not captured";
  if (f.key_bn_shuffle) return "key_bn_shuffle draws its permutation on the host";
  if (f.schedule == "poly" || f.schedule == "cosine-iter")
    return "optim.schedule " + f.schedule + " changes the learning rate every step (a capture per step): use "
           "cosine-epoch or constant";
  if (!f.device.is_cuda()) return "a CUDA graph needs a CUDA device, found " + f.device.str();
#ifndef CP2_WITH_CUDA
  return "this build of cp2 has no CUDA (build it against a CUDA LibTorch)";
#else
  return "";
#endif
}

bool resolve_cuda_graph(const std::string& setting, const GraphFacts& f, std::string& why) {
  why.clear();
  if (setting == "off") return false;
  if (setting != "on" && setting != "auto")
    throw Error("train.cuda_graph: expected off, on or auto, found '" + setting + "'");
  why = graph_unsupported(f);
  if (!why.empty() && setting == "on") throw Error("train.cuda_graph: on: " + why);
  return why.empty();
}

namespace {
// The reasons that hold for every step on `device`; here a schedule's rate changes only cost
// captures (resolve_cuda_graph refuses the per-step ones for a run).
std::string step_unsupported(const CP2ModelImpl& model, const train::Optimizer& opt, const c10::Device& device) {
  auto f = graph_facts(model, opt);
  f.device = device;
  f.schedule = "constant";
  return graph_unsupported(f);
}
}  // namespace

struct GraphedStep::Impl {
#ifdef CP2_WITH_CUDA
  at::cuda::CUDAGraph graph;
  at::cuda::CUDAGraph update;  // with loss scaling: the update and the enqueue, replayed apart
#endif
  CP2ModelImpl* model = nullptr;
  train::Optimizer* opt = nullptr;
  data::Batch in;  // the graph's inputs: run() copies each batch into them
  LossParts parts;  // its outputs, rewritten by every replay
  at::Tensor grads_finite;  // with loss scaling: the gradients' flag, rewritten by every replay
  bool split = false;  // loss scaling: two graphs
  double lr = 0, scale = 1;
};

namespace {
std::string shapes(const data::Batch& b) {
  return shape_str(b.im_q.sizes().vec()) + ", " + shape_str(b.im_k.sizes().vec()) + ", " +
         shape_str(b.mask_q.sizes().vec()) + ", " + shape_str(b.mask_k.sizes().vec());
}
}  // namespace

GraphedStep::GraphedStep(CP2ModelImpl& model, train::Optimizer& opt, const data::Batch& example, double lr)
    : impl_(std::make_unique<Impl>()) {
  const auto why = step_unsupported(model, opt, example.im_q.device());
  if (!why.empty()) throw Error("CUDA graph: " + why);
#ifdef CP2_WITH_CUDA
  if (opt.steps() < 1)
    throw Error("CUDA graph: run one eager step that updates the weights at these shapes before capturing "
                "(cuDNN's algorithm choice and the optimizer's momentum buffers must exist before capture)");
  auto& I = *impl_;
  I.model = &model;
  I.opt = &opt;
  I.lr = lr;
  I.split = opt.loss_scaling();
  I.scale = opt.loss_scale();
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
  // The guard outlives the clean-up below: capture_end must be called on the capturing stream,
  // else the capture never ends and every later CUDA call fails.
  c10::cuda::CUDAStreamGuard guard(side);
  at::cuda::CUDAGraph* capturing = nullptr;
  try {
    I.graph.capture_begin();
    capturing = &I.graph;
    I.parts = model.forward_step(I.in.im_q, I.in.im_k, I.in.mask_q, I.in.mask_k, /*read=*/false);
    opt.scaled(I.parts.total).backward();
    if (I.split) {
      // The eager step reads the flag between here and the update (train::Optimizer::step):
      // run() does, between the two graphs.
      I.grads_finite = opt.unscale_grads();
      capturing = nullptr;
      I.graph.capture_end();
      I.update.capture_begin();
      capturing = &I.update;
    }
    opt.update(lr);  // step() without loss scaling
    model.enqueue(I.parts.k_ins);
    auto* g = capturing;
    capturing = nullptr;
    g->capture_end();
  } catch (const std::exception& e) {
    const std::string what = error_line(e);
    if (capturing) {
      try {
        capturing->capture_end();  // ends the stream's capture (it reports the capture invalid)
      } catch (const std::exception&) {
        // the capture's own error (above) is the one to report
      }
    }
    at::autocast::set_autocast_cache_enabled(cache);
    opt.set_steps(steps);
    throw Error("CUDA graph: capturing the step failed: " + what +
                " (train.cuda_graph: off runs every step eagerly)");
  }
  // The outputs without their autograd graph: kept alive, it would keep the parameters'
  // gradient-accumulation nodes, bound to the capture stream, for the next eager step.
  I.parts.detach();
  at::autocast::set_autocast_cache_enabled(cache);
  opt.set_steps(steps);  // capturing ran nothing
  torch::cuda::synchronize();
#else
  (void)lr;
#endif
}

GraphedStep::~GraphedStep() = default;

double GraphedStep::lr() const { return impl_->lr; }
double GraphedStep::scale() const { return impl_->scale; }

StepResult GraphedStep::run(const data::Batch& b) {
  auto& I = *impl_;
  if (b.im_q.sizes() != I.in.im_q.sizes() || b.im_k.sizes() != I.in.im_k.sizes() ||
      b.mask_q.sizes() != I.in.mask_q.sizes() || b.mask_k.sizes() != I.in.mask_k.sizes())
    throw Error("CUDA graph: captured for a batch of " + shapes(I.in) + ", found " + shapes(b) +
                " (capture again for another batch size, e.g. the last short batch)");
  if (I.opt->loss_scale() != I.scale)
    throw Error("CUDA graph: captured at loss scale " + num_str(I.scale) + ", the optimizer's is now " +
                num_str(I.opt->loss_scale()) + " (capture again after a skipped step or the scale's growth)");
  I.in.im_q.copy_(b.im_q);
  I.in.im_k.copy_(b.im_k);
  I.in.mask_q.copy_(b.mask_q);
  I.in.mask_k.copy_(b.mask_k);
#ifdef CP2_WITH_CUDA
  I.graph.replay();
#endif
  StepResult r;
  r.parts = I.parts;
  r.parts.read();
  r.loss = r.parts.total_value;
  r.finite = std::isfinite(r.loss);
  if (I.split) {
    // train_step's decisions (train::step_if_finite, Optimizer::step) on the replay's numbers.
    if (!r.finite) {
      I.opt->skip_step();  // a non-finite loss: no update, nothing enqueued
      return r;
    }
    if (!I.opt->settle_scale(I.grads_finite.item<bool>())) {
      I.model->enqueue(I.parts.k_ins);  // skipped by loss scaling: the keys still go in
      return r;
    }
#ifdef CP2_WITH_CUDA
    I.update.replay();
#endif
  }
  I.opt->set_steps(I.opt->steps() + 1);
  r.stepped = true;
  return r;
}

StepRunner::StepRunner(CP2ModelImpl& model, train::Optimizer& opt, bool graphs, dist::GradientReducer* reducer)
    : model_(model), opt_(opt), graphs_(graphs), reducer_(reducer) {
  if (!graphs_) return;
  const auto why = step_unsupported(model, opt, model.queue.device());
  if (!why.empty()) throw Error("CUDA graph: " + why);
}

StepRunner::~StepRunner() = default;

StepResult StepRunner::step(const data::Batch& b, double lr) {
  const auto shape = b.im_q.sizes().vec();
  last_replayed_ = false;
  auto graph_fits = [&] {
    return graph_ && graph_shape_ == shape && graph_->lr() == lr && graph_->scale() == opt_.loss_scale();
  };
  if (graphs_ && !graph_fits() && shape == warm_shape_ && opt_.steps() >= 1) {
    graph_.reset();  // its memory goes before the next capture takes its own
    graph_ = std::make_unique<GraphedStep>(model_, opt_, b, lr);
    graph_shape_ = shape;
    ++captures_;
  }
  if (graphs_ && graph_fits()) {
    auto r = graph_->run(b);
    last_replayed_ = true;
    ++replays_;
    return r;
  }
  auto r = train_step(model_, opt_, b, lr, reducer_);
  warm_shape_ = shape;
  ++eager_;
  return r;
}

}  // namespace cp2::pretrain
