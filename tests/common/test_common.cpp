// cp2/common.h: what a person reads of an error.
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <new>
#include <stdexcept>
#include <string>

#include "cp2/common.h"

namespace {

// LibTorch's errors carry a C++ backtrace in what() (frame lines, or "Exception raised from");
// the message printed by `main` and written to a run's summary.json keeps only their text.
TEST(Common, ErrorMessageDropsLibTorchsBacktrace) {
  try {
    const int found = 3;
    TORCH_CHECK(found == 4, "expected 4 channels, found ", found);
    FAIL() << "TORCH_CHECK did not throw";
  } catch (const std::exception& e) {
    const std::string full = e.what(), shown = cp2::error_message(e);
    EXPECT_NE(full.find("Exception raised from"), std::string::npos) << full;  // what the helper removes
    EXPECT_NE(shown.find("expected 4 channels, found 3"), std::string::npos) << shown;
    EXPECT_EQ(shown.find("Exception raised from"), std::string::npos) << shown;
    EXPECT_EQ(shown.find("frame #"), std::string::npos) << shown;
  }
}

TEST(Common, ErrorMessageSaysOutOfMemoryAndKeepsOthers) {
  try {
    throw std::bad_alloc();
  } catch (const std::exception& e) {
    EXPECT_EQ(cp2::error_message(e).rfind("out of memory (std::bad_alloc)", 0), 0u) << cp2::error_message(e);
  }
  try {
    throw cp2::Error("a.yaml: key 'train.lr': expected > 0, found -1");
  } catch (const std::exception& e) {
    EXPECT_EQ(cp2::error_message(e), "a.yaml: key 'train.lr': expected > 0, found -1");
  }
}

// One line of a cause, where a message quotes it: LibTorch's check, several lines long, and
// others as they are.
TEST(Common, ErrorLineIsTheMessagesFirstLine) {
  try {
    TORCH_CHECK(false, "conv2d: expected 4 channels, found 3\nsecond line");
    FAIL() << "TORCH_CHECK did not throw";
  } catch (const std::exception& e) {
    EXPECT_EQ(cp2::error_line(e), "conv2d: expected 4 channels, found 3");
  }
  EXPECT_EQ(cp2::first_line("one\ntwo\n"), "one");
  EXPECT_EQ(cp2::first_line("one"), "one");
  EXPECT_EQ(cp2::first_line(""), "");
  EXPECT_EQ(cp2::error_line(cp2::Error("x.pt: truncated")), "x.pt: truncated");
}

}  // namespace
