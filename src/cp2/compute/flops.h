// FLOPs of convolutions and matmuls (issue 11 §1): one global RecordFunction callback sees
// every aten::convolution / convolution_backward / mm / addmm / bmm / baddbmm call with its
// input shapes, forward and backward, on every thread; cp2's own convolution kernels count the
// convolution they stand for. Counting as PyTorch's FlopCounterMode: 2 FLOPs per
// multiply-accumulate; convolution_backward costs one forward for each of grad_input and
// grad_weight it computes. Unlike there, a dilated convolution counts only the products whose
// tap reads the image (ASPP's rate 12 on a 14² map: 18 %), whichever path runs it (oneDNN's
// direct, cp2's tap GEMMs, Winograd over its sub-grids, the centre taps), so a step's count
// does not change with train.conv_algorithm. Everything else (BN, ReLU, the optimizer) is not
// counted. Plus a probe that times the heaviest counted shapes alone, so a benchmark can say
// what share of the achievable rate a step reaches.
#pragma once
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cp2/compute/precision.h"

namespace cp2::compute {

// One op shape: "conv" with in (N,C,H,W), weight (O,C/g,kh,kw), stride, padding,
// dilation, groups; or "mm" with in = {B, m, k}, weight = {k, n} (B = 1 for mm).
struct OpShape {
  std::string kind;
  std::vector<int64_t> in, weight, stride, padding, dilation;
  int64_t groups = 1;
  bool operator<(const OpShape& o) const;
  double flops() const;       // one forward call (dilated: the products that read the image)
  std::string str() const;
};

struct FlopCount {
  double conv = 0, matmul = 0;  // FLOPs, forward + backward
  std::map<OpShape, double> by_shape;  // forward shapes -> FLOPs attributed (incl. backward)
  // Calls of a counted op whose arguments had an unexpected form (another LibTorch
  // version's signature): not in the FLOPs above, so a benchmark says so.
  int64_t uncounted = 0;
  double total() const { return conv + matmul; }
};

// Adds `times` forward calls of `s` to the active count (if any): for convolutions that do
// not run through aten::convolution (compute/winograd.h, dilated.h, pointwise.h).
void count_conv_flops(const OpShape& s, double times);
// The same for matmuls that do not run through aten::mm (compute/matmul.h).
void count_matmul_flops(const OpShape& s, double times);

// The shape of a 3×3 convolution with stride 1 and padding = dilation (size-preserving: the
// Winograd and tap kernels' convolutions) of input `in` (N,C,H,W) by `weight` (O,C,3,3).
OpShape same_conv3x3(std::vector<int64_t> in, std::vector<int64_t> weight, int64_t dilation = 1);

// Counts while alive; one at a time (a second throws).
class FlopCounter {
 public:
  FlopCounter();
  ~FlopCounter();
  FlopCounter(const FlopCounter&) = delete;
  FlopCounter& operator=(const FlopCounter&) = delete;
  FlopCount result() const;

 private:
  uint64_t handle_;
};

// The rate the device reaches on the count's heaviest shapes run alone (forward only,
// fp32, bf16 or fp16, NCHW or channels-last): the best GFLOP/s over the `top` undilated shapes
// with the most FLOPs, each timed for about `seconds`.
struct ProbeResult {
  double gflops = 0;
  std::string shape;  // the fastest one
};
// What a benchmark reports: `step` run once under a counter (untimed), then (if `probe`)
// the probe at its shapes; `verbose` prints a "numerics" line with both.
struct StepFlops {
  double per_img = 0;
  ProbeResult peak;  // zero when not probed
};
StepFlops count_step(const std::function<void()>& step, double images, const std::string& device, const Numerics& n,
                     bool verbose, bool probe = true);

// "8.26 GFLOP/img, 157.0 GFLOP/s = 67 % of the probe's 233.8" (no share when peak is 0).
std::string rate_line(double flops_per_img, double img_s, double peak_gflops);

// The count's `top` heaviest shapes (FLOPs attributed, forward + backward) with those FLOPs,
// heaviest first; dilated convolutions left out (how fast one runs depends on how much of it
// reads padding and on the path that takes it, not on the machine's dense rate), and matmuls
// too where `convolutions_only`.
std::vector<std::pair<double, OpShape>> heaviest_shapes(const FlopCount& c, int top, bool convolutions_only = false);

// One shape alone, forward, in `dtype` and layout (Winograd where `winograd` and the shape
// is eligible, compute/winograd.h): GFLOP/s of its fastest single call (at least 3 calls,
// then until `seconds` have passed).
double probe_shape(const OpShape& s, const std::string& device, c10::ScalarType dtype, bool channels_last,
                   double seconds = 0.3, bool winograd = false);

// The fastest of probe_shape over heaviest_shapes(c, top).
ProbeResult probe_peak(const FlopCount& c, const std::string& device, c10::ScalarType dtype, bool channels_last, int top = 3,
                       double seconds = 0.3, bool winograd = false);

}  // namespace cp2::compute
