// Winograd convolutions on the CPU in fp32 (issue 11: ≥ 1.5× the PyTorch pipeline in pure
// fp32). PyTorch's CPU convolutions call oneDNN with its direct algorithm only; oneDNN also
// has Winograd F(4×4, 3×3) kernels for AVX-512 CPUs (forward, backward-data and
// backward-weights), 1.7–2.7× the direct kernels' speed on ResNet's 3×3 shapes (AMD Zen 4,
// 2 threads). Winograd sums the same products in another order (fp32 round-off: within 2e-5
// of the largest magnitude in the tests; cuDNN picks Winograd kernels too under the authors'
// cudnn.benchmark = True), so it is a choice of algorithm, `train.conv_algorithm`, not of
// method.
//
// Applies to 3×3 convolutions with stride 1, dilation 1, padding 1, no groups, no bias, on
// fp32 CPU tensors outside autocast; any other convolution runs the module's own forward.
// Dilated 3×3 convolutions with padding = dilation d (ResNet's dilated stages) run as d²
// undilated ones over the interleaved sub-grids when H and W are multiples of d.
#pragma once
#include <string>

namespace torch::nn {
class Conv2dImpl;
}
namespace at {
class Tensor;
}

namespace cp2::compute {

// Whether this build links oneDNN's Winograd kernels and the CPU runs them (AVX-512); when
// not, `why` says what is missing.
bool winograd_available(std::string* why = nullptr);

// While alive on this thread: eligible convolutions run through Winograd (when `enable`);
// the previous state comes back at destruction (nests like AutocastScope). The key's
// values and help are with the other numerics keys (compute/precision.h).
class WinogradScope {
 public:
  explicit WinogradScope(bool enable);
  ~WinogradScope();
  WinogradScope(const WinogradScope&) = delete;
  WinogradScope& operator=(const WinogradScope&) = delete;

 private:
  bool prev_;
};

// conv(x), through Winograd when enabled on this thread and the convolution is eligible.
at::Tensor conv2d(torch::nn::Conv2dImpl& conv, const at::Tensor& x);

// Winograd 3×3 convolution (stride 1, padding 1, no bias) of fp32 CPU tensors, with
// gradients for both; the caller checks eligibility (throws otherwise).
at::Tensor winograd_conv3x3(const at::Tensor& x, const at::Tensor& weight);

}  // namespace cp2::compute
