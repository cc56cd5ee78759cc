#pragma once
// Helpers shared by the test files.
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/error.h"

namespace ibn::test {

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
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
