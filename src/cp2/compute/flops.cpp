#include "cp2/compute/flops.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "cp2/common.h"
#include "cp2/compute/precision.h"
#include "cp2/compute/winograd.h"

namespace cp2::compute {

bool OpShape::operator<(const OpShape& o) const {
  return std::tie(kind, in, weight, stride, padding, dilation, groups) <
         std::tie(o.kind, o.in, o.weight, o.stride, o.padding, o.dilation, o.groups);
}

namespace {

int64_t prod(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t e : v) p *= e;
  return p;
}

// Per spatial dimension: output positions × kernel taps, or where the convolution is dilated
// the (output position, tap) pairs whose input index lands in the image.
std::vector<int64_t> conv_tap_positions(const OpShape& s) {
  const bool dilated = std::any_of(s.dilation.begin(), s.dilation.end(), [](int64_t d) { return d != 1; });
  std::vector<int64_t> o;
  for (size_t d = 0; d + 2 < s.in.size(); ++d) {
    const int64_t n = s.in[d + 2], k = s.weight[d + 2], st = s.stride.size() > d ? s.stride[d] : 1,
                  p = s.padding.size() > d ? s.padding[d] : 0, dl = s.dilation.size() > d ? s.dilation[d] : 1;
    const int64_t out = (n + 2 * p - dl * (k - 1) - 1) / st + 1;
    if (!dilated || out <= 0) {
      o.push_back(std::max<int64_t>(out, 0) * k);
      continue;
    }
    int64_t in_image = 0;
    for (int64_t t = 0; t < k; ++t)
      for (int64_t i = 0; i < out; ++i) {
        const int64_t at = i * st - p + t * dl;
        in_image += at >= 0 && at < n;
      }
    o.push_back(in_image);
  }
  return o;
}

}  // namespace

double OpShape::flops() const {
  if (kind == "mm") return 2.0 * static_cast<double>(in[0]) * in[1] * in[2] * weight[1];
  // 2 · N · C_out · (C_in / groups) · (output pixel, tap) pairs
  return 2.0 * static_cast<double>(in[0]) * weight[0] * weight[1] * prod(conv_tap_positions(*this));
}

std::string OpShape::str() const {
  if (kind == "mm")
    return "mm " + (in[0] > 1 ? std::to_string(in[0]) + "x" : std::string()) + std::to_string(in[1]) + "x" +
           std::to_string(in[2]) + " @ " + std::to_string(in[2]) + "x" + std::to_string(weight[1]);
  std::string s = "conv " + shape_str(in) + " * " + shape_str(weight);
  if (!stride.empty() && stride[0] != 1) s += " stride " + std::to_string(stride[0]);
  if (!dilation.empty() && dilation[0] != 1) s += " dilation " + std::to_string(dilation[0]);
  return s;
}

namespace {

// The active count: one counter at a time; the callback may run on any thread.
std::mutex g_mu;
FlopCount* g_count = nullptr;

std::vector<int64_t> ints(const c10::IValue& v) {
  if (v.isIntList()) return v.toIntVector();
  std::vector<int64_t> out;
  if (v.isList())
    for (const auto& e : v.toListRef())
      if (e.isInt()) out.push_back(e.toInt());
  return out;
}

std::vector<int64_t> sizes(const c10::IValue& v) {
  return v.isTensor() ? v.toTensor().sizes().vec() : std::vector<int64_t>{};
}

void not_counted() {
  std::lock_guard<std::mutex> lk(g_mu);
  if (g_count) ++g_count->uncounted;
}

// Shapes of an unexpected form (another LibTorch version's arguments) are tallied, not counted.
void add(bool conv, const OpShape& s, double times) {
  if (times == 0) return;  // a backward that computes neither grad_input nor grad_weight
  if (s.in.size() < 3 || (conv && s.weight.size() != s.in.size())) return not_counted();
  const double f = s.flops() * times;
  std::lock_guard<std::mutex> lk(g_mu);
  if (!g_count) return;
  (conv ? g_count->conv : g_count->matmul) += f;
  g_count->by_shape[s] += f;
}

}  // namespace

void count_conv_flops(const OpShape& s, double times) { add(true, s, times); }
void count_matmul_flops(const OpShape& s, double times) { add(false, s, times); }

OpShape same_conv3x3(std::vector<int64_t> in, std::vector<int64_t> weight, int64_t dilation) {
  OpShape s;
  s.kind = "conv";
  s.in = std::move(in);
  s.weight = std::move(weight);
  s.stride = {1, 1};
  s.padding = s.dilation = {dilation, dilation};
  return s;
}

