#include "cp2/train/run.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>

#include "cp2/common.h"
#include "cp2/io/checkpoint.h"

namespace fs = std::filesystem;

namespace cp2::train {

c10::Device parse_device(const std::string& s, const std::string& key) {
  std::unique_ptr<c10::Device> d;
  try {
    d = std::make_unique<c10::Device>(s);
  } catch (const std::exception&) {
    throw Error(key + ": expected cpu, cuda or cuda:N, found '" + s + "'");
  }
  if (d->is_cuda() && !torch::cuda::is_available())
    throw Error(key + ": '" + s + "' requested but this LibTorch build has no usable CUDA device");
  return *d;
}

fs::path prepare_run_folder(const fs::path& out, const std::string& config_text) {
  const fs::path ckdir = out / "checkpoints";
  std::error_code ec;
  fs::create_directories(ckdir, ec);
  if (ec) throw Error(ckdir.string() + ": cannot create run folder (" + ec.message() + ")");
  std::ofstream f(out / "config.yaml");
  f << config_text;
  f.flush();
  if (!f) throw Error((out / "config.yaml").string() + ": cannot write");
  return ckdir;
}

py::ObjPtr state_entry(io::TensorList tensors) {
  for (auto& [k, t] : tensors) t = t.to(at::kCPU);
  return io::to_state_dict(tensors);
}

std::string checkpoint_name(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "checkpoint_%08lld.pt", static_cast<long long>(step));
  return buf;
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    auto n = e.path().filename().string();
    if (n.rfind("checkpoint_", 0) == 0 && e.path().extension() == ".pt") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void rotate_checkpoints(const fs::path& dir, int keep) {
  auto all = list_checkpoints(dir);
  std::error_code ec;
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove(all[i], ec);
}

std::string resolve_checkpoint(const std::string& file_or_run) {
  std::error_code ec;
  if (fs::is_regular_file(file_or_run, ec)) return file_or_run;
  if (!fs::exists(file_or_run, ec)) throw Error(file_or_run + ": no such checkpoint or run folder");
  auto list = list_checkpoints(fs::path(file_or_run) / "checkpoints");
  if (list.empty()) list = list_checkpoints(file_or_run);
  if (list.empty()) throw Error(file_or_run + ": run folder holds no checkpoints/checkpoint_*.pt");
  return list.back().string();
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
  if (!st || !name || name->kind != py::Kind::Str) throw Error(path + ": no optimizer state to resume from");
  if (name->s != opt.options().name)
    throw Error(path + ": optimizer '" + name->s + "' saved, optim.name is '" + opt.options().name + "'");
  NamedTensors state;
  for (auto& [k, v] : st->dict)
    if (v->kind == py::Kind::Tensor) state.emplace_back(k->s, v->tensor);
  opt.load_state(state, path);
}

void expect_kind(const py::ObjPtr& root, const std::string& kind, const std::string& path, const std::string& what) {
  auto meta = root->get("cp2");
  auto k = meta ? meta->get("kind") : nullptr;
  if (!k || k->kind != py::Kind::Str || k->s != kind)
    throw Error(path + ": not a " + what + " (expected cp2.kind = '" + kind + "')");
}

int64_t get_int(const py::ObjPtr& root, const std::string& key, const std::string& path, const std::string& what) {
  auto o = root->get(key);
  if (!o || o->kind != py::Kind::Int) throw Error(path + ": not a " + what + " (no integer '" + key + "')");
  return o->i;
}

std::string fmt_time(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  long t = std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

Progress::Progress(bool enabled, int64_t log_every)
    : enabled_(enabled), tty_(isatty(fileno(stderr))), every_(std::max<int64_t>(log_every, 1)) {}

void Progress::update(const std::string& line, int64_t step, bool force) {
  if (!enabled_) return;
  if (tty_) {
    std::fprintf(stderr, "\r%-*s", static_cast<int>(std::max<size_t>(width_, line.size())), line.c_str());
    width_ = line.size();
    std::fflush(stderr);
  } else if (force || step % every_ == 0) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

void Progress::message(const std::string& msg) {
  if (!enabled_) return;
  if (tty_ && width_) std::fprintf(stderr, "\n");
  width_ = 0;
  std::fprintf(stderr, "%s\n", msg.c_str());
}

void Progress::done() {
  if (enabled_ && tty_ && width_) std::fprintf(stderr, "\n");
  width_ = 0;
}

std::string bar(int64_t done, int64_t total, int width) {
  const int filled = static_cast<int>(width * std::min(done, total) / std::max<int64_t>(total, 1));
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

}  // namespace cp2::train
