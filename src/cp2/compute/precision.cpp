#include "cp2/compute/precision.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "cp2/common.h"
#include "cp2/compute/dilated.h"
#include "cp2/compute/gemm.h"
#include "cp2/compute/winograd.h"

namespace cp2::compute {

void NumericsOptions::validate() const {
  auto one_of = [](const char* key, const std::string& v, const std::vector<std::string>& c) {
    if (std::find(c.begin(), c.end(), v) == c.end())
      throw Error(std::string(key) + ": expected one of " + join(c) + ", found '" + v + "'");
  };
  one_of("train.precision", precision, precision_choices());
  one_of("train.conv_algorithm", conv_algorithm, conv_algorithm_choices());
  one_of("train.channels_last", channels_last, channels_last_choices());
  one_of("train.loss_scale", loss_scale, loss_scale_choices());
  if (!(loss_scale_init > 0) || !std::isfinite(loss_scale_init))
    throw Error("train.loss_scale_init: expected a positive finite number, found " + num_str(loss_scale_init));
}

std::string conv_algorithm_help() {
  return "3x3 convolutions in fp32 on the CPU: direct (as PyTorch), winograd (Winograd F(4x4,3x3): oneDNN's kernels "
         "on AVX-512 CPUs, cp2's on AVX2 ones, for " +
         cp2_tiles_rule() +
         " and for dilated convolutions on any CPU (their sub-grids tiled in place, any map size), and cp2's "
         "F(3x3,3x3) on maps that 4x4 tiles would fill half or less (1-3, 5, 6, 9 px), each only where measured "
         "faster, e.g. from 32 tiles up; dilated ones whose taps mostly read padding (ASPP) as one GEMM per tap over "
         "the pixels it reads; ASPP's bottleneck with its image-pool channels multiplied once per image on cp2's "
         "tiles; on channels-last maps ResNet-50's 1x1s as GEMMs (AVX-512); batch norm with its ReLU in one pass "
         "each way (AVX2); the pretraining loss's logits against the queue through oneDNN's sgemm; differs "
         "from direct by fp32 round-off; and ResNet's stem max pool in one AVX2 pass, PyTorch's values exactly) or "
         "auto (winograd where available)";
}

std::string Numerics::describe() const {
  return std::string(bf16   ? "bf16 autocast (fp32 weights, losses, optimizer)"
                     : fp16 ? "fp16 autocast (fp32 weights, losses, optimizer)"
                            : "fp32") +
         (auto_fp32_reason.empty() ? "" : " (precision auto: " + auto_fp32_reason + ")") +
         (loss_scaling ? ", dynamic loss scaling" : "") + ", " +
         (channels_last ? "channels-last" : "NCHW") +
         (nchw_reason.empty() ? "" : " (channels_last " + nchw_reason + ")") +
         (winograd ? std::string(", Winograd 3x3 (") + winograd_kernels_name(winograd_kernels()) +
                         (winograd_kernels_available(WinogradKernels::tiles)
                              ? "; cp2's for dilated ones, " + cp2_tiles_rule() +
                                    " and F(3x3) where 4x4 tiles would be half empty"
                              : "") +
                         ")" + (sgemm_is_onednn() ? ", dilated 3x3 as tap GEMMs where sub-grids multiply more" : "")
                   : "");
}

namespace {

// The first processor's flags line and vendor_id, read once.
const std::pair<std::string, std::string>& cpu_flags_vendor() {
  static const std::pair<std::string, std::string> fv{cpuinfo("flags"), cpuinfo("vendor_id")};
  return fv;
}

}  // namespace

bool bf16_is_faster(const std::string& flags, const std::string& vendor) {
  return has_word(flags, "amx_bf16") || (has_word(flags, "avx512_bf16") && vendor == "AuthenticAMD");
}

std::string bf16_passed_over(const std::string& flags, const std::string& vendor) {
  if (bf16_is_faster(flags, vendor) || !has_word(flags, "avx512_bf16")) return "";
  return "AVX512-BF16 without AMX on a " + (vendor.empty() ? std::string("non-AMD") : vendor) +
         " CPU, measured slower than fp32";
}

bool cpu_bf16_is_faster() {
  const auto& [flags, vendor] = cpu_flags_vendor();
  return bf16_is_faster(flags, vendor);
}

std::string channels_last_conv_fault(double tolerance) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(11);  // fixed inputs, the global generator untouched
  struct Case {
    const char* what;
    int64_t in, out, k, stride, hw;
  };
  for (const Case& c : {Case{"1x1 stride-2 convolution 256->512 on 4x4", 256, 512, 1, 2, 4},
                        Case{"3x3 convolution 64->64 on 8x8", 64, 64, 3, 1, 8}}) {
    const auto x = at::randn({4, c.in, c.hw, c.hw}, gen, torch::kFloat);
    const auto w = at::randn({c.out, c.in, c.k, c.k}, gen, torch::kFloat) / std::sqrt(double(c.in * c.k * c.k));
    const auto ref = at::conv2d(x, w, {}, c.stride, c.k / 2);
    const auto cl = at::conv2d(x.contiguous(at::MemoryFormat::ChannelsLast),
                               w.contiguous(at::MemoryFormat::ChannelsLast), {}, c.stride, c.k / 2);
    const double scale = ref.abs().max().item<double>();
    const double err = (cl - ref).abs().max().item<double>() / std::max(scale, 1e-30);
    if (!(err <= tolerance)) {  // NaN included
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2g", err);
      char tol[32];
      std::snprintf(tol, sizeof tol, "%.0e", tolerance);
      return std::string("this LibTorch's channels-last ") + c.what + " (batch 4) differs from NCHW by " + buf +
             " of its largest value (tolerance " + tol + ")";
    }
  }
  return "";
}

