#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "cp2/common.h"
#include "helpers.h"

namespace cp2::test {
// tests/dist: one rank of a multi-process check (the tests start this binary again).
int run_dist_worker(const std::string& name, const std::string& dir);
}  // namespace cp2::test

namespace {
// Removes a passed test's temp_dir folders (see helpers.h).
class RemoveTempDirsOfPassedTests : public ::testing::EmptyTestEventListener {
  void OnTestEnd(const ::testing::TestInfo& info) override {
    auto& dirs = cp2::test::temp_dirs_of_this_test();
    if (info.result()->Passed() && !std::getenv("CP2_KEEP_TEST_TMP"))
      for (const auto& d : dirs) {
        std::error_code ec;
        std::filesystem::remove_all(d, ec);
      }
    dirs.clear();
  }
};
}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--dist-worker") == 0) {
    cp2::set_threads(1);
    try {
      return cp2::test::run_dist_worker(argv[2], argv[3]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dist worker %s: %s\n", argv[2], e.what());
      return 1;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new RemoveTempDirsOfPassedTests);
  cp2::set_threads(0);
  return RUN_ALL_TESTS();
}
