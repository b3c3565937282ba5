#include <gtest/gtest.h>

#include "cp2/common.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  cp2::set_threads(0);
  return RUN_ALL_TESTS();
}
