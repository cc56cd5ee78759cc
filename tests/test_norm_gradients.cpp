// Gradients of every normalizer (input, γ, β) against central finite differences in double
// precision, for λ in {0, 0.5, 2}, on every area; and finiteness where the statistics degenerate.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/norm/area.h"
#include "ibn/norm/normalizer.h"
#include "ibn/norm/registry.h"

namespace {

using ibn::norm::Normalizer;

struct Case {
  std::string spec;
  std::vector<int64_t> shape;
  bool training;
};

// Every operation on every area, and every IBNorm compression at every λ.
std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const std::vector<std::pair<std::string, std::vector<int64_t>>> areas = {
      {"", {3, 5}},                      // token, [N, D]
      {":area=batch", {6, 4}},           // batch, [N, D]
      {":area=group:groups=2", {2, 4, 2, 2}},  // group, [N, C, H, W]
  };
  for (const char* base : {"layernorm", "rmsnorm"}) {
    for (const auto& [area, shape] : areas) cases.push_back({base + area, shape, true});
  }
  cases.push_back({"layernorm", {2, 3, 4}, true});
  cases.push_back({"batchnorm", {3, 4, 2, 2}, true});
  cases.push_back({"batchnorm", {6, 4}, false});
  cases.push_back({"groupnorm:groups=2", {2, 3, 4}, true});
  for (const char* variant : {"ibnorm-s", "ibnorm-l", "ibnorm-t"}) {
    for (const char* lambda : {"0", "0.5", "2"}) {
      for (const auto& [area, shape] : areas) {
        cases.push_back({std::string(variant) + ":lambda=" + lambda + area, shape, true});
      }
      cases.push_back({std::string(variant) + ":lambda=" + lambda + ":area=batch", {6, 4}, false});
    }
  }
  // The order ablation, ln-tanh and DyT (whose α is checked as well).
  for (const char* order : {"first", "last"}) {
    for (const char* variant : {"ibnorm-s", "ibnorm-t"}) {
      const std::string spec = std::string(variant) + ":lambda=0.5:order=" + order;
      cases.push_back({spec, {3, 5}, true});
      cases.push_back({spec + ":area=batch", {6, 4}, true});
      cases.push_back({spec + ":area=batch", {6, 4}, false});
    }
  }
  cases.push_back({"ln-tanh:lambda=2", {3, 5}, true});
  cases.push_back({"dyt", {3, 5}, true});
  cases.push_back({"dyt:alpha=1.5", {2, 3, 4}, true});
  return cases;
}

// A built normalizer in double with random γ, β (and, for eval, running stats from one batch).
Normalizer build(const Case& c) {
  Normalizer norm(c.spec, c.shape[ibn::norm::feature_dim(c.shape.size())]);
  norm->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  norm->weight.copy_(torch::randn_like(norm->weight).add(1.0));
  norm->bias.copy_(torch::randn_like(norm->bias));
  if (!c.training) {
    norm(torch::randn(c.shape, torch::kDouble).mul(2));  // fills running estimates
    norm->eval();
  }
  return norm;
}

// Checks autograd's gradient of sum(norm(x)·r) with respect to `wrt` (x, γ or β) against central
// differences with step h. Returns the worst error relative to the gradient's largest entry
// (per-entry relative errors would measure only the rounding of entries near 0).
double worst_error(Normalizer& norm, torch::Tensor x, const torch::Tensor& r, torch::Tensor wrt, double h) {
  const auto loss = [&] { return (norm(x) * r).sum().item<double>(); };
  const auto analytic = torch::autograd::grad({(norm(x) * r).sum()}, {wrt})[0];
  torch::NoGradGuard no_grad;
  double worst = 0;
  const double scale = std::max(analytic.abs().max().item<double>(), 1e-12);
  auto flat = wrt.view({-1});
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double saved = flat[i].item<double>();
    flat[i] = saved + h;
    const double up = loss();
    flat[i] = saved - h;
    const double down = loss();
    flat[i] = saved;
    const double numeric = (up - down) / (2 * h);
    const double exact = analytic.view({-1})[i].item<double>();
    worst = std::max(worst, std::abs(numeric - exact) / scale);
  }
  return worst;
}

