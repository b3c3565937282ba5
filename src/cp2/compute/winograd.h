// Winograd convolutions on the CPU in fp32 (issue 11: ≥ 1.5× the PyTorch pipeline in pure
// fp32 on any x86-64 CPU). PyTorch's CPU convolutions call oneDNN with its direct algorithm
// only. Two sets of Winograd F(4×4, 3×3) kernels (forward, backward-data, backward-weights):
// - oneDNN's own, on AVX-512 CPUs: 1.7–2.7× the direct kernels on ResNet's 3×3 shapes (AMD
//   Zen 4, 2 threads);
// - cp2's (compute/winograd_tiles.h), on AVX2 + FMA CPUs, where oneDNN 2.6 has none.
// Winograd sums the same products in another order (fp32 round-off: within 2e-5 of the
// largest magnitude in the tests; cuDNN picks Winograd kernels too under the authors'
// cudnn.benchmark = True), so it is a choice of algorithm, `train.conv_algorithm`, not of
// method.
//
// Applies to 3×3 convolutions with stride 1, padding 1, no bias, on fp32 CPU tensors outside
// autocast; compute/conv.h decides which convolutions of a model take it.
#pragma once
#include <cstdint>
#include <string>

#include "cp2/compute/winograd_avx2.h"  // subgrid_side

namespace at {
class Tensor;
}

namespace cp2::compute {

// Whether this CPU runs either set of kernels (oneDNN's needs AVX-512 and a build linking
// oneDNN; cp2's needs AVX2 and FMA); when not, `why` says what is missing.
bool winograd_available(std::string* why = nullptr);

// Whether a WinogradScope enabled the fast algorithms on this thread.
bool winograd_enabled();

// Which kernels run: `best` = per shape, cp2's F(3×3) where that tiling fits the map better
// and pays (compute/winograd_tiles.h), cp2's F(4×4) on sub-grids it tiles in place and
// oneDNN's would copy (winograd_plan_for) and on the channel counts where it beats oneDNN's
// (tiles_beat_onednn), else oneDNN's F(4×4) where available, else cp2's F(4×4). Tests and
// benchmarks may name one: `tiles` (cp2's, the tile size that fits the map better),
// `tiles_f4` or `tiles_f3` (cp2's, that size); oneDNN's caps its ISA by DNNL_MAX_CPU_ISA=AVX2,
// which makes `best` pick cp2's.
enum class WinogradKernels { best, onednn, tiles, tiles_f4, tiles_f3, none };
WinogradKernels winograd_kernels();  // on this thread; `best`: oneDNN's where available, else cp2's
const char* winograd_kernels_name(WinogradKernels k);  // "oneDNN", "cp2 AVX2", …
// Where cp2's F(4×4) goes before oneDNN's (tiles_beat_onednn), for help and the numerics line:
// ">= 256 channels (>= 128 channels-last)".
std::string cp2_tiles_rule();
// The kernels that run a convolution of input (n,c,h,w) by c→o filters on this thread, as
// winograd_conv3x3 picks them (`none`: the direct convolution), and their tile size.
struct WinogradPlan {
  WinogradKernels kernels = WinogradKernels::none;
  int64_t tile = 4;
  double products = 9;  // multiplications per output pixel and channel pair (direct: 9)
};
// `in_place`: the sub-grids of a dilated convolution that cp2's kernels tile in place but
// oneDNN's would take copied out (winograd_conv3x3): chosen as the best, cp2's F(4×4) then
// runs where tiles_pay_off, before oneDNN's. Undilated, cp2's F(4×4) also goes before
// oneDNN's where tiles_beat_onednn (`channels_last`: the input's memory layout), unless the
// fast path cp2-tiles is off on this thread (compute/fast_paths.h).
WinogradPlan winograd_plan(int64_t n, int64_t c, int64_t o, int64_t h, int64_t w, bool in_place = false,
                           bool channels_last = false);
// The plan winograd_conv3x3 follows for input x (N,C,H,W), o filters, dilation d: of the
// batch of d² sub-grids, ⌈H/d⌉ × ⌈W/d⌉, `in_place` where d > 1. oneDNN's kernels take the
// sub-grids copied out and back (and a map d does not divide padded first), cp2's tile them
// in place. Forward + both gradients on an Intel Xeon with AVX-512 (docs/benchmarks.md),
// cp2's F(4×4) against oneDNN's: channels-last 1.24-1.97× faster (ResNet-50's dilated
// stages at 224, 512 and 769 px, and at 683×512 evaluation), NCHW 0.93-1.26×.
WinogradPlan winograd_plan_for(const at::Tensor& x, int64_t o, int64_t d);
// Whether the named kernels run on this CPU and build (`best`: either); when not, `why` says
// what is missing.
bool winograd_kernels_available(WinogradKernels k, std::string* why = nullptr);

// While alive on this thread: eligible convolutions run through the fast algorithms
// (compute/conv.h: Winograd, and compute/dilated.h's tap GEMMs) when `enable`,
// with the named kernels (else those chosen by an enclosing scope, or `best`); the previous
// state comes back at destruction (nests like AutocastScope). The key's values and help are
// with the other numerics keys (compute/precision.h).
class WinogradScope {
 public:
  explicit WinogradScope(bool enable);
  WinogradScope(bool enable, WinogradKernels kernels);
  ~WinogradScope();
  WinogradScope(const WinogradScope&) = delete;
  WinogradScope& operator=(const WinogradScope&) = delete;

 private:
  bool prev_;
  WinogradKernels prev_kernels_;
};

// Whether winograd_conv3x3 runs Winograd for input (n,c,h,w) and c→o filters on this thread
// (winograd_plan's kernels are not `none`): kernels named by a WinogradScope wherever they fit
// (cp2's take 8 channels at a time); chosen as the best at hand, cp2's F(3×3) where
// tiles3_pay_off, oneDNN's from kMinWinogradTiles tiles and cp2's F(4×4) where tiles_pay_off;
// false where it would run the direct convolution.
bool winograd_runs(int64_t n, int64_t c, int64_t o, int64_t h, int64_t w, bool channels_last = false);

// Winograd 3×3 convolution (stride 1, padding and dilation d, no bias) of fp32 CPU tensors,
// with gradients for both; the caller checks eligibility (throws otherwise). A dilated
// convolution is d² undilated ones over the sub-grids of one phase (compute/winograd_avx2.h;
// any map size: where d does not divide a side, the phases' sub-grids differ by a pixel and
// all are taken as the largest): cp2's kernels tile them in place, oneDNN's take them as a
// batch copied out (of the map padded to a multiple of d) and back. The choice, per
// winograd_plan_for: the direct convolution where no kernels fit (cp2's: channel counts not
// multiples of 8) or, unless named by a WinogradScope, where they do not pay off
// (compute/winograd_tiles.h).
at::Tensor winograd_conv3x3(const at::Tensor& x, const at::Tensor& weight, int64_t d = 1);

}  // namespace cp2::compute
