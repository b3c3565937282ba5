#include "cp2/compute/gemm.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <atomic>

#include "cp2/common.h"

#ifdef CP2_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

namespace cp2::compute {

namespace {

std::atomic<GemmBackend> backend{GemmBackend::best};

// op(X) of a row-major `rows` x `cols` matrix with leading dimension ld, as a tensor over the
// caller's memory (no copy): X, or Xᵀ as a transposed view.
at::Tensor matrix(const float* p, char t, int64_t rows, int64_t cols, int64_t ld) {
  const bool tr = t == 'T';
  auto x = at::from_blob(const_cast<float*>(p), {tr ? cols : rows, tr ? rows : cols}, {ld, 1},
                         at::TensorOptions().dtype(at::kFloat));
  return tr ? x.t() : x;
}

// LibTorch's matmul into C's own memory: ATen's mm/addmm take row-major operands with leading
// dimensions as they are (its BLAS call reads the strides), and so write C in place.
void torch_sgemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc) {
  auto C = at::from_blob(c, {m, n}, {ldc, 1}, at::TensorOptions().dtype(at::kFloat));
  const auto A = matrix(a, ta, m, k, lda), B = matrix(b, tb, k, n, ldb);
  // No autograd (no view requires a gradient). Unseen by RecordFunction: the callers count
  // their products themselves (compute/flops.h), as oneDNN's sgemm is unseen.
  at::DisableRecordFunctionGuard uncounted;
  if (beta == 0.f)
    at::mm_out(C, A, B);
  else
    C.addmm_(A, B, beta, 1.f);
}

}  // namespace

void set_gemm_backend(GemmBackend b) { backend.store(b); }

bool sgemm_is_onednn() {
#ifdef CP2_HAVE_DNNL
  return backend.load() == GemmBackend::best;
#else
  return false;
#endif
}

bool onednn_avx512() {
#ifdef CP2_HAVE_DNNL
  static const bool has = [] {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return isa == dnnl_cpu_isa_avx512_core || isa == dnnl_cpu_isa_avx512_core_vnni ||
           isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
  }();
  return has;
#else
  return false;
#endif
}

void sgemm(const char* who, char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const auto shapes = [&] {
    return std::to_string(m) + "x" + std::to_string(k) + " by " + std::to_string(k) + "x" + std::to_string(n);
  };
  const bool valid = (ta == 'N' || ta == 'T') && (tb == 'N' || tb == 'T') && m >= 0 && n >= 0 && k >= 0 &&
                     lda >= std::max<int64_t>(1, ta == 'N' ? k : m) && ldb >= std::max<int64_t>(1, tb == 'N' ? n : k) &&
                     ldc >= std::max<int64_t>(1, n);
  if (!valid)
    throw Error(std::string(who) + ": sgemm given invalid arguments (" + ta + tb + ", " + shapes() +
                ", leading dimensions " + std::to_string(lda) + ", " + std::to_string(ldb) + ", " + std::to_string(ldc) +
                ")");
  if (m == 0 || n == 0) return;
#ifdef CP2_HAVE_DNNL
  if (sgemm_is_onednn()) {
    const auto st = dnnl_sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
    if (st != dnnl_success)
      throw Error(std::string(who) + ": oneDNN's sgemm failed (status " + std::to_string(static_cast<int>(st)) +
                  ") for " + shapes());
    return;
  }
#endif
  try {
    torch_sgemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
  } catch (const std::exception& e) {
    throw Error(std::string(who) + ": LibTorch's matmul failed for " + shapes() + " (" + error_message(e) + ")");
  }
}

}  // namespace cp2::compute
