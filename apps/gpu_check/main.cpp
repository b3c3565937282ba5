// cp2_gpu_check: the GPU path's short check (issue 11 §6). Built with LibTorch alone
// (cmake -DCP2_CORE_ONLY=ON, any LibTorch 1.13 / 2.x, CUDA or not); tools/gpu_check.sh
// builds and runs it. Four parts:
//  1. loss parity on the device: the CP² step fixtures of tools/make_parity_fixtures.py
//     (written on the CPU by an independent PyTorch computation) against cp2's forward on
//     --device, TF32 off; losses within 1e-4 relative, accuracies equal.
//     Then the training loop's CUDA-graph steps (pretrain/graph_step.h) against eager ones,
//     in fp32, AMP bf16 and AMP fp16 (off CUDA: the comparison itself, eager against eager,
//     fp32), and (CUDA) a batch pinned by another thread, as the loaders make them.
//  2. the R50-ASPP@224 model step (momentum update, both encoders, losses, backward, SGD,
//     enqueue; K 65536) in images/s at each --batches: fp32 and AMP bf16 (autocast) with
//     channels-last off and on, and AMP fp16 (dynamic loss scaling) channels-last, each
//     eager and (on CUDA) as a CUDA graph.
//  3. the ceiling of AMP's gain: the step's heaviest convolutions alone, in the authors' fp32
//     (TF32) and in AMP bf16 / fp16, at the largest batch.
//  4. finetuning (seg::train_step, the loop's step): two poly-lr SGD steps of DeepLabV3 R18
//     in float64 on --device against tools/make_parity_fixtures.py's finetune fixture (mmseg
//     0.x's loss, PyTorch on the CPU); then the DeepLabV3 R<arch> step at --finetune-crop²,
//     batch --finetune-batch, in images/s: fp32 NCHW (the authors'), fp32 channels-last and
//     AMP bf16 channels-last, eager.
// --parts picks among them (parity: 1's fixtures and 4's first half; graph: 1's CUDA-graph
// steps and pinned batch; step: 2; ceiling: 3; finetune: 4's timing), so that a GPU session
// can rerun one part alone. Exit status 1 when a parity check fails.
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cp2/common.h"
#include "cp2/compute/flops.h"
#include "cp2/data/batch.h"
#include "cp2/io/checkpoint.h"
#include "cp2/io/weights.h"
#include "cp2/models/init.h"
#include "cp2/models/segmentor.h"
#include "cp2/pretrain/state_io.h"
#include "cp2/pretrain/graph_step.h"
#include "cp2/pretrain/step.h"
#include "cp2/seg/step.h"
#ifdef CP2_WITH_CUDA  // CMake defines it where the LibTorch has CUDA (torch_cuda)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

using namespace cp2;

// --parts' names (each on by default).
const std::vector<std::string> kParts{"parity", "graph", "step", "ceiling", "finetune"};

struct Args {
  std::string fixtures, device = "cuda";
  int arch = 50, size = 224, steps = 10, warmup = 3, ceiling_shapes = 8;
  int finetune_crop = 512, finetune_batch = 16;  // 0: no finetuning timing
  int64_t queue = 65536;
  std::vector<int64_t> batches{32, 64};
  std::set<std::string> parts{kParts.begin(), kParts.end()};
  bool runs(const char* part) const { return parts.count(part) > 0; }
};

// why "": the usage asked for (--help), on stdout with status 0.
[[noreturn]] void usage(const std::string& why) {
  std::FILE* to = why.empty() ? stdout : stderr;
  if (!why.empty()) std::fprintf(to, "error: %s\n", why.c_str());
  std::fprintf(to,
               "usage: cp2_gpu_check --fixtures DIR (for parity) [--device cuda] [--arch 50] [--size 224] "
               "[--batches 32,64] [--steps 10] [--warmup 3] [--queue 65536] [--ceiling-shapes 8 (0: none)] "
               "[--finetune-batch 16 (0: none)] [--finetune-crop 512] [--parts parity,graph,step,ceiling,finetune]\n"
               "tools/gpu_check.sh runs it; bash tools/gpu_check.sh --help says what each part does\n");
  std::exit(why.empty() ? 0 : 2);
}