namespace {

// A one-element stride, padding or dilation applies to every spatial dimension, as in
// PyTorch (at::conv2d(x, w, {}, 1, 1) records [1], and convolution_backward keeps it so).
std::vector<int64_t> per_dim(std::vector<int64_t> v, size_t dims) {
  if (v.size() == 1 && dims > 1) v.assign(dims, v[0]);
  return v;
}

OpShape conv_shape(const c10::ArrayRef<const c10::IValue>& in, const std::vector<int64_t>& x, size_t arg) {
  OpShape s;
  s.kind = "conv";
  s.in = x;
  s.weight = sizes(in[arg]);
  const size_t dims = x.size() > 2 ? x.size() - 2 : 0;
  s.stride = per_dim(ints(in[arg + 2]), dims);
  s.padding = per_dim(ints(in[arg + 3]), dims);
  s.dilation = per_dim(ints(in[arg + 4]), dims);
  s.groups = in[arg + 7].isInt() ? in[arg + 7].toInt() : 1;
  return s;
}

OpShape mm_shape(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  OpShape s;
  s.kind = "mm";
  if (a.size() == 3 && b.size() == 3) {
    s.in = a;
    s.weight = {b[1], b[2]};
  } else if (a.size() == 2 && b.size() == 2) {
    s.in = {1, a[0], a[1]};
    s.weight = b;
  }
  return s;
}

std::unique_ptr<at::ObserverContext> on_op(const at::RecordFunction& fn) {
  const char* name = fn.name();
  if (!name || std::strncmp(name, "aten::", 6) != 0) return nullptr;
  const std::string op(name + 6);
  const auto in = fn.inputs();
  const bool conv = op == "convolution", conv_bw = op == "convolution_backward";
  const bool mm = op == "mm" || op == "bmm", addmm = op == "addmm" || op == "baddbmm";
  if (!conv && !conv_bw && !mm && !addmm) return nullptr;
  try {
    if (conv && in.size() >= 9) {
      // (input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
      if (in[6].isBool() && in[6].toBool()) return nullptr;  // transposed: not in these models
      add(true, conv_shape(in, sizes(in[0]), 1), 1);
    } else if (conv_bw && in.size() >= 11) {
      // (grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
      //  output_padding, groups, output_mask)
      if (!in[10].isBoolList()) {  // output_mask in another form: which grads ran is unknown
        not_counted();
        return nullptr;
      }
      const auto mask = in[10].toBoolList();
      const double times = (mask.size() > 0 && mask.get(0) ? 1 : 0) + (mask.size() > 1 && mask.get(1) ? 1 : 0);
      add(true, conv_shape(in, sizes(in[1]), 2), times);
    } else if (mm && in.size() >= 2) {
      add(false, mm_shape(sizes(in[0]), sizes(in[1])), 1);
    } else if (addmm && in.size() >= 3) {
      add(false, mm_shape(sizes(in[1]), sizes(in[2])), 1);
    } else {
      not_counted();
    }
  } catch (const std::exception&) {
    not_counted();  // an argument of an unexpected kind (another LibTorch version)
  }
  return nullptr;
}

}  // namespace

FlopCounter::FlopCounter() {
  {
    std::lock_guard<std::mutex> lk(g_mu);
    if (g_count) throw Error("FLOP counter: another count is running");
    g_count = new FlopCount();
  }
  handle_ = at::addGlobalCallback(at::RecordFunctionCallback(&on_op).needsInputs(true));
}

FlopCounter::~FlopCounter() {
  at::removeCallback(handle_);
  std::lock_guard<std::mutex> lk(g_mu);
  delete g_count;
  g_count = nullptr;
}

FlopCount FlopCounter::result() const {
  std::lock_guard<std::mutex> lk(g_mu);
  return *g_count;
}

StepFlops count_step(const std::function<void()>& step, double images, const std::string& device, const Numerics& n,
                     bool verbose, bool probe) {
  FlopCount count;
  {
    FlopCounter counter;
    step();
    count = counter.result();
  }
  StepFlops r;
  r.per_img = count.total() / images;
  const auto dtype = n.bf16 ? c10::kBFloat16 : n.fp16 ? c10::kHalf : c10::kFloat;
  if (probe) r.peak = probe_peak(count, device, dtype, n.channels_last, 3, 0.3, n.winograd);
  if (count.uncounted > 0)
    std::fprintf(stderr,
                 "warning: FLOP count: %lld convolution/matmul calls had arguments of a form this build does not "
                 "know (LibTorch version?) and are not counted: GFLOP/s figures are too low\n",
                 static_cast<long long>(count.uncounted));
  if (verbose)
    std::printf("numerics       %s; one step = %.2f GFLOP (conv %.2f, matmul %.2f); probe %.1f GFLOP/s on %s\n",
                n.describe().c_str(), count.total() / 1e9, count.conv / 1e9, count.matmul / 1e9, r.peak.gflops,
                r.peak.shape.c_str());
  return r;
}