bool channels_last_is_faster(int arch, bool cuda, bool cpu_avx2) { return arch >= 50 && (cuda || cpu_avx2); }

bool choose_layout(const std::string& setting, bool faster, const std::function<std::string()>& fault, bool fall_back,
                   std::string& nchw_reason) {
  nchw_reason.clear();
  if (setting == "false" || (setting == "auto" && !faster)) return false;
  const std::string f = fault();
  if (f.empty()) return true;
  if (setting == "true" && !fall_back)
    throw Error("train.channels_last: " + f + ": keep train.channels_last off with this LibTorch on this CPU");
  nchw_reason = setting + ": " + f;
  return false;
}

namespace {

// Why train.conv_algorithm: winograd cannot apply to numerics `n` on this device; "" where it can.
std::string winograd_blocked(const Numerics& n, bool cuda) {
  if (cuda) return "on CUDA, cuDNN chooses the algorithm";
  if (n.bf16) return "it applies to fp32 only and train.precision resolves to bf16";
  std::string why;
  return winograd_available(&why) ? std::string() : why;
}

// train.channels_last `setting` on this device for a ResNet-`arch` model.
bool resolve_layout(const std::string& setting, int arch, bool cuda, bool fall_back, std::string& nchw_reason) {
  auto fault = [cuda]() -> std::string {
    if (cuda) return "";
    static const std::string f = channels_last_conv_fault();  // once per process
    return f;
  };
  const bool avx2 = has_word(cpu_flags_vendor().first, "avx2");
  return choose_layout(setting, channels_last_is_faster(arch, cuda, avx2), fault, fall_back, nchw_reason);
}

// resolve_numerics, and for inference (`inference`) a channels-last this CPU's LibTorch gets
// wrong falls back to NCHW instead of stopping.
Numerics resolve(const NumericsOptions& o, const std::string& device, int arch, bool inference) {
  o.validate();
  Numerics n;
  const bool cuda = is_cuda_name(device);
  n.channels_last = resolve_layout(o.channels_last, arch, cuda, inference, n.nchw_reason);
  n.bf16 = o.precision == "bf16" || (o.precision == "auto" && (cuda || cpu_bf16_is_faster()));
  if (o.precision == "auto" && !cuda) {
    const auto& [flags, vendor] = cpu_flags_vendor();
    n.auto_fp32_reason = bf16_passed_over(flags, vendor);
  }
  n.fp16 = o.precision == "fp16";
  if (n.fp16 && !cuda)
    throw Error("train.precision: fp16 runs on CUDA only, found device '" + device +
                "' (LibTorch's CPU autocast is bf16; use bf16, auto or fp32)");
  n.loss_scaling = o.loss_scale == "dynamic" || (o.loss_scale == "auto" && n.fp16);
  n.loss_scale_init = o.loss_scale_init;
  const std::string blocked = winograd_blocked(n, cuda);
  if (o.conv_algorithm == "winograd" && !blocked.empty())
    throw Error("train.conv_algorithm: winograd cannot apply here: " + blocked + " (use direct or auto)");
  n.winograd = o.conv_algorithm != "direct" && blocked.empty();
  return n;
}

}  // namespace

