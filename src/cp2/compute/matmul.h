// A 2-D matrix product for the pretraining loss: the instance logits of the queries against
// the queue, [B, 128] · [128, 65536] (SPEC §3, MoCo's l_neg), and its input gradient (issue 11
// §4, "the 128×65536 queue matmul"). Debian's LibTorch runs torch::mm through OpenBLAS, which
// takes ~17 ms each way on that shape at batch 32 (2 threads, an Intel Xeon: ~30 GFLOP/s,
// ~2 GB/s, neither bound); oneDNN's sgemm 7–10 ms, at batch 8 8.8 against 13.2 ms both ways,
// at 64 17 against 62 (docs/benchmarks.md). So under the fast algorithms
// (`train.conv_algorithm: winograd|auto`, compute/conv.h) it runs through compute/gemm.h's
// sgemm where that is oneDNN's: the same products in another summing order (fp32 round-off),
// never under `direct`.
#pragma once

namespace at {
class Tensor;
}

namespace cp2::compute {

// Whether mm takes a·b here: 2-D fp32 CPU matrices with matching inner sizes, the fast
// algorithms on this thread (WinogradScope) with the fast path onednn-mm, oneDNN's sgemm
// (sgemm_is_onednn), no autocast.
bool mm_applies(const at::Tensor& a, const at::Tensor& b);

// a·b with gradients for whichever of a and b require them, counted by the FLOP counter as
// aten::mm would be; torch::mm where mm_applies says no.
at::Tensor mm(const at::Tensor& a, const at::Tensor& b);

}  // namespace cp2::compute
