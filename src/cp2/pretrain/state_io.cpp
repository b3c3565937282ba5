#include "cp2/pretrain/state_io.h"

#include <torch/torch.h>

#include "cp2/common.h"
#include "cp2/io/keymap.h"

namespace cp2::pretrain {

namespace {
io::TensorList strip_module(const io::TensorList& sd) {
  io::TensorList out;
  for (const auto& [k, t] : sd) out.emplace_back(k.rfind("module.", 0) == 0 ? k.substr(7) : k, t);
  return out;
}
}  // namespace

Batch load_batch(const std::string& path) {
  auto ck = io::load_checkpoint(path);
  auto get = [&](const char* key, int dim) {
    auto o = ck.root->get(key);
    if (!o || o->kind != py::Kind::Tensor)
      throw Error(path + ": batch file needs a tensor '" + key + "' (expected keys im_q, im_k, mask_q, mask_k)");
    if (o->tensor.dim() != dim)
      throw Error(path + ": '" + key + "' expected " + std::to_string(dim) + " dimensions, found " +
                  shape_str(o->tensor.sizes().vec()));
    return o->tensor.to(torch::kFloat).contiguous();
  };
  Batch b{get("im_q", 4), get("im_k", 4), get("mask_q", 3), get("mask_k", 3)};
  if (b.im_q.sizes() != b.im_k.sizes() || b.im_q.size(1) != 3)
    throw Error(path + ": im_q and im_k must both be N x 3 x H x W, found " + shape_str(b.im_q.sizes().vec()) +
                " and " + shape_str(b.im_k.sizes().vec()));
  std::vector<long> want{b.im_q.size(0), b.im_q.size(2), b.im_q.size(3)};
  for (auto* m : {&b.mask_q, &b.mask_k})
    if (m->sizes().vec() != std::vector<int64_t>(want.begin(), want.end()))
      throw Error(path + ": masks expected N x H x W = " + shape_str(want) + ", found " + shape_str(m->sizes().vec()));
  return b;
}

void save_batch(const std::string& path, const Batch& b) {
  auto root = py::dict();
  py::set(root, "im_q", py::tensor(b.im_q));
  py::set(root, "im_k", py::tensor(b.im_k));
  py::set(root, "mask_q", py::tensor(b.mask_q));
  py::set(root, "mask_k", py::tensor(b.mask_k));
  io::save_checkpoint(path, root);
}

int64_t stored_queue_size(const std::string& path) {
  for (const auto& [k, t] : strip_module(io::find_state_dict(io::load_checkpoint(path))))
    if (k == "queue" && t.dim() == 2) return t.size(1);
  return 0;
}

io::LoadReport load_pretrain_state(CP2ModelImpl& m, const std::string& path, bool strict) {
  auto sd = strip_module(io::find_state_dict(io::load_checkpoint(path)));
  return io::load_state(m, sd, strict, path);
}

}  // namespace cp2::pretrain
