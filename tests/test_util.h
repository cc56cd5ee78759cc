#pragma once
// Helpers shared by the test files.
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <limits>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/error.h"

namespace ibn::test {

// A path under the system's temporary directory, unique to this test process (ctest runs test
// processes side by side): <tmp>/ibn_<prefix>_<pid>_<name>. Nothing is created.
inline std::string scratch_path(const std::string& prefix, const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("ibn_" + prefix + "_" + std::to_string(::getpid()) + "_" + name)).string();
}

// NaN-aware: +inf when a and b are NaN at different places, or infinite at different places
// (or with different signs); otherwise the largest |a − b| over the finite elements. Where a
// NaN on both sides is the defined result (ε = 0 on a constant group), it agrees.
inline double nan_aware_max_diff(const torch::Tensor& a_in, const torch::Tensor& b_in) {
  const auto a = a_in.to(torch::kDouble).cpu(), b = b_in.to(torch::kDouble).cpu();
  if (a.sizes() != b.sizes()) return std::numeric_limits<double>::infinity();
  if (!torch::equal(a.isnan(), b.isnan())) return std::numeric_limits<double>::infinity();
  const auto infinite = a.isinf() | b.isinf();
  if (!torch::equal(a.masked_select(infinite), b.masked_select(infinite))) return std::numeric_limits<double>::infinity();
  const auto finite = a.isfinite() & b.isfinite();
  if (finite.sum().item<int64_t>() == 0) return 0;
  return (a.masked_select(finite) - b.masked_select(finite)).abs().max().item<double>();
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Expects `run` to throw ibn::UsageError or ibn::DataError whose message contains `needle`.
inline void expect_error(const std::function<void()>& run, const std::string& needle) {
  try {
    run();
    ADD_FAILURE() << "no error for " << needle;
  } catch (const std::invalid_argument& e) {  // UsageError
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  } catch (const std::runtime_error& e) {  // DataError
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Asserts that running `body` throws ibn::UsageError whose message contains `needle`.
template <typename Body>
::testing::AssertionResult throws_usage_error(Body body, const std::string& needle) {
  try {
    body();
  } catch (const ibn::UsageError& e) {
    const std::string what = e.what();
    if (what.find(needle) == std::string::npos) {
      return ::testing::AssertionFailure() << "message '" << what << "' lacks '" << needle << "'";
    }
    if (what.find('\n') != std::string::npos) {
      return ::testing::AssertionFailure() << "message '" << what << "' is not one line";
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-usage error: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw (expected '" << needle << "')";
}

}  // namespace ibn::test
