// Dilated 3×3 convolutions whose outer taps mostly read zero padding (issue 11 §4–5): ASPP's
// branches (mmsegmentation's ASPPHead: 3×3, padding = dilation d, stride 1) at rates 6 and 12
// on the 14×14 maps of 224 px pretraining, 12 and 24 on the 32×32 maps of 512 px finetuning.
// A tap offset by (k-1)·d reads the image only over the output pixels whose shifted position
// lies inside the map; elsewhere it multiplies zeros. oneDNN's direct kernels skip some of
// those products in the forward pass but not in the backward ones (rate 24 on 32², 2048→512
// channels, batch 2, AMD Zen 4, 2 threads: forward 0.05–0.20 s, backward-data 0.22–0.24 s,
// backward-weights 0.29 s for a quarter of the products reading the image).
//
// Here each tap is one GEMM over the output pixels it reads the image for (channels-last
// rows, compute/gemm.h's sgemm: oneDNN's, else LibTorch's matmul): input gradient and weight
// gradient, and the forward pass on NCHW input, do exactly the products that read the image
// (on channels-last input where oneDNN runs AVX-512 kernels the forward pass stays oneDNN's,
// which skip them themselves and were faster there; its AVX2 kernels do not). The sums are
// the convolution's minus additions of exact zeros, in another order (fp32 round-off), so it
// runs with the fast algorithms (`train.conv_algorithm: winograd|auto`, compute/conv.h), not
// under `direct`, and only through oneDNN's sgemm (through OpenBLAS they ran slower than the
// direct convolution).
#pragma once
#include <cstdint>
#include <string>

namespace at {
class Tensor;
}

namespace cp2::compute {

// The share of a full 3×3 convolution's multiply-adds that read the image, on an H×W map at
// dilation d with padding d: Π over both dimensions of (sum over the 3 taps of the output
// extent they read the image for) / (3·extent).
double dilated_taps_kept(int64_t h, int64_t w, int64_t d);

// The 3×3 convolution with dilation d, padding d, stride 1, no bias, of fp32 CPU tensors x
// (N,C,H,W) and weight (O,C,3,3), as one GEMM per tap; gradients for both; results in the
// input's and the weight's memory layout. Throws when given other tensors.
at::Tensor dilated_conv3x3_taps(const at::Tensor& x, const at::Tensor& weight, int64_t d);

}  // namespace cp2::compute
