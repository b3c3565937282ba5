#include "cp2/pretrain/state_io.h"

#include <torch/torch.h>

#include "cp2/common.h"
#include "cp2/io/keymap.h"

namespace cp2::pretrain {

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
  std::vector<int64_t> want{b.im_q.size(0), b.im_q.size(2), b.im_q.size(3)};
  for (auto* m : {&b.mask_q, &b.mask_k})
    if (m->sizes().vec() != want)
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

io::TensorList drop_classifier(io::TensorList state, std::vector<std::string>* dropped) {
  io::TensorList out;
  for (auto& [k, t] : state) {
    const bool cls = k.find("decode_head.conv_seg.") != std::string::npos &&
                     (k.rfind("encoder_q.", 0) == 0 || k.rfind("encoder_k.", 0) == 0);
    if (!cls) out.emplace_back(k, t);
    else if (dropped) dropped->push_back(k);
  }
  return out;
}

io::TensorList strip_module(io::TensorList state) {
  for (auto& [k, t] : state)
    if (k.rfind("module.", 0) == 0) k = k.substr(7);
  return state;
}

io::TensorList read_pretrain_state(const std::string& path, std::vector<std::string>* dropped) {
  return drop_classifier(strip_module(io::find_state_dict(io::load_checkpoint(path))), dropped);
}

int64_t stored_queue_size(const io::TensorList& state) {
  for (const auto& [k, t] : state)
    if (k == "queue" && t.dim() == 2) return t.size(1);
  return 0;
}

io::LoadReport load_pretrain_state(CP2ModelImpl& m, const io::TensorList& state, const std::string& source,
                                   bool strict) {
  return io::load_state(m, state, strict, source);
}

io::LoadReport load_pretrain_state(CP2ModelImpl& m, const std::string& path, bool strict) {
  return load_pretrain_state(m, read_pretrain_state(path), path, strict);
}

}  // namespace cp2::pretrain
