#include "cp2/compute/gemm.h"

#include "cp2/common.h"

#ifdef CP2_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

namespace cp2::compute {

bool sgemm_available(std::string* why) {
#ifdef CP2_HAVE_DNNL
  (void)why;
  return true;
#else
  if (why) *why = "this build has no oneDNN (built without libdnnl-dev, or the GPU core build)";
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
#ifdef CP2_HAVE_DNNL
  const auto st = dnnl_sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success)
    throw Error(std::string(who) + ": oneDNN's sgemm failed (status " + std::to_string(static_cast<int>(st)) +
                ") for " + shapes());
#else
  (void)ta, (void)tb, (void)a, (void)lda, (void)b, (void)ldb, (void)beta, (void)c, (void)ldc;
  throw Error(std::string(who) + ": this build has no oneDNN sgemm (" + shapes() + ")");
#endif
}

}  // namespace cp2::compute
