#include "cp2/pretrain/step.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "cp2/dist/comm.h"
#include "cp2/dist/reducer.h"
#include "cp2/models/init.h"

namespace cp2::pretrain {

CP2Model make_model(const CP2Options& o, uint64_t seed) {
  torch::manual_seed(seed);
  CP2Model m(o);
  models::init_weights(m->q_module(), seed);
  m->sync_key_encoder();
  return m;
}

train::NamedTensors query_parameters(CP2ModelImpl& m) {
  train::NamedTensors params;
  for (auto& p : m.q_module().named_parameters()) params.emplace_back("encoder_q." + p.key(), p.value());
  return params;
}

StepResult train_step(CP2ModelImpl& model, train::Optimizer& opt, const data::Batch& b, double lr,
                      dist::GradientReducer* reducer) {
  StepResult r;
  // Forward, backward, then the one read of the logged numbers (train::backward says why).
  r.parts = model.forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k, /*read=*/false);
  train::backward(opt, r.parts.total, reducer);
  r.parts.read();
  if (const auto& comm = model.comm(); comm && comm->size() > 1) {
    // Every logged number of LossParts, averaged over ranks in one all-reduce.
    static constexpr double LossParts::*kLogged[] = {
        &LossParts::total_value, &LossParts::ins_value,        &LossParts::dense_value,
        &LossParts::acc1,        &LossParts::acc5,             &LossParts::acc_dense,
        &LossParts::acc_dense_chance, &LossParts::acc_dense_match, &LossParts::acc_dense_match_chance};
    std::vector<double> v;
    for (auto f : kLogged) v.push_back(r.parts.*f);
    const auto m = dist::mean_over_ranks(*comm, v);
    for (size_t i = 0; i < m.size(); ++i) r.parts.*kLogged[i] = m[i];
  }
  r.loss = r.parts.total_value;
  r.finite = std::isfinite(r.loss);  // every rank agrees: the loss is their mean
  r.stepped = train::step_if_finite(opt, r.finite, lr);
  // A finite loss enqueues its keys even where loss scaling skipped the update (MoCo enqueues
  // in the forward pass); a non-finite one enqueues nothing.
  if (r.finite) model.enqueue(r.parts.k_ins);
  r.parts.detach();  // the step is done: free its autograd graph now (loss.h says why)
  return r;
}

}  // namespace cp2::pretrain
