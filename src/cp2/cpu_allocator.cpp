#include "cp2/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace cp2 {

namespace {

constexpr size_t kMinCached = size_t(1) << 20;  // smaller blocks: glibc's free lists do well

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(size_t cap) : cap_(cap) {}

  // c10::Allocator::allocate is const up to LibTorch 2.2 and not from 2.4 on (2.3 unchecked),
  // where an allocator must also copy its blocks (copy_data, pure virtual). Both forms of
  // allocate, and copy_data, without `override`, build against either: each LibTorch's pure
  // virtuals are overridden and the other members are plain ones.
  c10::DataPtr allocate(size_t n) const { return take(n); }
  c10::DataPtr allocate(size_t n) { return take(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

  c10::DeleterFnPtr raw_deleter() const override { return &CachingCpuAllocator::release; }

  static void release(void* p) { instance()->put(p); }

  static CachingCpuAllocator* instance(size_t cap = 0) {
    static CachingCpuAllocator a(cap);
    return &a;
  }

  CpuCacheStats stats() const {
    std::lock_guard<std::mutex> lk(mu_);
    return {hits_, misses_, cached_};
  }

 private:
  c10::DataPtr take(size_t n) const {
    void* p = nullptr;
    if (n >= kMinCached) {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = free_.find(n);
      if (it != free_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        cached_ -= n;
        ++hits_;
      } else {
        ++misses_;
      }
    }
    if (!p && n > 0) {
      if (posix_memalign(&p, 64, n) != 0) throw std::bad_alloc();
    }
    if (p && n >= kMinCached) {
      std::lock_guard<std::mutex> lk(mu_);
      live_[p] = n;
    }
    // The context is the pointer itself: LibTorch's raw_allocate() requires it.
    return {p, p, &CachingCpuAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }

  void put(void* p) const {
    if (!p) return;
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = live_.find(p);
      if (it != live_.end()) {
        const size_t n = it->second;
        live_.erase(it);
        if (cached_ + n <= cap_) {
          free_[n].push_back(p);
          cached_ += n;
          return;
        }
      }
    }
    std::free(p);
  }

  size_t cap_;
  mutable std::mutex mu_;
  mutable std::map<size_t, std::vector<void*>> free_;
  mutable std::unordered_map<void*, size_t> live_;  // cacheable blocks in use
  mutable size_t cached_ = 0, hits_ = 0, misses_ = 0;
};

}  // namespace

void install_caching_cpu_allocator(size_t max_cached_bytes) {
  static std::once_flag once;
  std::call_once(once, [&] {
    // At most a quarter of the machine's memory stays cached.
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) max_cached_bytes = std::min(max_cached_bytes, size_t(pages) * size_t(page) / 4);
    // Priority above the default (0) so LibTorch uses it; blocks allocated before keep
    // their own deleters, so switching mid-run is safe.
    c10::SetCPUAllocator(CachingCpuAllocator::instance(max_cached_bytes), /*priority=*/1);
#if defined(__GLIBC__)
    // glibc raises its mmap and trim thresholds as large blocks come back to it; the cache
    // keeps them, so they stayed at 128 KiB and glibc kept returning the loader threads' heap
    // tops to the kernel (madvise) and faulting them in again: Debian 13's build decoded 18 %
    // slower with the cache than without (docs/benchmarks.md). Fixed at the values the
    // dynamic rule tops out at (32 MiB, twice that for trimming), as if it had run its course.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
  });
}

CpuCacheStats cpu_cache_stats() { return CachingCpuAllocator::instance()->stats(); }

}  // namespace cp2
