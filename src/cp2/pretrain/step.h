// One CP² training step and the model a fresh run starts from: what the training loop, the
// benchmarks, the multi-process tests and the LibTorch-only GPU check share.
#pragma once
#include "cp2/data/batch.h"
#include "cp2/pretrain/model.h"
#include "cp2/train/optim.h"

namespace cp2::dist {
class GradientReducer;
}

namespace cp2::pretrain {

// A model as a fresh run starts it: weights and queue drawn from `seed` (mmsegmentation's
// init for the query encoder), key encoder = query encoder.
CP2Model make_model(const CP2Options& o, uint64_t seed);
// The query encoder's parameters under their state-dict names (the optimizer's keys).
train::NamedTensors query_parameters(CP2ModelImpl& m);

struct StepResult {
  LossParts parts;
  double loss = 0;
  bool finite = true;  // false: nothing was updated or enqueued (a skipped step with loss scaling)
  bool stepped = false;  // the optimizer updated the weights (not where loss scaling skipped the step)
};

// One optimisation step on a batch (already on the model's device): forward (momentum
// update, both encoders, losses), backward, the logged numbers read (one device sync, with
// the backward pass queued), then — if the loss is finite — optimizer step at `lr`, enqueue.
// The loop, the benchmark and the tests share it. Multi-process (the model's comm, world
// size > 1): the logged values are means over ranks (so every rank agrees on finiteness),
// `reducer` averages the gradients.
StepResult train_step(CP2ModelImpl& model, train::Optimizer& opt, const data::Batch& batch, double lr,
                      dist::GradientReducer* reducer = nullptr);

}  // namespace cp2::pretrain