// "a,b,c" -> {"a", "b", "c"}; "" -> {}.
std::vector<std::string> split_commas(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "-h" || k == "--help") usage("");
    if (i + 1 >= argc) usage("missing value after " + k);
    const std::string v = argv[++i];
    try {
      if (k == "--fixtures") a.fixtures = v;
      else if (k == "--device") a.device = v;
      else if (k == "--arch") a.arch = std::stoi(v);
      else if (k == "--size") a.size = std::stoi(v);
      else if (k == "--steps") a.steps = std::stoi(v);
      else if (k == "--warmup") a.warmup = std::stoi(v);
      else if (k == "--queue") a.queue = std::stoll(v);
      else if (k == "--ceiling-shapes") a.ceiling_shapes = std::stoi(v);
      else if (k == "--finetune-batch") a.finetune_batch = std::stoi(v);
      else if (k == "--finetune-crop") a.finetune_crop = std::stoi(v);
      else if (k == "--parts") {
        a.parts.clear();
        for (const auto& p : split_commas(v)) {
          if (std::find(kParts.begin(), kParts.end(), p) == kParts.end())
            usage("--parts: expected " + join({kParts.begin(), kParts.end() - 1}) + " or " + kParts.back() +
                  ", found '" + p + "'");
          a.parts.insert(p);
        }
        if (a.parts.empty()) usage("--parts: expected one part or more, found none");
      } else if (k == "--batches") {
        a.batches.clear();
        for (const auto& b : split_commas(v)) a.batches.push_back(std::stoll(b));
      } else usage("unknown option " + k);
    } catch (const std::invalid_argument&) {
      usage(k + ": expected a number, found '" + v + "'");
    }
  }
  if (a.batches.empty()) usage("--batches: expected one batch size or more, found none");
  for (int64_t b : a.batches)
    if (b < 1) usage("--batches: expected sizes >= 1, found " + std::to_string(b));
  const auto at_least = [](const char* flag, int64_t v, int64_t min) {
    if (v < min) usage(std::string(flag) + ": expected >= " + std::to_string(min) + ", found " + std::to_string(v));
  };
  at_least("--steps", a.steps, 1);
  at_least("--warmup", a.warmup, 0);
  at_least("--ceiling-shapes", a.ceiling_shapes, 0);
  at_least("--finetune-batch", a.finetune_batch, 0);
  at_least("--finetune-crop", a.finetune_crop, 1);
  at_least("--queue", a.queue, 1);
  return a;
}

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// Peak bytes the caching allocator handed out since the last reset, as PyTorch's
// torch.cuda.max_memory_allocated() (-1 where not known: CPU, or a LibTorch without CUDA).
int64_t peak_device_bytes(const torch::Device& d, bool reset) {
#ifdef CP2_WITH_CUDA
  if (d.is_cuda()) {
    const c10::DeviceIndex i = d.has_index() ? d.index() : 0;
    if (reset) c10::cuda::CUDACachingAllocator::resetPeakStats(i);
    return c10::cuda::CUDACachingAllocator::getDeviceStats(i).allocated_bytes[0].peak;  // [0]: all pools
  }
#endif
  (void)d;
  (void)reset;
  return -1;
}

double rel(const at::Tensor& a, const at::Tensor& b) {
  return std::abs(a.item<double>() - b.item<double>()) / std::max(std::abs(b.item<double>()), 1e-30);
}

// The numerics a training run takes for train.precision and train.channels_last on `dev`
// (train.precision resolved as the loops resolve it).
compute::Numerics numerics_for(const std::string& precision, bool channels_last, const torch::Device& dev, int arch) {
  compute::NumericsOptions no;
  no.precision = precision;
  no.channels_last = channels_last ? "true" : "false";
  return compute::resolve_numerics(no, dev.str(), arch);
}
// A timed line's name for train.precision: fp32, or AMP with its type.
std::string numerics_label(const std::string& precision) { return precision == "fp32" ? "fp32" : "AMP " + precision; }

// A timed configuration (parts 2 and 4b): images/s, GFLOP/s (compute/flops.h's count), peak
// device memory (-1: not known) and notes, or the error that stopped it.
struct Timing {
  double img_s = 0, gflops = 0, peak_gib = -1;
  std::string note, error;
  std::string str() const {
    if (!error.empty()) return "failed: " + error;
    char b[96];
    std::snprintf(b, sizeof b, "%9.2f img/s %9.1f GFLOP/s", img_s, gflops);
    std::string r = b;
    if (peak_gib >= 0) {
      std::snprintf(b, sizeof b, " %6.1f GiB peak", peak_gib);
      r += b;
    }
    return r + note;
  }
};

// FLOPs per image of an eager step (it runs once, counted; a graph replay dispatches no ops
// to count).
template <class Step>
double flops_per_img(Step&& step, int64_t batch, const torch::Device& dev, const compute::Numerics& n) {
  return compute::count_step(step, static_cast<double>(batch), dev.str(), n, /*verbose=*/false, /*probe=*/false)
      .per_img;
}