std::string rate_line(double flops_per_img, double img_s, double peak_gflops) {
  char buf[256];
  const double g = flops_per_img * img_s / 1e9;
  if (peak_gflops > 0)
    std::snprintf(buf, sizeof buf, "%.2f GFLOP/img, %.1f GFLOP/s = %.0f %% of the probe's %.1f", flops_per_img / 1e9, g,
                  100 * g / peak_gflops, peak_gflops);
  else
    std::snprintf(buf, sizeof buf, "%.2f GFLOP/img, %.1f GFLOP/s", flops_per_img / 1e9, g);
  return buf;
}

std::vector<std::pair<double, OpShape>> heaviest_shapes(const FlopCount& c, int top, bool convolutions_only) {
  std::vector<std::pair<double, OpShape>> order;
  // Dilated convolutions are left out: how fast one runs depends on how much of it reads
  // padding (ASPP's rate 12-36 on a 14 x 14 map; OpShape::flops counts only the rest) and on
  // the path cp2 takes for it (tap GEMMs, sub-grids), which the probe's at::convolution is not.
  for (const auto& [s, f] : c.by_shape)
    if (s.kind == "mm" ? !convolutions_only
                       : std::all_of(s.dilation.begin(), s.dilation.end(), [](int64_t d) { return d == 1; }))
      order.emplace_back(f, s);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  if (static_cast<int>(order.size()) > top) order.resize(static_cast<size_t>(std::max(top, 0)));
  return order;
}

double probe_shape(const OpShape& s, const std::string& device, c10::ScalarType dtype, bool channels_last,
                   double seconds, bool winograd) {
  torch::NoGradGuard ng;
  const torch::Device dev(device);
  const auto opts = torch::TensorOptions().device(dev).dtype(dtype);
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto sync = [&] {
    if (dev.is_cuda()) torch::randn({1}, opts).cpu();  // waits for the queue
  };
  std::function<void()> run;
  at::Tensor x, w;
  if (s.kind == "conv") {
    x = torch::randn(s.in, opts).contiguous(fmt);
    w = torch::randn(s.weight, opts).contiguous(fmt);
    const bool wino = winograd && dtype == c10::kFloat && !dev.is_cuda() && s.groups == 1 && s.weight[2] == 3 &&
                      s.weight[3] == 3 && s.stride == std::vector<int64_t>{1, 1} &&
                      s.padding == std::vector<int64_t>{1, 1};
    if (wino)
      run = [&] { winograd_conv3x3(x, w); };
    else
      run = [&] { at::convolution(x, w, {}, s.stride, s.padding, s.dilation, false, {0, 0}, s.groups); };
  } else {
    x = torch::randn({s.in[0], s.in[1], s.in[2]}, opts);
    w = torch::randn({s.in[0], s.weight[0], s.weight[1]}, opts);
    run = [&] { torch::bmm(x, w); };
  }
  run();
  sync();
  // The fastest single call, of at least three: on a shared VM a mean over a fraction of a
  // second can land in a slow moment (seen: one shape probed at 226, then 399 GFLOP/s).
  using clk = std::chrono::steady_clock;
  auto since = [](clk::time_point t) { return std::chrono::duration<double>(clk::now() - t).count(); };
  const auto t0 = clk::now();
  double best = 0;
  for (int n = 0; n < 1000 && (n < 3 || since(t0) < seconds); ++n) {
    const auto t = clk::now();
    run();
    sync();
    const double el = since(t);
    if (n == 0 || el < best) best = el;
  }
  return s.flops() / std::max(best, 1e-12) / 1e9;
}

ProbeResult probe_peak(const FlopCount& c, const std::string& device, c10::ScalarType dtype, bool channels_last, int top,
                       double seconds, bool winograd) {
  ProbeResult r;
  for (const auto& [f, s] : heaviest_shapes(c, top)) {
    const double g = probe_shape(s, device, dtype, channels_last, seconds, winograd);
    if (g > r.gflops) r = {g, s.str()};
  }
  return r;
}

}  // namespace cp2::compute
