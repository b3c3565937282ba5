// What `cp2 --version` reports: cp2's version, the LibTorch it runs on, CUDA, the CPU's
// vector features (read from /proc/cpuinfo, never assumed) and the thread count.
#pragma once
#include <string>

namespace cp2 {

std::string version_report();
// The CPU features cp2's speed depends on, as "avx2 avx512f avx512_bf16 ..." ("" if none).
std::string cpu_features();

}  // namespace cp2
