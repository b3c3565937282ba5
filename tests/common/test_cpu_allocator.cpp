// The caching CPU allocator: large blocks are reused, contents stay correct, threads are safe.
#include <torch/torch.h>

#include <thread>

#include "../helpers.h"
#include "cp2/cpu_allocator.h"

namespace cp2::test {
namespace {

TEST(CpuAllocator, ReusesLargeBlocksAndKeepsResultsExact) {
  install_caching_cpu_allocator();  // LibTorch 1.13 and 2.x alike
  void* first = nullptr;
  {
    auto t = torch::empty({1 << 20});  // 4 MiB: cached size class
    first = t.data_ptr();
  }
  auto before = cpu_cache_stats();
  auto u = torch::empty({1 << 20});
  EXPECT_EQ(u.data_ptr(), first);
  EXPECT_EQ(cpu_cache_stats().hits, before.hits + 1);
  // Reused memory is fully overwritten by ops: results as with fresh memory.
  auto a = torch::arange(1 << 20, torch::kFloat);
  auto b = a * 2 + 1;
  EXPECT_EQ(b[12345].item<float>(), 24691.f);
  // Concurrent allocation and release from several threads.
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([] {
      for (int k = 0; k < 200; ++k) {
        auto t = torch::full({(1 << 18) + k % 3}, 1.f);
        ASSERT_EQ(t.sum().item<float>(), float((1 << 18) + k % 3));
      }
    });
  for (auto& t : ts) t.join();
}

}  // namespace
}  // namespace cp2::test