// Times `steps` calls of `step` (each on `batch` images of `flops` FLOPs; it reads its logged
// numbers, one device sync per step as the loops'): images/s, GFLOP/s and the peak
// device memory since `peak_device_bytes` was last reset.
template <class Step>
Timing timed(const torch::Device& dev, int steps, int64_t batch, double flops, Step&& step) {
  sync(dev);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  sync(dev);
  Timing t;
  t.img_s = steps * batch / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  t.gflops = flops * t.img_s / 1e9;
  t.peak_gib = peak_device_bytes(dev, false) / double(1 << 30);
  return t;
}

// Part 1. Returns false on a mismatch.
bool parity(const Args& a, const torch::Device& dev) {
  bool ok = true;
  for (const std::string tag : {"cp2_step_r18_96", "cp2_step_r50_224"}) {
    const std::string base = a.fixtures + "/" + tag;
    if (!std::filesystem::exists(base + ".pt")) {
      std::printf("[parity] %s: missing %s.pt (run tools/make_parity_fixtures.py --out %s)\n", tag.c_str(),
                  base.c_str(), a.fixtures.c_str());
      ok = false;
      continue;
    }
    pretrain::CP2Options o;
    o.encoder.backbone.depth = tag.find("r18") != std::string::npos ? 18 : 50;
    o.queue_size = 256;
    pretrain::CP2Model m(o);
    pretrain::load_pretrain_state(*m, base + ".pt", /*strict=*/true);
    m->to(dev);
    m->train();
    auto b = pretrain::load_batch(base + "_batch.pt");
    std::map<std::string, at::Tensor> ref;
    for (auto& [k, v] : io::flatten(io::load_checkpoint(base + "_ref.pt").root))
      if (v->kind == py::Kind::Tensor) ref[k] = v->tensor;
    auto r = m->forward_step(b.im_q.to(dev), b.im_k.to(dev), b.mask_q.to(dev), b.mask_k.to(dev));
    const double ei = rel(r.loss_ins.cpu(), ref["loss_ins"]), ed = rel(r.loss_dense.cpu(), ref["loss_dense"]),
                 et = rel(r.total.cpu(), ref["total"]);
    const bool acc = r.acc1 == ref["acc1"].item<double>() && r.acc5 == ref["acc5"].item<double>() &&
                     r.acc_dense == ref["acc_dense"].item<double>();
    const bool pass = ei <= 1e-4 && ed <= 1e-4 && et <= 1e-4 && acc;
    std::printf("[parity] %s on %s: loss_ins rel %.2e, loss_dense rel %.2e, total rel %.2e, accuracies %s: %s\n",
                tag.c_str(), dev.str().c_str(), ei, ed, et, acc ? "equal" : "DIFFER", pass ? "PASS" : "FAIL");
    ok = ok && pass;
  }
  return ok;
}

// The loaders' batches on a CUDA run (data::batch_tensor): made page-locked by a thread other
// than the training one, then copied to the device asynchronously, as the loops do.
bool pinned_batch(const torch::Device& dev) {
  at::Tensor host;
  std::string err;
  std::thread loader([&] {
    try {
      host = data::batch_tensor({8, 3, 224, 224}, at::kFloat, dev);
      host.copy_(torch::arange(host.numel(), torch::kFloat).view(host.sizes()));
    } catch (const std::exception& e) {
      err = e.what();
    }
  });
  loader.join();
  bool ok = err.empty() && host.is_pinned();
  if (ok) {
    const auto on_dev = host.to(dev, /*non_blocking=*/true);
    ok = torch::equal(on_dev.cpu(), host);
  }
  const std::string why = err.empty() ? std::string() : ": " + first_line(err);
  std::printf("[pin] a batch pinned by a loader thread for %s, copied asynchronously: %s%s\n", dev.str().c_str(),
              ok ? "PASS" : "FAIL", why.c_str());
  return ok;
}

