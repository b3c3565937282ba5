// What a run computes in (issue 11): fp32, or bf16 (CPU, CUDA) or fp16 (CUDA, with dynamic
// loss scaling) autocast with fp32 master weights, optimizer state, losses and normalisation
// statistics; and the memory layout of its
// activations (NCHW or channels-last). Shared by pretraining, finetuning, evaluation and
// the benchmarks; compiles against LibTorch 1.13 and 2.x (the autocast API moved in 2.4).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}
namespace at {
class Tensor;
}

namespace cp2::compute {

// Keys train.precision, train.channels_last, train.conv_algorithm and train.loss_scale(_init)
// of both training configs.
struct NumericsOptions {
  // fp32 | bf16 | fp16 | auto: auto = bf16 on CUDA and on CPUs where bf16 is the faster
  // (cpu_bf16_is_faster), else fp32. fp16 is CUDA's AMP for cards without bf16 (V100, T4):
  // LibTorch 1.13's CPU autocast is bf16 only.
  std::string precision = "fp32";
  // false | true | auto: auto = on where measured faster (channels_last_is_faster) and, on
  // the CPU, where this LibTorch's channels-last convolutions pass channels_last_conv_fault.
  // Held as text: configs and checkpoints before auto stored true / false.
  // Both default to auto: layout and algorithm change fp32 round-off only, as cuDNN's own
  // algorithm search did in the authors' runs (cudnn.benchmark), and a run folder's config
  // keeps what it started with, so resumed runs go on as they were.
  std::string channels_last = "auto";
  // direct | winograd | auto (compute/conv.h): the algorithm of fp32 3x3 convolutions on the
  // CPU; direct is PyTorch's arithmetic.
  std::string conv_algorithm = "auto";
  // auto | dynamic | off: the loss multiplied by a scale before the backward pass and the
  // gradients divided by it before the step, which is skipped where they are not finite
  // (torch.cuda.amp.GradScaler's rule, in train::Optimizer: halve the scale then, double it
  // after 2000 finite steps). auto = dynamic with fp16, else off. fp16's
  // gradients underflow without it; in fp32 and bf16 it changes nothing (the scale is a power
  // of two) but the skipped steps.
  std::string loss_scale = "auto";
  double loss_scale_init = 65536.0;  // the first scale (GradScaler's 2^16)
  void validate() const;  // names the key and the value
};
// The values of train.precision, and the help lines of the numerics keys (both training
// configs bind them).
inline const std::vector<std::string>& precision_choices() {
  static const std::vector<std::string> c{"fp32", "bf16", "fp16", "auto"};
  return c;
}
inline constexpr const char* kPrecisionHelp =
    "fp32, bf16 (autocast; fp32 weights, losses, optimizer), fp16 (CUDA only: autocast to float16 with dynamic "
    "loss scaling, for GPUs without bf16) or auto (bf16 on CUDA and where it is the faster on the CPU: AMX, or "
    "AVX512-BF16 on AMD; else fp32)";
inline const std::vector<std::string>& loss_scale_choices() {
  static const std::vector<std::string> c{"auto", "dynamic", "off"};
  return c;
}
inline constexpr const char* kLossScaleHelp =
    "dynamic loss scaling (as torch.cuda.amp.GradScaler: steps with non-finite gradients are skipped and the scale "
    "halved; doubled after 2000 finite steps): auto (with fp16 only), dynamic or off";
inline constexpr const char* kLossScaleInitHelp = "the first loss scale (a power of two keeps fp32 steps exact)";
inline const std::vector<std::string>& channels_last_choices() {
  static const std::vector<std::string> c{"false", "true", "auto"};
  return c;
}
inline constexpr const char* kChannelsLastHelp =
    "activations and weights in channels-last (NHWC) memory: true, false, or auto (true where measured faster: "
    "ResNet-50 and deeper on CUDA and on x86 CPUs with AVX2, and on the CPU only where this LibTorch's "
    "channels-last convolutions agree with NCHW ones)";
// train.conv_algorithm (compute/conv.h): direct (PyTorch's), winograd (Winograd F(4x4,3x3):
// oneDNN's on AVX-512 CPUs, cp2's on AVX2 ones, for dilated convolutions and for ≥ 256
// channels (≥ 128 channels-last) on any; cp2's
// F(3x3,3x3) on maps 4x4 tiles would fill half, compute/winograd_tiles.h; dilated ones
// mostly over padding as one GEMM per tap, compute/dilated.h; ASPP's bottleneck with its
// image-pool channels once per image, compute/conv.h; on channels-last maps the 1×1s
// as GEMMs, compute/pointwise.h; batch norm + ReLU in one pass, compute/bn_act.h; the loss's
// queue matmul, compute/matmul.h; the stem's max pool, compute/pool.h; an error where this
// build or CPU has no Winograd kernels), auto (winograd where available).
inline const std::vector<std::string>& conv_algorithm_choices() {
  static const std::vector<std::string> c{"direct", "winograd", "auto"};
  return c;
}
// train.conv_algorithm's help, with the rules' thresholds from their constants.
std::string conv_algorithm_help();

// A run's resolved numerics.
struct Numerics {
  bool bf16 = false;
  bool fp16 = false;  // CUDA only
  bool loss_scaling = false;  // train.loss_scale resolved
  double loss_scale_init = 65536.0;
  bool amp() const { return bf16 || fp16; }  // autocast on (losses and statistics stay fp32)
  bool channels_last = false;
  bool winograd = false;  // fp32 3x3 convolutions through the fast algorithms (compute/conv.h)
  // Why train.precision auto stayed fp32 on a CPU that has bf16 instructions ("" otherwise):
  // the start line says it, so that avx512_bf16 in /proc/cpuinfo and an fp32 run agree.
  std::string auto_fp32_reason;
  // Why train.channels_last stayed NCHW where it asked for channels-last (auto, or true when
  // inferring): "<setting>: <the fault>", "" otherwise; describe() says it.
  std::string nchw_reason;
  std::string describe() const;  // "bf16 autocast, channels-last" / "fp32, NCHW, Winograd 3x3 (oneDNN), dilated 3x3 as tap GEMMs …"
};

// Throws, naming the key, where train.conv_algorithm: winograd cannot apply (bf16, CUDA, a
// build or CPU without the kernels), train.precision: fp16 is asked for off CUDA, or
// train.channels_last: true on the CPU with a LibTorch whose channels-last convolutions are
// wrong (channels_last_conv_fault; auto takes NCHW there). `arch` is the model's ResNet
// depth (model.arch), which train.channels_last: auto depends on.
Numerics resolve_numerics(const NumericsOptions& o, const std::string& device, int arch);
// The same for inference (cp2 evaluate, predict) of a config trained elsewhere: where that
// device's choices cannot apply here, falls back instead of stopping (fp16 off CUDA -> fp32,
// winograd -> direct, channels-last -> NCHW) and says so in `note` ("" when nothing
// changed); no loss scaling.
Numerics resolve_inference_numerics(const NumericsOptions& o, const std::string& device, int arch,
                                    std::string* note);

// train.channels_last: auto's rule, where it was measured faster (docs/benchmarks.md): a
// Bottleneck ResNet (depth >= 50) on CUDA (H200, R50-ASPP@224 batch 64: +24 % fp32, +33 % AMP
// bf16) or on an x86 CPU with AVX2 (R50 pretraining and finetuning, fp32 and bf16, +5-12 % with
// oneDNN's AVX-512 kernels on a Zen 4, a Zen 5 and a Xeon; a Zen 5 capped to AVX2 pretrained
// 13-17 % faster, finetuned -1 to +6 %). Not ResNet-18/34 (on the CPU -8 % to +26 % from one
// pairing to the next: no consistent gain), nor CPUs where nothing was measured (no AVX2).
bool channels_last_is_faster(int arch, bool cuda, bool cpu_avx2);
// Whether a run takes channels-last for train.channels_last `setting` (false | true | auto),
// auto's rule answering `faster`. `fault` is the start-up check (channels_last_conv_fault on
// the CPU, "" on CUDA), run only where channels-last would be taken. Where it fails: true
// throws naming the key, unless `fall_back` (inference), and otherwise NCHW is taken with
// "<setting>: <fault>" in `nchw_reason`.
bool choose_layout(const std::string& setting, bool faster, const std::function<std::string()>& fault, bool fall_back,
                   std::string& nchw_reason);

// Whether bf16 steps beat fp32 ones on this CPU (/proc/cpuinfo, read once): with AMX-BF16, or
// AVX512-BF16 on an AMD core. Measured (docs/benchmarks.md): oneDNN's bf16 3x3 convolution is
// 2.5x its fp32 one on Zen 4 and a step 1.6-1.9x; on an Intel Xeon (Emerald Rapids, AMX not
// passed to the VM) whose only bf16 is AVX512-BF16 it runs 175 GFLOP/s against fp32's 270-340,
// and a step 0.5-0.7x fp32's (likely because Intel cores issue VDPBF16PS at half FMA's rate,
// so it does no more multiply-adds per cycle). Without native bf16 oneDNN emulates it, 2.8x
// slower than fp32.
bool cpu_bf16_is_faster();
// The rule, from the flags line's words and the vendor_id; and, where the CPU has bf16
// instructions that the rule passes over, why ("" otherwise).
bool bf16_is_faster(const std::string& flags, const std::string& vendor);
std::string bf16_passed_over(const std::string& flags, const std::string& vendor);

// "" where this LibTorch's CPU convolutions give the same numbers in channels-last as in
// NCHW, else what differs: a 1x1 stride-2 convolution 256->512 on 4x4 maps (ResNet's layer-4
// downsample at a small size) and a 3x3 one, fixed inputs, relative to the NCHW result's
// largest entry, against `tolerance`. Debian 13's LibTorch 2.6 (oneDNN 3.7) gets the 1x1 one
// 47 % wrong on an AMD Zen 5 with AVX-512 (docs/benchmarks.md); resolve_numerics refuses
// train.channels_last on the CPU wherever this check fails (run once per process).
std::string channels_last_conv_fault(double tolerance = 1e-4);

// Whether autocast is on for the CPU (or CUDA) on this thread.
bool autocast_active(bool cuda);

// While alive: autocast to bf16 (fp16 when `fp16`) on the CPU or CUDA (`cuda`) when
// `enable`, else autocast off (used around losses); the previous state and type come back at
// destruction. The outermost enabling scope clears autocast's weight-cast cache when it
// ends, as torch.autocast.
class AutocastScope {
 public:
  AutocastScope(bool enable, bool cuda, bool fp16 = false);
  AutocastScope(const Numerics& n, bool cuda) : AutocastScope(n.amp(), cuda, n.fp16) {}
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool cuda_, prev_, enabled_, prev_fp16_;
};

// Every 4-D parameter and buffer of `m` in channels-last memory (the optimizer state
// created afterwards follows); no-op for others.
void to_channels_last(torch::nn::Module& m);
// `x` in the layout the numerics ask for (4-D inputs only).
at::Tensor in_layout(const at::Tensor& x, const Numerics& n);
// Whether `t` is in NHWC memory (a tensor contiguous both ways, e.g. one channel, counts as
// NCHW), and `t` made dense in NHWC (`channels_last`) or NCHW memory.
bool is_channels_last(const at::Tensor& t);
at::Tensor contiguous_as(const at::Tensor& t, bool channels_last);

}  // namespace cp2::compute
