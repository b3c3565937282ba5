#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "cp2/common.h"

namespace cp2::test {
// tests/dist: one rank of a multi-process check (the tests start this binary again).
int run_dist_worker(const std::string& name, const std::string& dir);
}  // namespace cp2::test

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
  cp2::set_threads(0);
  return RUN_ALL_TESTS();
}