// Part 1b: the training loop's CUDA-graph steps (pretrain::StepRunner, train.cuda_graph)
// against eager steps, R18-ASPP@96, K 256, TF32 off, deterministic cuDNN. Two identical
// models take the same 7 steps, batch 8 except a short one of 4, the rate halved after 3
// steps: one eagerly, the other through the runner, which must run 2 steps eagerly (the
// first, the short one), capture twice (the first batch-8 step at each rate) and replay 5
// times. Before each step the runner's model is set to the eager one's state (weights,
// buffers, queue, momentum), in place so that the graphs' addresses hold, so each step is
// compared on its own: over 7 steps the smallest difference spreads (a 1e-7 relative change
// of every gradient moved the weights' 7-step update by 1e-2 in the PyTorch reference).
// Compared per step: the loss, the update (|Δb - Δa| / |Δa|, L2 over every parameter), the
// momentum buffers, the queue; at the end the pointer and the step counts. In fp32 NCHW, in
// AMP bf16 channels-last (a replay casts the weights at each use where the eager step caches
// its casts within a step: the same values) and in AMP fp16 channels-last with loss scaling
// from 2^24 (two graphs a step; a scale high enough that early steps may overflow and be
// skipped, each skip a new scale and so a new capture: there the loss scale and the skipped
// steps must agree, and the counts need only add up). Off CUDA the runner runs eagerly (7
// eager steps expected): the comparison itself is checked, every difference 0.
bool graph_parity(const torch::Device& dev, const std::string& precision, bool channels_last) {
  const bool fp32 = precision == "fp32", graphs = dev.is_cuda();
  const double loss_tol = fp32 ? 1e-5 : 5e-3, update_tol = fp32 ? 1e-3 : 3e-2, queue_tol = fp32 ? 1e-5 : 3e-2;
  const std::string tag = precision + (channels_last ? " channels-last" : " NCHW");
  // cuDNN's settings come back however the check ends (the timing part needs autotuning).
  struct CudnnSettings {
    bool det = at::globalContext().deterministicCuDNN(), bench = at::globalContext().benchmarkCuDNN();
    ~CudnnSettings() {
      at::globalContext().setDeterministicCuDNN(det);
      at::globalContext().setBenchmarkCuDNN(bench);
    }
  } restore;
  try {
    at::globalContext().setDeterministicCuDNN(true);
    at::globalContext().setBenchmarkCuDNN(false);
    pretrain::CP2Options o;
    o.encoder.backbone.depth = 18;
    o.queue_size = 256;
    const auto n = numerics_for(precision, channels_last, dev, o.encoder.backbone.depth);
    auto make = [&] {
      auto m = pretrain::make_model(o, 3);
      m->to(dev);
      m->set_numerics(n);
      m->train();
      return m;
    };
    auto ma = make(), mb = make();
    train::OptimOptions oo;
    train::Optimizer oa(pretrain::query_parameters(*ma), oo), ob(pretrain::query_parameters(*mb), oo);
    if (n.loss_scaling) {
      oa.enable_loss_scaling(0x1p24);
      ob.enable_loss_scaling(0x1p24);
    }
    pretrain::StepRunner runner(*mb, ob, graphs);
    torch::manual_seed(5);
    const int64_t N = 8, S = 96;
    auto mask = (torch::rand({N, S, S}) > 0.4).to(torch::kFloat);
    data::Batch b{torch::randn({N, 3, S, S}).to(dev), torch::randn({N, 3, S, S}).to(dev), mask.to(dev),
                  mask.flip({2}).to(dev)};
    data::Batch shortb{b.im_q.narrow(0, 0, 4), b.im_k.narrow(0, 0, 4), b.mask_q.narrow(0, 0, 4),
                       b.mask_k.narrow(0, 0, 4)};
    const double lrs[] = {0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005};
    auto l2 = [](const at::Tensor& t) { return t.to(torch::kDouble).pow(2).sum().item<double>(); };
    double loss_err = 0, update_err = 0, buf_err = 0, q_err = 0;
    for (int s = 0; s < 7; ++s) {
      std::map<std::string, at::Tensor> before;
      {
        torch::NoGradGuard ng;
        auto pb = mb->named_parameters();
        for (const auto& kv : ma->named_parameters()) {
          before[kv.key()] = kv.value().detach().clone();
          pb[kv.key()].copy_(kv.value());
        }
        auto bb = mb->named_buffers();
        for (const auto& kv : ma->named_buffers()) bb[kv.key()].copy_(kv.value());
        const auto sa = oa.state(), sb = ob.state();
        for (size_t i = 0; i < sa.size() && i < sb.size(); ++i)
          if (sa[i].first.rfind("momentum_buffer.", 0) == 0) sb[i].second.copy_(sa[i].second);
      }
      const auto& x = s == 5 ? shortb : b;
      const auto ra = pretrain::train_step(*ma, oa, x, lrs[s]);
      const auto rb = runner.step(x, lrs[s]);
      loss_err = std::max(loss_err, std::abs(ra.loss - rb.loss) / std::max(std::abs(ra.loss), 1e-30));
      double d2 = 0, m2 = 0;
      auto pb = mb->named_parameters();
      for (const auto& kv : ma->named_parameters()) {
        d2 += l2(kv.value() - pb[kv.key()]);
        m2 += l2(kv.value() - before[kv.key()]);
      }
      update_err = std::max(update_err, std::sqrt(d2 / std::max(m2, 1e-300)));
      double bd = 0, bn = 0;
      const auto sa = oa.state(), sb = ob.state();
      if (sa.size() != sb.size()) throw Error("the optimizers' states differ in size");
      for (size_t i = 0; i < sa.size(); ++i)
        if (sa[i].first.rfind("momentum_buffer.", 0) == 0) {
          bd += l2(sa[i].second - sb[i].second);
          bn += l2(sa[i].second);
        }
      buf_err = std::max(buf_err, std::sqrt(bd / std::max(bn, 1e-300)));
      q_err = std::max(q_err, (ma->queue - mb->queue).abs().max().item<double>() /
                                  std::max(ma->queue.abs().max().item<double>(), 1e-30));
    }
    const bool ptr_eq = torch::equal(ma->queue_ptr.cpu(), mb->queue_ptr.cpu()) && oa.steps() == ob.steps() &&
                        oa.loss_scale() == ob.loss_scale() && oa.skipped_steps() == ob.skipped_steps();
    const int64_t want_eager = graphs ? 2 : 7, want_captures = graphs ? 2 : 0, want_replays = graphs ? 5 : 0;
    const bool skips = oa.skipped_steps() > 0;
    const bool counts = skips ? runner.eager_steps() + runner.replays() == 7 && (!graphs || runner.replays() > 0)
                              : runner.eager_steps() == want_eager && runner.captures() == want_captures &&
                                    runner.replays() == want_replays;
    const bool pass = loss_err <= loss_tol && update_err <= update_tol && buf_err <= update_tol && q_err <= queue_tol &&
                      ptr_eq && counts;
    const std::string scaled_what = n.loss_scaling ? ", loss scales, skipped steps" : "",
                      scaled_state = n.loss_scaling ? " (" + std::to_string(oa.skipped_steps()) + " skipped, scale 2^" +
                                                          std::to_string(static_cast<int>(std::log2(oa.loss_scale()))) + ")"
                                                    : "";
    std::printf("[graph] R18-ASPP@96 %s, 7 steps, eager vs train.cuda_graph %s (%lld eager, %lld captures, %lld "
                "replays; expected %lld, %lld, %lld), worst step: loss rel %.2e (tolerance %.0e), update rel %.2e, "
                "momentum rel %.2e (tolerance %.0e), queue rel %.2e (tolerance %.0e); pointers and step counts%s %s%s: "
                "%s\n",
                tag.c_str(), graphs ? "on" : "off (not CUDA)", static_cast<long long>(runner.eager_steps()),
                static_cast<long long>(runner.captures()), static_cast<long long>(runner.replays()),
                static_cast<long long>(want_eager), static_cast<long long>(want_captures),
                static_cast<long long>(want_replays), loss_err, loss_tol, update_err, buf_err, update_tol, q_err,
                queue_tol, scaled_what.c_str(), ptr_eq ? "equal" : "DIFFER", scaled_state.c_str(), pass ? "PASS" : "FAIL");
    return pass;
  } catch (const std::exception& e) {
    std::printf("[graph] %s failed: %s\n", tag.c_str(), error_line(e).c_str());
    return false;
  }
}

