#include "cp2/version.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include <sstream>

#include "cp2/common.h"

#ifndef CP2_VERSION
#define CP2_VERSION "unknown"
#endif

namespace cp2 {

std::string cpu_features() {
  const std::string flags = cpuinfo("flags");
  std::vector<std::string> out;
  for (const char* w : {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})
    if (has_word(flags, w)) out.emplace_back(w);
  return join(out, " ");
}

std::string version_report() {
  std::string model = cpuinfo("model name");
  if (model.empty()) model = "unknown";
  const auto feats = cpu_features();
  std::ostringstream o;
  o << "cp2 " << CP2_VERSION << "\n"
    << "LibTorch " << TORCH_VERSION << "\n"
    << "CUDA available: " << (torch::cuda::is_available() ? "yes (" + std::to_string(torch::cuda::device_count()) + " devices)" : std::string("no")) << "\n"
    << "CPU: " << model << "\n"
    << "CPU features: " << (feats.empty() ? "none of avx2/avx512/bf16/amx" : feats) << "\n"
    << "threads: " << get_threads() << "\n";
  if (const int b = openblas_threads(); b > 0) o << "OpenBLAS threads: " << b << "\n";
  return o.str();
}

}  // namespace cp2
