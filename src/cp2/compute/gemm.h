// The sgemm (threaded, with leading dimensions) of cp2's own kernels: the 36 products of cp2's
// AVX2 Winograd kernels (compute/winograd_tiles.h) and the tap GEMMs of dilated convolutions
// (compute/dilated.h). oneDNN's where this build links it (Debian's LibTorch uses the same
// libdnnl), else LibTorch's matmul over the same memory (OpenBLAS in Debian's LibTorch, MKL in
// PyTorch's official builds, which keep their oneDNN to themselves). One place holds the
// build's oneDNN dependency and the error on a failed call; no heavy headers here.
#pragma once
#include <cstdint>

namespace cp2::compute {

// Whether oneDNN runs its AVX-512 kernels here: an AVX-512 CPU, and no ONEDNN_MAX_CPU_ISA /
// DNNL_MAX_CPU_ISA cap below it (false without oneDNN). Its Winograd kernels exist only there,
// and only its AVX-512 direct kernels skip the products over a dilated convolution's padding.
bool onednn_avx512();

// Which sgemm runs: oneDNN's where the build has it (`best`), or LibTorch's matmul (`torch`,
// what builds without oneDNN run; tests set it to check that path where oneDNN is present).
enum class GemmBackend { best, torch };
void set_gemm_backend(GemmBackend b);
// Whether sgemm calls oneDNN now: the build has it (not without libdnnl-dev, with an official
// LibTorch's oneDNN 3.x headers first, nor in the GPU core build) and the backend is `best`.
bool sgemm_is_onednn();

// Row-major C = op(A)·op(B) + beta·C, op(X) = X or Xᵀ as `ta`/`tb` are 'N' or 'T'. Throws,
// naming `who` and the shapes, when the call fails or its arguments are out of range.
void sgemm(const char* who, char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace cp2::compute
