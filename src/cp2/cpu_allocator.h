// A caching CPU allocator for training: large blocks are kept by exact size and reused,
// since every training step allocates the same activation sizes again. Without it each
// large tensor is a fresh mmap + page faults + munmap (measured: ~10 % of a CPU step in
// kernel time for R50-ASPP@224). Installing it also fixes glibc's mmap and trim thresholds,
// which the blocks it keeps would otherwise have raised (cpu_allocator.cpp says why).
#pragma once
#include <cstddef>

namespace cp2 {

// Installs the allocator for LibTorch's CPU tensors (idempotent; at most a quarter of
// physical memory stays cached; LibTorch 1.13 and 2.x).
void install_caching_cpu_allocator(size_t max_cached_bytes = size_t(8) << 30);

struct CpuCacheStats {
  size_t hits = 0, misses = 0, cached_bytes = 0;
};
CpuCacheStats cpu_cache_stats();

}  // namespace cp2