// The model that parts 2 and 3 time: R<arch>-ASPP with a queue of --queue keys, on `dev`,
// in training mode.
pretrain::CP2Model step_model(const Args& a, const torch::Device& dev) {
  pretrain::CP2Options o;
  o.encoder.backbone.depth = a.arch;
  o.queue_size = a.queue;
  auto m = pretrain::make_model(o, 0);
  m->to(dev);
  m->train();
  return m;
}

// A pretraining batch of random views whose masks overlap in a centred square.
data::Batch step_batch(int64_t batch, int64_t S, const torch::Device& dev) {
  auto opts = torch::TensorOptions().device(dev);
  auto mask = torch::zeros({batch, S, S}, opts);
  mask.slice(1, S / 8, S - S / 8).slice(2, S / 8, S - S / 8).fill_(1);
  return {torch::randn({batch, 3, S, S}, opts), torch::randn({batch, 3, S, S}, opts), mask, mask.flip({1})};
}

// Part 2: one configuration's timing. The model computes in the numerics as `cp2 pretrain`
// would (train.precision bf16|fp16 / train.channels_last: autocast around the encoders only;
// fp16 with dynamic loss scaling, as train.loss_scale: auto).
Timing time_step(const Args& a, const torch::Device& dev, int64_t batch, const std::string& precision,
                 bool channels_last, bool graph) {
  try {
    peak_device_bytes(dev, /*reset=*/true);
    auto m = step_model(a, dev);
    const auto n = numerics_for(precision, channels_last, dev, a.arch);
    m->set_numerics(n);
    train::OptimOptions oo;
    oo.lr = 0.03;
    train::Optimizer opt(pretrain::query_parameters(*m), oo);
    if (n.loss_scaling) opt.enable_loss_scaling(n.loss_scale_init);
    const auto b = step_batch(batch, a.size, dev);
    const double lr = 0.03 * batch / 256;
    auto eager = [&] { pretrain::train_step(*m, opt, b, lr); };
    for (int i = 0; i < a.warmup; ++i) eager();
    const double flops = flops_per_img(eager, batch, dev, n);
    // Graphs through the training loop's runner: it captures once an update has been made at
    // this shape (fp16's first steps may be skipped by loss scaling) and again at a new scale.
    std::unique_ptr<pretrain::StepRunner> runner;
    if (graph) {
      runner = std::make_unique<pretrain::StepRunner>(*m, opt, true);
      for (int i = 0; i < 30 && (i < a.warmup || runner->replays() == 0); ++i) runner->step(b, lr);
      if (runner->replays() == 0) throw Error("no replay after 30 warm-up steps");
    }
    const int64_t skipped = opt.skipped_steps(), captures = runner ? runner->captures() : 0;
    auto t = timed(dev, a.steps, batch, flops, [&] {
      if (runner) runner->step(b, lr);  // reads the losses each step, as the eager step does
      else eager();
    });
    if (opt.skipped_steps() > skipped)
      t.note += " (" + count_of(opt.skipped_steps() - skipped, "timed step") + " skipped by loss scaling)";
    if (runner && runner->captures() > captures)
      t.note += " (" + std::to_string(runner->captures() - captures) + " captures while timed)";
    return t;
  } catch (const std::exception& e) {
    Timing t;
    t.error = error_line(e);
    return t;
  }
}

