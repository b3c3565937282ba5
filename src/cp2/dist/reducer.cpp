#include "cp2/dist/reducer.h"

#include <torch/torch.h>

#include <chrono>
#include <mutex>

#include "cp2/common.h"

namespace cp2::dist {

void broadcast_tensors(Comm& comm, const std::vector<at::Tensor>& tensors) {
  if (comm.size() == 1) return;
  torch::NoGradGuard ng;
  // One flat buffer per dtype/device run: a handful of collectives instead of hundreds.
  size_t i = 0;
  while (i < tensors.size()) {
    size_t j = i;
    std::vector<at::Tensor> group;
    while (j < tensors.size() && tensors[j].scalar_type() == tensors[i].scalar_type() &&
           tensors[j].device() == tensors[i].device())
      group.push_back(tensors[j++].detach());
    std::vector<at::Tensor> flat_parts;
    for (auto& t : group) flat_parts.push_back(t.reshape({-1}));
    auto flat = torch::cat(flat_parts);
    comm.broadcast(flat);
    int64_t off = 0;
    for (auto& t : group) {
      t.copy_(flat.narrow(0, off, t.numel()).view_as(t));
      off += t.numel();
    }
    i = j;
  }
}

void broadcast_module(Comm& comm, torch::nn::Module& m) {
  std::vector<at::Tensor> state;
  for (auto& t : m.parameters()) state.push_back(t);
  for (auto& t : m.buffers()) state.push_back(t);
  broadcast_tensors(comm, state);
}

struct GradientReducer::State {
  struct Slot {
    at::Tensor param;
    int bucket = 0;
    int64_t offset = 0;
    bool ready = false;
  };
  struct Bucket {
    at::Tensor flat;
    std::vector<int> slots;
    int pending = 0;
    std::unique_ptr<Work> work;
  };
  std::shared_ptr<Comm> comm;
  std::vector<Slot> slots;
  std::vector<Bucket> buckets;
  std::mutex mu;
  bool armed = false;
  double wait_s = 0;

  void launch(Bucket& b) { b.work = comm->all_reduce_sum_async(b.flat); }

  void on_grad(int idx, const at::Tensor& g) {
    std::lock_guard<std::mutex> lk(mu);
    if (!armed) return;
    auto& s = slots[static_cast<size_t>(idx)];
    auto& b = buckets[static_cast<size_t>(s.bucket)];
    if (s.ready) throw Error("gradient reducer: " + std::to_string(idx) + " got two gradients in one backward");
    b.flat.narrow(0, s.offset, s.param.numel()).copy_(g.reshape({-1}));
    s.ready = true;
    if (--b.pending == 0) launch(b);
  }
};

GradientReducer::GradientReducer(std::shared_ptr<Comm> comm, const NamedTensors& params, int64_t bucket_bytes)
    : s_(std::make_shared<State>()) {
  s_->comm = std::move(comm);
  if (s_->comm->size() == 1) return;
  // Buckets in reverse registration order (backward's order), split at `bucket_bytes`
  // and wherever dtype or device changes.
  std::vector<int64_t> numel;  // per bucket
  int64_t used = 0;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    const auto& p = it->second;
    if (!p.requires_grad()) continue;
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const at::Tensor* prev = s_->slots.empty() ? nullptr : &s_->slots.back().param;
    if (!prev || used + bytes > bucket_bytes || prev->scalar_type() != p.scalar_type() || prev->device() != p.device()) {
      s_->buckets.emplace_back();
      numel.push_back(0);
      used = 0;
    }
    State::Slot slot;
    slot.param = p;
    slot.bucket = static_cast<int>(s_->buckets.size()) - 1;
    slot.offset = numel.back();
    numel.back() += p.numel();
    s_->buckets.back().slots.push_back(static_cast<int>(s_->slots.size()));
    s_->slots.push_back(slot);
    used += bytes;
  }
  for (size_t i = 0; i < s_->buckets.size(); ++i) {
    auto& b = s_->buckets[i];
    b.flat = torch::zeros({numel[i]}, s_->slots[static_cast<size_t>(b.slots[0])].param.options().requires_grad(false));
  }
  // The hook sees each parameter's gradient of this backward as soon as autograd has it.
  std::weak_ptr<State> weak = s_;
  for (size_t i = 0; i < s_->slots.size(); ++i) {
    auto p = s_->slots[i].param;
    const int idx = static_cast<int>(i);
    p.register_hook([weak, idx](const at::Tensor& g) {
      if (auto s = weak.lock()) s->on_grad(idx, g);
    });
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::prepare() {
  if (s_->comm->size() == 1) return;
  std::lock_guard<std::mutex> lk(s_->mu);
  for (auto& s : s_->slots) s.ready = false;
  for (auto& b : s_->buckets) {
    if (b.work) b.work->wait();  // an earlier step that failed between launch and finish
    b.work.reset();
    b.pending = static_cast<int>(b.slots.size());
  }
  s_->armed = true;
}

void GradientReducer::finish() {
  if (s_->comm->size() == 1) return;
  torch::NoGradGuard ng;
  {
    std::lock_guard<std::mutex> lk(s_->mu);
    s_->armed = false;
    for (auto& b : s_->buckets) {
      if (b.work) continue;
      for (int si : b.slots) {  // parameters that got no gradient this step: zeros
        auto& s = s_->slots[static_cast<size_t>(si)];
        if (!s.ready) b.flat.narrow(0, s.offset, s.param.numel()).zero_();
      }
      s_->launch(b);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  const double inv = 1.0 / s_->comm->size();
  for (auto& b : s_->buckets) {
    b.work->wait();
    b.work.reset();
    b.flat.mul_(inv);
    for (int si : b.slots) {
      auto& s = s_->slots[static_cast<size_t>(si)];
      if (!s.ready) continue;
      auto avg = b.flat.narrow(0, s.offset, s.param.numel()).view_as(s.param);
      auto& g = s.param.mutable_grad();
      if (g.defined())
        g.copy_(avg);
      else
        g = avg.clone();
    }
  }
  s_->wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int64_t GradientReducer::buckets() const { return static_cast<int64_t>(s_->buckets.size()); }
double GradientReducer::comm_wait_seconds() const { return s_->wait_s; }

}  // namespace cp2::dist
