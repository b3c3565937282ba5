// The CP² training step captured once as a CUDA graph and then replayed: one launch per step
// instead of the host issuing every kernel (on an H200 the eager step is bound by that host
// work at the authors' batch; docs/benchmarks.md, "GPU"). CUDA builds of LibTorch only.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cp2/pretrain/step.h"

namespace cp2::pretrain {

// What decides whether a run's steps can be CUDA graphs, known from the config before any
// model exists (so that train.cuda_graph: on is refused before the run folder opens).
struct GraphFacts {
  c10::Device device = c10::Device("cpu");
  std::string optimizer = "sgd";
  std::string schedule = "cosine-epoch";
  int processes = 1;
  bool key_bn_shuffle = false;  // key_bn_splits > 1 with shuffling
};
// From the options, before the model exists (the training loop's check), and from a model and
// its optimizer (the same facts, read back).
GraphFacts graph_facts(const CP2Options& model, const train::OptimOptions& optim, const c10::Device& device,
                       int processes);
GraphFacts graph_facts(const CP2ModelImpl& model, const train::Optimizer& opt);

// Why such a run's steps cannot be captured ("" when they can), the first of: AdamW (its bias
// correction changes every step), several processes (the gradient all-reduce is not
// captured), key-BN shuffling (a permutation drawn on the host), a schedule that changes the
// rate every step (poly, cosine-iter: a capture per step), not CUDA, a LibTorch without CUDA.
std::string graph_unsupported(const GraphFacts& f);

// train.cuda_graph (off | on | auto) resolved: whether the steps are CUDA graphs. Sets `why` to
// the reason they are not (empty when off was asked for). on with a reason throws it naming
// the key; auto falls back to eager steps.
bool resolve_cuda_graph(const std::string& setting, const GraphFacts& f, std::string& why);

class GraphedStep {
 public:
  // Captures one step (forward, backward, optimizer step at `lr`, enqueue) on batches shaped
  // like `example`. Capturing runs nothing: the model, optimizer and queue change only when
  // run() replays. The caller must have run at least one eager train_step at these shapes
  // first that updated the weights (cuDNN's algorithm choice and the optimizer's momentum
  // buffers exist before capture). `lr` and the loss scale are part of the graph: capture
  // again when one changes (the authors' schedule changes the rate once per epoch; loss
  // scaling halves the scale at a skipped step and doubles it after 2000 good ones). With
  // loss scaling (fp16) the step is two graphs, as the eager step's one host read splits it:
  // forward, backward and the gradients' finiteness, then, when they are finite, the update
  // and the enqueue. Throws with graph_unsupported()'s reason (the schedule aside).
  GraphedStep(CP2ModelImpl& model, train::Optimizer& opt, const data::Batch& example, double lr);
  ~GraphedStep();
  GraphedStep(const GraphedStep&) = delete;
  GraphedStep& operator=(const GraphedStep&) = delete;
  // Copies `b` into the graph's inputs, replays, reads the logged numbers (one device sync).
  // Without loss scaling the update is applied whatever the loss: a non-finite loss comes back
  // with finite = false after the weights took it (an eager step would have skipped it), so
  // stop the run then. With loss scaling it decides as the eager step: a non-finite loss
  // updates and enqueues nothing, non-finite gradients skip the update (the keys enqueued),
  // each halving the scale; otherwise the update's graph is replayed. Throws, changing nothing,
  // for a batch of other shapes or once the optimizer's loss scale is not the captured one.
  StepResult run(const data::Batch& b);
  double lr() const;
  double scale() const;  // the loss scale it was captured at (1 without loss scaling)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// How the training loop runs its steps (train.cuda_graph): eagerly, or replaying a CUDA graph
// captured per learning rate, loss scale and batch shape. A step replays the graph when it
// fits. When none does, a graph is captured if the step comes at the shape of the last eager
// step and an update has been made (a capture needs cuDNN's choices and the momentum buffers
// that eager steps make; fp16's first steps may all be skipped), replacing the previous one
// (one graph's memory at a time); otherwise the step runs eagerly. The authors'
// cosine schedule changes the rate once per epoch: one capture per epoch. A schedule that
// changes it every step (poly, cosine-iter) would capture every step: refused at start.
class StepRunner {
 public:
  // graphs = false: every step is train_step(). graphs = true: throws graph_unsupported()'s
  // reason (the schedule aside: the runner captures whenever the rate changes).
  StepRunner(CP2ModelImpl& model, train::Optimizer& opt, bool graphs, dist::GradientReducer* reducer = nullptr);
  ~StepRunner();
  StepResult step(const data::Batch& b, double lr);
  bool graphs() const { return graphs_; }
  bool last_replayed() const { return last_replayed_; }  // the last step was a graph's replay
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }
  int64_t eager_steps() const { return eager_; }

 private:
  CP2ModelImpl& model_;
  train::Optimizer& opt_;
  bool graphs_;
  dist::GradientReducer* reducer_;
  std::unique_ptr<GraphedStep> graph_;
  std::vector<int64_t> graph_shape_, warm_shape_;  // im_q's shape: captured / last eager step
  bool last_replayed_ = false;
  int64_t captures_ = 0, replays_ = 0, eager_ = 0;
};

}  // namespace cp2::pretrain
