#pragma once
// The GPU tests' guard: without a device they skip, but under IBN_REQUIRE_GPU=1 (set by
// scripts/gpu-verify.sh) they fail, so a broken driver or a CPU LibTorch cannot pass as a green
// run. No LibTorch or CUDA here: the kernel tests (nvcc and emulator) and the LibTorch tests share it.
#include <cstdlib>

#include <gtest/gtest.h>

#define IBN_SKIP_WITHOUT_GPU(available, why)                                                   \
  if (!(available)) {                                                                          \
    if (std::getenv("IBN_REQUIRE_GPU") != nullptr) FAIL() << why << " (IBN_REQUIRE_GPU is set)"; \
    GTEST_SKIP() << why;                                                                       \
  }
