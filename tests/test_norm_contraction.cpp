// Variance contraction κ (SPEC §3) and the moments of every normalizer's output.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "ibn/norm/area.h"
#include "ibn/norm/normalizer.h"
#include "ibn/norm/registry.h"

namespace {

using ibn::norm::Normalizer;

const std::vector<double> kLambdas = {0.0, 0.25, 0.5, 1.0, 2.0, 4.0};

TEST(NormContraction, IsOneForVarianceCentricNorms) {
  torch::manual_seed(21);
  const auto x = torch::randn({512, 64}).mul(3).add(1);
  for (const char* spec : {"layernorm", "batchnorm", "rmsnorm", "groupnorm:groups=8"}) {
    Normalizer norm(spec, 64);
    // var(z) = σ²/(σ² + ε): 1 up to ε/σ² with σ² ≈ 9 here.
    EXPECT_NEAR(norm->contraction(x).item<double>(), 1.0, 2e-6) << spec;
    EXPECT_DOUBLE_EQ(ibn::norm::gaussian_contraction(norm->spec()), 1.0) << spec;
  }
}

TEST(NormContraction, StrictlyDecreasesWithLambdaOnGaussianInput) {
  torch::manual_seed(22);
  const auto x = torch::randn({1024, 128});
  for (const char* variant : {"ibnorm-s", "ibnorm-l", "ibnorm-t"}) {
    for (const char* area : {"", ":area=batch", ":area=group:groups=4"}) {
      double previous = INFINITY;
      for (double lambda : kLambdas) {
        Normalizer norm(std::string(variant) + area + ":lambda=" + std::to_string(lambda), 128);
        const double kappa = norm->contraction(x).item<double>();
        EXPECT_LT(kappa, previous) << variant << area << " lambda " << lambda;
        EXPECT_GT(kappa, 0.0);
        previous = kappa;
      }
    }
  }
}

// The measured κ through the layer agrees with the quadrature for Gaussian z: the sampling
// error of a variance estimate over 2^20 values is about 2e-3 relative.
TEST(NormContraction, MatchesGaussianQuadrature) {
  torch::manual_seed(23);
  const auto x = torch::randn({1024, 1024}, torch::kDouble);
  for (const char* variant : {"ibnorm-s", "ibnorm-l", "ibnorm-t"}) {
    for (double lambda : {0.5, 2.0}) {
      Normalizer norm(std::string(variant) + ":lambda=" + std::to_string(lambda), 1024);
      norm->to(torch::kDouble);
      const double measured = norm->contraction(x).item<double>();
      const double expected = ibn::norm::gaussian_contraction(norm->spec());
      EXPECT_NEAR(measured, expected, 1e-2 * expected) << variant << " lambda " << lambda;
    }
  }
}

// Closed forms for the quadrature itself: for small λ, tanh(λz)/λ ≈ z − λ²z³/3 gives
// κ ≈ 1 − 2λ²·E[z⁴]/3 = 1 − 2λ², and log(1+λ|z|)/λ ≈ |z| − λz²/2 gives
// κ ≈ 1 − λ·E|z|³ = 1 − λ·2√(2/π).
TEST(NormContraction, QuadratureMatchesSmallLambdaExpansions) {
  const double lambda = 1e-3;
  auto spec = ibn::norm::parse_norm_spec("ibnorm-t");
  spec.lambda = lambda;
  EXPECT_NEAR(ibn::norm::gaussian_contraction(spec), 1.0 - 2.0 * lambda * lambda, 1e-9);
  spec = ibn::norm::parse_norm_spec("ibnorm-l");
  spec.lambda = lambda;
  EXPECT_NEAR(ibn::norm::gaussian_contraction(spec), 1.0 - lambda * 2.0 * std::sqrt(2.0 / M_PI), 1e-5);
}

// κ(λ) by quadrature falls strictly from 1 on a log grid (what the bisection behind kappa=K
// relies on), and kappa=K gives back the λ whose κ is K.
TEST(NormContraction, KappaChoosesTheLambdaWithThatGaussianContraction) {
  for (const char* variant : {"ibnorm-s", "ibnorm-l", "ibnorm-t"}) {
    auto spec = ibn::norm::parse_norm_spec(variant);
    double previous = 1.0;
    std::vector<double> grid;
    for (double lambda = 1e-6; lambda < 1e4; lambda *= 3.0) grid.push_back(lambda);
    grid.push_back(1e4);  // kMaxLambda, the bisection's upper end
    for (double lambda : grid) {
      spec.lambda = lambda;
      const double kappa = ibn::norm::gaussian_contraction(spec);
      EXPECT_LT(kappa, previous) << variant << " lambda " << lambda;
      previous = kappa;
    }
    for (double lambda : {0.25, 2.0, 7.0}) {
      spec.lambda = lambda;
      const double kappa = ibn::norm::gaussian_contraction(spec);
      const auto matched = ibn::norm::parse_norm_spec(std::string(variant) + ":kappa=" + fmt::format("{}", kappa));
      EXPECT_NEAR(matched.lambda, lambda, 1e-9 * lambda) << variant << " kappa " << kappa;
    }
    for (double target : {0.1, 0.5, 0.9}) {
      const auto matched = ibn::norm::parse_norm_spec(std::string(variant) + ":kappa=" + fmt::format("{}", target));
      EXPECT_NEAR(ibn::norm::gaussian_contraction(matched), target, 1e-10) << variant;
      // The layer measures about that κ on Gaussian input (sampling error ≈ 2e-3 relative).
      Normalizer norm(matched.str(), 1024);
      norm->to(torch::kDouble);
      torch::manual_seed(25);
      EXPECT_NEAR(norm->contraction(torch::randn({1024, 1024}, torch::kDouble)).item<double>(), target, 1e-2 * target);
    }
  }
}

// DyT's κ is the variance of tanh(α·x) (it never standardizes), NormalNorm's that of YJ(z; λ̂):
// about 1 on Gaussian data, where λ̂ ≈ 1, and below 1 on skewed data, where it equals the
// variance of the layer's own output (no noise, no affine).
TEST(NormContraction, DynamicTanhAndNormalNormHaveTheirOwnKappa) {
  torch::manual_seed(26);
  const auto gaussian = torch::randn({1024, 1024}, torch::kDouble);
  Normalizer dyt("dyt:alpha=0.7", 1024);
  dyt->to(torch::kDouble);
  const double expected = ibn::norm::gaussian_contraction(dyt->spec());
  EXPECT_LT(expected, 0.5);  // E[tanh(0.7z)²] ≈ 0.28: a real contraction, not the default 1
  EXPECT_NEAR(dyt->contraction(gaussian).item<double>(), expected, 1e-2 * expected);
  // On x of scale 3, the variance of tanh(α·x) itself: DyT's κ sees the input's scale.
  const double alpha = dyt->named_parameters()["alpha"].item<double>();
  EXPECT_NEAR(dyt->contraction(gaussian.mul(3)).item<double>(), torch::tanh(gaussian.mul(3 * alpha)).var(1, false).mean().item<double>(),
              1e-12);

  Normalizer normal("normalnorm:affine=false", 1024);
  normal->to(torch::kDouble);
  EXPECT_NEAR(normal->contraction(gaussian).item<double>(), 1.0, 2e-2);
  const auto skewed = gaussian.mul(0.7).exp();
  const double kappa = normal->contraction(skewed).item<double>();
  EXPECT_LT(kappa, 0.9);
  normal->eval();
  EXPECT_NEAR(kappa, normal(skewed).var(1, false).mean().item<double>(), 1e-9);
}

// Before γ, β every normalizer's output has zero mean and unit variance in each of its groups
// (RMSNorm: unit mean square). ε = 0 so that both hold exactly, up to rounding.
TEST(NormContraction, OutputsHaveZeroMeanAndUnitVariancePerGroup) {
  torch::manual_seed(24);
  const std::vector<std::vector<int64_t>> shapes = {{256, 32}, {16, 8, 32}, {32, 32, 3, 3}};
  for (const auto& preset : ibn::norm::presets()) {
    // DyT and ψ-last keep ψ's output as it is (their formulas: test_norm_reference).
    // NormalNorm's output is a Yeo–Johnson transform of standardized values, not standardized.
    if (preset.operation == "dyt" || preset.operation == "normalnorm" || preset.order == "last") continue;
    for (const char* area : {"batch", "token", "group"}) {
      for (const auto& shape : shapes) {
        std::string spec = preset.name + ":affine=false:eps=0:area=" + area;
        if (std::string(area) == "group") spec += ":groups=4";
        if (preset.operation == "ibnorm") spec += ":lambda=2";
        Normalizer norm(spec, 32);
        const auto x = torch::randn(shape, torch::kDouble).mul(2).add(0.5);
        norm->to(torch::kDouble);
        const auto plan = norm->plan(x.sizes());
        const auto y = norm(x).reshape(plan.grouped_shape);
        if (preset.operation == "rms") {
          EXPECT_LT((y.square().mean(plan.reduce_dims) - 1).abs().max().item<double>(), 1e-12) << spec;
          continue;
        }
        EXPECT_LT(y.mean(plan.reduce_dims).abs().max().item<double>(), 1e-12) << spec;
        EXPECT_LT((y.var(plan.reduce_dims, false) - 1).abs().max().item<double>(), 1e-12) << spec;
      }
    }
  }
}

}  // namespace
