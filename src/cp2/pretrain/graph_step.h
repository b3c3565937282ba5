// The CP² training step captured once as a CUDA graph and then replayed: one launch per step
// instead of the host issuing every kernel (on an H200 the eager step is bound by that host
// work at the authors' batch; docs/benchmarks.md, "GPU"). CUDA builds of LibTorch only.
#pragma once
#include <memory>
#include <string>

#include "cp2/pretrain/step.h"

namespace cp2::pretrain {

// Why `model`'s step cannot be captured on `device` ("" when it can): not CUDA, a LibTorch
// without CUDA, loss scaling (fp16: its skip decision reads the device), several processes,
// or key-BN shuffling (a permutation drawn on the host).
std::string graph_unsupported(const CP2ModelImpl& model, const train::Optimizer& opt, const c10::Device& device);

class GraphedStep {
 public:
  // Captures one step (forward, backward, optimizer step at `lr`, enqueue) on batches shaped
  // like `example`. Capturing runs nothing: the model, optimizer and queue change only when
  // run() replays. The caller must have run at least one eager train_step at these shapes
  // first (cuDNN's algorithm choice and the optimizer's momentum buffers exist before capture).
  // `lr` is part of the graph: capture again when it changes (the authors' schedule changes
  // it once per epoch). Throws with graph_unsupported()'s reason.
  GraphedStep(CP2ModelImpl& model, train::Optimizer& opt, const data::Batch& example, double lr);
  ~GraphedStep();
  GraphedStep(const GraphedStep&) = delete;
  GraphedStep& operator=(const GraphedStep&) = delete;
  // Copies `b` into the graph's inputs, replays, reads the logged numbers (one device sync).
  // The update is applied whatever the loss: a non-finite loss comes back with finite = false
  // after the weights took it (an eager step would have skipped it), so stop the run then.
  StepResult run(const data::Batch& b);
  double lr() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cp2::pretrain
