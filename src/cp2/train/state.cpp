#include "cp2/train/state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>

#include <mutex>

#include "cp2/common.h"
#include "cp2/dist/comm.h"

namespace cp2::train {

namespace {
c10::Device device_from_name(const std::string& s, const std::string& key) {
  try {
    return c10::Device(s);
  } catch (const std::exception&) {
    throw Error(key + ": expected cpu, cuda or cuda:N, found '" + s + "'");
  }
}
}  // namespace

void check_device_name(const std::string& s, const std::string& key) { device_from_name(s, key); }

c10::Device parse_device(const std::string& s, const std::string& key) {
  c10::Device d = device_from_name(s, key);
  if (d.is_cuda() && !torch::cuda::is_available())
    throw Error(key + ": '" + s + "' requested but this LibTorch build has no usable CUDA device");
  if (d.is_cuda()) {
    d = dist::process_cuda_device(d, dist::layout_from_env(), key);
    // Where a kernel, stream or CUDA graph is asked for without a device, this one is meant.
    c10::impl::getDeviceGuardImpl(c10::kCUDA)->setDevice(d);
    // cuDNN picks each convolution's algorithm by timing them once per shape, as the authors'
    // runs do (CP2 main.py: cudnn.benchmark = True; configs/config_finetune.py: cudnn_benchmark = True).
    at::globalContext().setBenchmarkCuDNN(true);
  }
  return d;
}

py::ObjPtr state_entry(io::TensorList tensors) {
  for (auto& [k, t] : tensors) t = t.to(at::kCPU);
  return io::to_state_dict(tensors);
}

py::ObjPtr rng_state() {
  auto rng = py::dict();
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lk(gen.mutex());
  py::set(rng, "torch_cpu", py::tensor(gen.get_state()));
  return rng;
}

void set_rng_state(const py::ObjPtr& rng) {
  if (!rng || !rng->get("torch_cpu")) return;
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lk(gen.mutex());
  gen.set_state(rng->get("torch_cpu")->tensor);
}

py::ObjPtr optimizer_entry(const Optimizer& opt) {
  auto o = py::dict();
  py::set(o, "name", py::str(opt.options().name));
  py::set(o, "state", state_entry(opt.state()));
  return o;
}

void load_optimizer_entry(Optimizer& opt, const py::ObjPtr& root, const std::string& path) {
  auto o = root->get("optimizer");
  auto st = o ? o->get("state") : nullptr;
  auto name = o ? o->get("name") : nullptr;
  if (!st || !name || name->kind != py::Kind::Str)
    throw Error(path + ": no optimizer state to resume from (best.pt holds weights only: resume from the run folder "
                       "or a checkpoints/checkpoint_*.pt file)");
  if (name->s != opt.options().name)
    throw Error(path + ": optimizer '" + name->s + "' saved, optim.name is '" + opt.options().name +
                "' (the optimizer cannot change on resume)");
  NamedTensors state;
  for (auto& [k, v] : st->dict)
    if (v->kind == py::Kind::Tensor) state.emplace_back(k->s, v->tensor);
  opt.load_state(state, path);
}

const CheckpointKind& pretrain_kind() {
  static const CheckpointKind k{"pretrain", "cp2 pretraining checkpoint", "cp2 pretrain"};
  return k;
}
const CheckpointKind& finetune_kind() {
  static const CheckpointKind k{"finetune", "cp2 finetune checkpoint", "cp2 finetune"};
  return k;
}

std::string kind_of(const py::ObjPtr& root) {
  auto meta = root ? root->get("cp2") : nullptr;
  auto k = meta ? meta->get("kind") : nullptr;
  return k && k->kind == py::Kind::Str ? k->s : "";
}

void expect_kind(const py::ObjPtr& root, const CheckpointKind& k, const std::string& path) {
  const std::string found = kind_of(root);
  if (found == k.kind) return;
  if (found == "finetune")
    throw Error(path + ": a cp2 finetune checkpoint, not a " + k.what + "; continue it with `cp2 finetune --resume " +
                path + "`, or evaluate it with `cp2 evaluate " + path + "`");
  if (found == "pretrain")
    throw Error(path + ": a cp2 pretraining checkpoint, not a " + k.what + "; continue it with `cp2 pretrain --resume " +
                path + "`, or finetune from it with `cp2 finetune --init " + path + "`");
  throw Error(path + ": not a " + k.what + " (no cp2.kind = '" + k.kind +
              "'); to start from its weights use --init " + path);
}

int64_t get_int(const py::ObjPtr& root, const std::string& key, const std::string& path, const std::string& what) {
  auto o = root->get(key);
  if (!o || o->kind != py::Kind::Int) throw Error(path + ": not a " + what + " (no integer '" + key + "')");
  return o->i;
}

std::string stored_config(const py::ObjPtr& root, const CheckpointKind& k, const std::string& path) {
  expect_kind(root, k, path);
  auto c = root->get("config");
  if (!c || c->kind != py::Kind::Str) throw Error(path + ": not a " + k.what + " (no 'config')");
  return c->s;
}

}  // namespace cp2::train