// Part 3: what AMP's arithmetic can gain over the authors' fp32 step (issue 11's target:
// AMP >= 2.5x it). The step's heaviest undilated convolutions (FLOPs counted over one step,
// forward and backward), each timed alone, forward, by the FLOP counter's probe
// (compute::heaviest_shapes, compute::probe_shape) in the authors' numerics (fp32, TF32 convolutions as PyTorch's
// default, NCHW) and in AMP's (bf16 / fp16, channels-last). Each shape's FLOPs over its
// rate, summed, is the time those convolutions need at that rate; the ratio of the sums is
// what AMP gains on that share of the step's FLOPs, unfused. (Hopper's dense bf16/fp16
// tensor-core rate is twice its TF32 rate by NVIDIA's datasheets, so a ratio near 2 says
// the 2.5x lies beyond the convolutions' arithmetic.) Backward kernels differ from the
// forward ones timed here: an estimate, printed as one.
void ceiling(const Args& a, const torch::Device& dev, int64_t batch, int top) {
  try {
    auto m = step_model(a, dev);
    train::Optimizer opt(pretrain::query_parameters(*m), train::OptimOptions{});
    const auto b = step_batch(batch, a.size, dev);
    compute::FlopCount count;
    {
      compute::FlopCounter counter;
      pretrain::train_step(*m, opt, b, 0.03 * batch / 256);
      count = counter.result();
    }
    const auto heavy = compute::heaviest_shapes(count, top, /*convolutions_only=*/true);
    double flops = 0;
    for (const auto& h : heavy) flops += h.first;
    std::printf("[ceiling] batch %lld: the heaviest %s, %.0f %% of the step's %.1f GFLOP, "
                "each alone, forward (an estimate of forward + backward)\n",
                static_cast<long long>(batch),
                count_of(heavy.size(), "undilated convolution").c_str(),
                100 * flops / std::max(count.total(), 1.0), count.total() / 1e9);
    struct Numerics {
      std::string name;
      c10::ScalarType dtype;
      bool channels_last;
    };
    const std::string fp32 = dev.is_cuda() ? "fp32 (TF32)" : "fp32";  // main() allows TF32 before timing
    std::vector<Numerics> lines{{fp32 + " NCHW", at::kFloat, false},
                                {fp32 + " channels-last", at::kFloat, true},
                                {"bf16 channels-last", at::kBFloat16, true}};
    if (dev.is_cuda()) lines.push_back({"fp16 channels-last", at::kHalf, true});
    double base = 0;
    for (const auto& l : lines) {
      double seconds = 0;
      for (const auto& [f, s] : heavy)
        seconds += f / std::max(compute::probe_shape(s, dev.str(), l.dtype, l.channels_last, 0.2) * 1e9, 1.0);
      if (base == 0) base = seconds;
      std::printf("[ceiling] batch %3lld %-26s %8.1f ms %9.2f TFLOP/s %6.2fx %s NCHW\n", static_cast<long long>(batch),
                  l.name.c_str(), 1e3 * seconds, flops / std::max(seconds, 1e-12) / 1e12,
                  base / std::max(seconds, 1e-12), fp32.c_str());
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::printf("[ceiling] batch %lld failed: %s\n", static_cast<long long>(batch), error_line(e).c_str());
  }
}

// Part 4a: the finetuning step on the device against tools/make_parity_fixtures.py's
// finetune fixture: DeepLabV3 R18 (5 classes, dropout off: its masks cannot match across
// frameworks), two SGD steps (momentum 0.9, mmcv's poly rate over 10 iterations) on mmseg
// 0.x's loss, in float64, written by PyTorch on the CPU. Here seg::train_step, the loop's
// step, runs them on --device, also in float64 (in float32 the two sides' convolutions
// differ in the 6th digit, enough to flip a ReLU input at zero; tests/seg/test_finetune.cpp
// checks the same fixture on the CPU with the same tolerances).
bool finetune_parity(const Args& a, const torch::Device& dev) {
  const std::string path = a.fixtures + "/finetune_r18.pt";
  try {
    if (!std::filesystem::exists(path))
      throw Error("missing " + path + " (run tools/make_parity_fixtures.py --out " + a.fixtures + ")");
    std::map<std::string, at::Tensor> fx;
    for (auto& [k, v] : io::flatten(io::load_checkpoint(path).root))
      if (v->kind == py::Kind::Tensor) fx[k] = v->tensor;
    auto prefixed = [&](const std::string& prefix) {
      io::TensorList out;
      for (const auto& [k, t] : fx)
        if (k.rfind(prefix, 0) == 0) out.emplace_back(k.substr(prefix.size()), t);
      return out;
    };
    models::SegmentorOptions so;
    so.backbone.depth = 18;
    so.head.proj_channels = 0;
    so.head.num_classes = 5;
    so.head.dropout = 0;
    so.validate();
    models::Segmentor m(so);
    m->to(torch::kDouble);
    io::load_state(*m, prefixed("state_dict."), /*strict=*/true, path);
    m->to(dev);
    m->train();
    const auto params = seg::model_parameters(*m);
    auto oo = seg::finetune_optim();  // at the fixture's rate
    oo.lr = 0.01;
    train::Optimizer opt(params, oo);
    const auto x = fx.at("input").to(dev), y = fx.at("label").to(dev);
    double loss_err = 0, lr_err = 0;
    for (int t = 0; t < 2; ++t) {
      const double lr = train::scheduled_lr(oo, oo.lr, 0, t, 10, 1);
      lr_err = std::max(lr_err, std::abs(lr - fx.at("lrs")[t].item<double>()));
      const auto r = seg::train_step(*m, opt, x, y, lr, {});
      loss_err = std::max(loss_err, std::abs(r.loss - fx.at("losses")[t].item<double>()));
    }
    double worst = 0;
    std::string worst_key;
    bool ints_equal = true;
    for (const auto& [k, t0] : io::state_dict(*m)) {
      const auto t = t0.cpu();
      const auto& ref = fx.at("after." + k);
      if (!t.is_floating_point()) {
        ints_equal = ints_equal && torch::equal(t, ref);
        continue;
      }
      const double e = (t - ref).abs().max().item<double>() / std::max(ref.abs().max().item<double>(), 1e-30);
      if (e > worst) worst = e, worst_key = k;
    }
    const bool pass = lr_err <= 1e-15 && loss_err <= 1e-10 && worst <= 1e-9 && ints_equal;
    std::printf("[parity] finetune DeepLabV3 R18, 2 SGD steps in float64 on %s: loss abs %.2e (tolerance 1e-10), "
                "worst tensor %s max rel %.2e (tolerance 1e-9), step counters %s: %s\n",
                dev.str().c_str(), loss_err, worst_key.c_str(), worst, ints_equal ? "equal" : "DIFFER",
                pass ? "PASS" : "FAIL");
    return pass;
  } catch (const std::exception& e) {
    std::printf("[parity] finetune on %s failed: %s\n", dev.str().c_str(), error_line(e).c_str());
    return false;
  }
}

// Part 4b: the finetuning step (seg::train_step: forward, mmseg's loss, backward, SGD) of
// DeepLabV3 R<arch> (output stride 16, 21 classes, dropout 0.1: configs/voc_r50_512.yaml) on a
// fixed random batch of --finetune-crop² crops whose top 8 rows are labelled 255, in the
// numerics `cp2 finetune` would run (as time_step).
Timing time_finetune(const Args& a, const torch::Device& dev, const std::string& precision, bool channels_last) {
  try {
    peak_device_bytes(dev, /*reset=*/true);
    seg::SegModelConfig mc;  // `cp2 finetune`'s model.* defaults
    mc.arch = a.arch;
    const auto so = mc.segmentor(21);
    torch::manual_seed(0);
    models::Segmentor m(so);
    models::init_weights(*m, 0);
    m->to(dev);
    const auto n = numerics_for(precision, channels_last, dev, a.arch);
    m->set_numerics(n);
    m->train();
    const auto params = seg::model_parameters(*m);
    const auto oo = seg::finetune_optim();
    train::Optimizer opt(params, oo);
    const int64_t B = a.finetune_batch, S = a.finetune_crop;
    torch::manual_seed(1);
    const auto image = torch::randn({B, 3, S, S}).to(dev);
    auto label = torch::randint(0, 21, {B, S, S}, torch::kLong);
    label.slice(1, 0, 8).fill_(255);
    label = label.to(dev);
    auto step = [&] { seg::train_step(*m, opt, image, label, oo.lr, {}); };
    for (int i = 0; i < a.warmup; ++i) step();
    return timed(dev, a.steps, B, flops_per_img(step, B, dev, n), step);
  } catch (const std::exception& e) {
    Timing t;
    t.error = error_line(e);
    return t;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const auto a = parse(argc, argv);
  if (a.fixtures.empty() && a.runs("parity"))
    usage("--fixtures DIR is required for --parts parity (tools/make_parity_fixtures.py writes it)");
  try {
    const torch::Device dev(a.device);
    if (dev.is_cuda() && !torch::cuda::is_available()) throw Error("--device " + a.device + ": CUDA is not available");
    // Every core, as cp2's programs: Debian's LibTorch starts with one intra-op thread (its CPU
    // runs are CI's check of this program, tests/apps/test_gpu_check.cpp).
    cp2::set_threads(0);
    // Parity in true fp32: TF32 would round the matmuls' inputs to 10 mantissa bits.
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
    std::printf("cp2_gpu_check: LibTorch %s, device %s\n", TORCH_VERSION, dev.str().c_str());
    bool ok = true;
    if (a.runs("parity")) {
      ok = parity(a, dev);
      ok = finetune_parity(a, dev) && ok;  // part 4a
    }
    if (a.runs("graph")) {
      ok = graph_parity(dev, "fp32", false) && ok;
      if (dev.is_cuda()) ok = graph_parity(dev, "bf16", true) && ok;
      if (dev.is_cuda()) ok = graph_parity(dev, "fp16", true) && ok;
      if (dev.is_cuda()) ok = pinned_batch(dev) && ok;
    }
    // Timing as a user's run would: TF32 allowed for fp32 convolutions (PyTorch's default),
    // cuDNN autotuning on (the authors' main.py: cudnn.benchmark = True; train::parse_device).
    at::globalContext().setAllowTF32CuDNN(true);
    at::globalContext().setBenchmarkCuDNN(true);
    if (a.runs("step")) {
      std::printf("[step] R%d-ASPP@%d, K %lld, %s after %d warm-up (img/s)\n", a.arch, a.size,
                  static_cast<long long>(a.queue), count_of(a.steps, "timed step").c_str(), a.warmup);
      for (int64_t batch : a.batches)
        for (const std::string precision : {"fp32", "bf16", "fp16"})
          for (bool cl : {false, true})
            for (bool graph : {false, true}) {
              // AMP fp16 in its usual layout only (time budget), and on CUDA only (train.precision's
              // rule); CUDA graphs on CUDA (fp16 with loss scaling as two, pretrain/graph_step.h).
              if (precision == "fp16" && (!cl || !dev.is_cuda())) continue;
              if (graph && !dev.is_cuda()) continue;
              const std::string label = numerics_label(precision);
              const std::string layout = std::string(cl ? "channels-last" : "NCHW") + (graph ? " graph" : "");
              std::printf("[step] batch %3lld %-9s %-19s %s\n", static_cast<long long>(batch), label.c_str(),
                          layout.c_str(), time_step(a, dev, batch, precision, cl, graph).str().c_str());
              std::fflush(stdout);
            }
    }
    if (a.runs("ceiling") && a.ceiling_shapes > 0)
      ceiling(a, dev, *std::max_element(a.batches.begin(), a.batches.end()), a.ceiling_shapes);
    // Part 4b (4a ran with the other parity checks).
    if (a.runs("finetune") && a.finetune_batch > 0) {
      std::printf("[finetune] DeepLabV3 R%d (output stride 16, 21 classes) at %d², %s after %d warm-up\n",
                  a.arch, a.finetune_crop, count_of(a.steps, "timed step").c_str(), a.warmup);
      for (const auto& [precision, cl] : std::vector<std::pair<std::string, bool>>{
               {"fp32", false}, {"fp32", true}, {"bf16", true}}) {
        const std::string label = numerics_label(precision);
        std::printf("[finetune] batch %3d %-9s %-13s %s\n", a.finetune_batch, label.c_str(),
                    cl ? "channels-last" : "NCHW", time_finetune(a, dev, precision, cl).str().c_str());
        std::fflush(stdout);
      }
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", cp2::error_message(e).c_str());
    return 1;
  }
}
