// One pass of torch.optim.SGD's update over a parameter's floats (train/optim.cpp), with
// ATen's roundings: on x86-64 with FMA, ATen's `add(a, b, alpha)` is one fused multiply-add,
// a + alpha·b rounded once (its ufunc `fmadd(b, alpha, a)`), and `mul_` one rounded product.
// So g + wd·p, buf·m + g and p − lr·buf come out bit for bit as the three or four ATen ops
// (tested against them), but reading and writing each tensor once instead of once per op: the
// optimizer step is memory-bound (docs/benchmarks.md, "Where the R50 512² finetuning step goes"). The same for
// MoCo's momentum update of the key encoder (blend). Compiled for AVX2 + FMA, called only where
// cpu_supported(). No heavy headers.
#pragma once
#include <cstdint>

namespace cp2::train::sgd_fma {

bool cpu_supported();  // AVX2 and FMA on this CPU and build

// Elements [begin, end) of one parameter: g' = (wd != 0 ? g + wd·p : g); with momentum,
// buf = (first ? g' : buf·momentum + g'), d = buf, else d = g'; p = p + neg_lr·d. `buf` is
// written only with momentum (first: the new buffer).
void update(float* p, const float* g, float* buf, int64_t begin, int64_t end, float wd, float momentum, bool first,
            float neg_lr);

// MoCo's momentum update of a key-encoder parameter k from its query twin q over elements
// [begin, end): k = k·m + q·alpha (alpha = 1 − m) as ATen's `k.mul_(m)` then `k.add_(q, alpha)`
// round it, the product rounded, then one fused multiply-add; one pass instead of two.
void blend(float* k, const float* q, int64_t begin, int64_t end, float m, float alpha);

}  // namespace cp2::train::sgd_fma
