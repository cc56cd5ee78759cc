// The test runner: GoogleTest's main, after the same start-up as the ibn binary.
#include <gtest/gtest.h>

#include "ibn/device.h"

int main(int argc, char** argv) {
  ibn::keep_freed_memory();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
