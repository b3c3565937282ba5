// The caching CPU allocator: large blocks are reused, contents stay correct, threads are safe.
#include <torch/torch.h>

#include <thread>

#include "../helpers.h"
#include "cp2/cpu_allocator.h"
#include "cp2/io/checkpoint.h"

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

TEST(CpuAllocator, CheckpointTensorsStayOutOfTheCache) {
  // A loaded checkpoint is copied into the model and dropped: its blocks would stay in the
  // cache for the whole run, in sizes the run never asks for again.
  install_caching_cpu_allocator();
  const auto path = temp_dir("cpu_alloc_ckpt") + "/w.pt";
  const auto w = torch::arange(3 << 20, torch::kFloat);  // 12 MiB: a cached size class
  io::save_checkpoint(path, io::to_state_dict({{"w", w}}));
  const auto before = cpu_cache_stats();
  {
    auto ck = io::load_checkpoint(path);
    auto t = ck.root->get("w")->tensor;
    EXPECT_TRUE(torch::equal(t, w));
  }
  const auto after = cpu_cache_stats();
  EXPECT_EQ(after.hits, before.hits);
  EXPECT_EQ(after.misses, before.misses);
  EXPECT_EQ(after.cached_bytes, before.cached_bytes);
}

}  // namespace
}  // namespace cp2::test