// Central differences in double: truncation error ≈ h²·f‴/6 and rounding ≈ 1e-16·|loss|/h
// balance near h = 1e-5, where both stay around 1e-7 of the gradient's scale; a wrong
// derivative is off by O(1).
constexpr double kStep = 1e-5;
constexpr double kRelTol = 1e-5;

TEST(NormGradients, MatchFiniteDifferencesForEveryVariantAreaAndLambda) {
  torch::manual_seed(11);
  for (const Case& c : all_cases()) {
    Normalizer norm = build(c);
    auto x = torch::randn(c.shape, torch::kDouble).mul(1.5).add(0.3).requires_grad_(true);
    const auto r = torch::randn(c.shape, torch::kDouble);
    EXPECT_LT(worst_error(norm, x, r, x, kStep), kRelTol) << c.spec << " d/dx";
    EXPECT_LT(worst_error(norm, x, r, norm->weight, kStep), kRelTol) << c.spec << " d/dgamma";
    EXPECT_LT(worst_error(norm, x, r, norm->bias, kStep), kRelTol) << c.spec << " d/dbeta";
    if (norm->named_parameters().contains("alpha")) {
      EXPECT_LT(worst_error(norm, x, r, norm->named_parameters()["alpha"], kStep), kRelTol) << c.spec << " d/dalpha";
    }
  }
}

// z = 0 exactly where an input equals its group mean: autograd through sign(z)·f(|z|) would give
// 0 there, the analytic derivative gives f'(0). ψ_S'' jumps at 0, so a central difference there
// is only first-order accurate, with relative error ≈ (1 − p)·h/(2δσ): h = 1e-9 keeps it ~1e-6.
TEST(NormGradients, ExactAtInputsEqualToTheirGroupMean) {
  for (const char* variant : {"ibnorm-s", "ibnorm-l", "ibnorm-t"}) {
    for (const char* lambda : {"0.5", "2"}) {
      const Case c{std::string(variant) + ":lambda=" + lambda, {2, 5}, true};
      Normalizer norm = build(c);
      // Each row has mean 0, and holds 0 itself.
      auto x = torch::tensor({{-2.0, -1.0, 0.0, 1.0, 2.0}, {0.0, 3.0, -1.0, -2.5, 0.5}}, torch::kDouble)
                   .requires_grad_(true);
      const auto r = torch::randn({2, 5}, torch::kDouble);
      EXPECT_LT(worst_error(norm, x, r, x, 1e-9), 1e-5) << c.spec;  // rounding ≈ 1e-7·|loss|
      // And the analytic slope is what autograd alone would have missed: not 0 at z = 0.
      const auto& compression = ibn::norm::find_compression(norm->spec().compression);
      const auto z0 = torch::zeros({1}, torch::kDouble);
      EXPECT_GT(compression.dpsi(z0, norm->spec().lambda).item<double>(), 0.5) << c.spec;
    }
  }
}

// Groups whose values are all equal (σ = 0): gradients stay finite, and still match finite
// differences (the function is smooth there because ε > 0). The step is smaller because the
// curvature of ψ_S near 0 has the scale of δ = 1e-3 times √ε.
TEST(NormGradients, FiniteOnConstantGroups) {
  for (const Case& c : all_cases()) {
    Normalizer norm = build(c);
    auto x = torch::full(c.shape, 0.7, torch::kDouble);
    if (c.shape.size() == 2 && c.training && c.spec.find("area=batch") == std::string::npos) {
      x[1] = torch::randn({c.shape[1]}, torch::kDouble);  // one ordinary row beside a constant one
    }
    x.requires_grad_(true);
    const auto r = torch::randn(c.shape, torch::kDouble);
    const auto grads = torch::autograd::grad({(norm(x) * r).sum()}, {x, norm->weight, norm->bias});
    for (const auto& g : grads) EXPECT_TRUE(torch::isfinite(g).all().item<bool>()) << c.spec;
    EXPECT_LT(worst_error(norm, x, r, x, 1e-9), 1e-3) << c.spec;
  }
}

}  // namespace