Numerics resolve_numerics(const NumericsOptions& o, const std::string& device, int arch) {
  return resolve(o, device, arch, false);
}

Numerics resolve_inference_numerics(const NumericsOptions& o, const std::string& device, int arch,
                                    std::string* note) {
  o.validate();  // every key, loss_scale included, before it is replaced below
  NumericsOptions p = o;
  p.loss_scale = "off";  // no backward pass
  std::vector<std::string> said;
  if (p.precision == "fp16" && !is_cuda_name(device)) {
    p.precision = "fp32";
    said.push_back("train.precision: fp16 runs on CUDA only: running in fp32 on '" + device + "'");
  }
  const bool want_winograd = p.conv_algorithm == "winograd";
  if (want_winograd) p.conv_algorithm = "auto";  // winograd where it applies, else direct
  Numerics n = resolve(p, device, arch, true);
  if (want_winograd && !n.winograd)
    said.push_back("train.conv_algorithm: winograd cannot apply here (" + winograd_blocked(n, is_cuda_name(device)) +
                   "): 3x3 convolutions run direct");
  if (!n.nchw_reason.empty()) said.push_back("train.channels_last " + n.nchw_reason + ": running NCHW");
  if (note) *note = join(said, "; ");
  return n;
}

// LibTorch 2.4 made the autocast calls device-generic (pytorch/pytorch#124359) and deprecated
// the per-device ones. Releases from 2.4 on have the new calls; 2.4 nightlies built before
// that change (April 2024; 2.4.0.dev20240418 was checked) say 2.4 but lack them and do not
// compile here: build against a release.
bool autocast_active(bool cuda) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

namespace {

bool autocast_is_fp16(bool cuda) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU) == at::kHalf;
#else
  return (cuda ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype()) == at::kHalf;
#endif
}

// The type is set while on, and on CUDA also while off, so that a scope restores it exactly
// (the CPU's is bf16 always: fp16 never resolves there).
void set_autocast(bool cuda, bool on, bool fp16) {
  const auto dtype = fp16 ? at::kHalf : at::kBFloat16;
  const bool set_type = on || cuda;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  const auto t = cuda ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_enabled(t, on);
  if (set_type) at::autocast::set_autocast_dtype(t, dtype);
#else
  if (cuda) {
    at::autocast::set_enabled(on);
    if (set_type) at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(on);
    if (set_type) at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

}  // namespace

AutocastScope::AutocastScope(bool enable, bool cuda, bool fp16)
    : cuda_(cuda), prev_(autocast_active(cuda)), enabled_(enable), prev_fp16_(autocast_is_fp16(cuda)) {
  if (enable) at::autocast::increment_nesting();
  if (enable != prev_ || (enable && fp16 != prev_fp16_)) set_autocast(cuda_, enable, fp16);
}

AutocastScope::~AutocastScope() {
  set_autocast(cuda_, prev_, prev_fp16_);
  if (enabled_ && at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
}

void to_channels_last(torch::nn::Module& m) {
  torch::NoGradGuard ng;
  for (auto& p : m.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  for (auto& b : m.buffers())
    if (b.dim() == 4) b.set_data(b.data().contiguous(at::MemoryFormat::ChannelsLast));
}

at::Tensor in_layout(const at::Tensor& x, const Numerics& n) {
  return n.channels_last && x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
}

bool is_channels_last(const at::Tensor& t) {
  return t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
}

at::Tensor contiguous_as(const at::Tensor& t, bool channels_last) {
  return t.contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

}  // namespace cp2::compute
