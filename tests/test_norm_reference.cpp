// The variance-centric normalizers against LibTorch's own layers, in fp32 to 1e-6, and IBNorm at
// λ = 0 against the same layers.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/error.h"
#include "ibn/norm/normalizer.h"
#include "test_util.h"

namespace {

using ibn::norm::Normalizer;
using ibn::test::max_abs_diff;

constexpr double kTol = 1e-6;  // fp32 agreement with LibTorch's layers, relative to |output|
const std::vector<int64_t> kWidths = {1, 33, 132, 260, 1025};

// Random γ, β so that the affine step is exercised too.
void randomize_affine(Normalizer& norm) {
  torch::NoGradGuard no_grad;
  norm->weight.copy_(torch::randn_like(norm->weight));
  norm->bias.copy_(torch::randn_like(norm->bias));
}

// The layer in float64, with random γ, β when it has them.
Normalizer in_float64(const std::string& spec, int64_t features) {
  Normalizer norm(spec, features);
  norm->to(torch::kDouble);
  if (norm->weight.defined()) randomize_affine(norm);
  return norm;
}

// A group count dividing `width` other than 1 where one exists.
int64_t some_divisor(int64_t width) {
  for (int64_t g : {3, 4, 5, 2}) {
    if (width % g == 0) return g;
  }
  return 1;
}

// `ours` and `lib` compute the same stateless layer; each follows the dtype of its input.
// In fp64 they agree to 1e-10. In fp32 ours is within kTol·(1 + |y|) of LibTorch's output,
// plus LibTorch's own fp32 rounding error where it has one: at width 1, (x − μ) cancels to a
// few ulp that LibTorch multiplies by 1/√ε ≈ 316, while the two-pass form gives exactly 0.
template <typename Ours, typename Lib>
::testing::AssertionResult same_layer(Ours ours, Lib lib, const torch::Tensor& x32) {
  const auto x64 = x32.to(torch::kDouble);
  const torch::Tensor lib64 = lib(x64);
  const double diff64 = max_abs_diff(ours(x64), lib64);
  if (diff64 > 1e-10 * (1 + lib64.abs().max().item<double>())) {
    return ::testing::AssertionFailure() << "fp64 differs by " << diff64;
  }
  const torch::Tensor lib32 = lib(x32).to(torch::kDouble);
  const torch::Tensor ours32 = ours(x32).to(torch::kDouble);
  const auto tolerance = lib64.abs().add(1).mul(kTol).add((lib32 - lib64).abs());
  const auto excess = ((ours32 - lib32).abs() - tolerance).max().item<double>();
  if (excess > 0) {
    return ::testing::AssertionFailure() << "fp32 differs by " << max_abs_diff(ours32, lib32)
                                         << ", " << excess << " over the tolerance";
  }
  return ::testing::AssertionSuccess();
}

// The normalizer as a function of x in x's dtype.
auto as_function(Normalizer& norm) {
  return [&norm](const torch::Tensor& x) {
    norm->to(x.scalar_type());
    return norm(x);
  };
}

TEST(NormReference, LayerNormMatchesLibTorch) {
  torch::manual_seed(1);
  for (int64_t d : kWidths) {
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{17, d}, std::vector<int64_t>{3, 5, d}}) {
      Normalizer ours("layernorm", d);
      randomize_affine(ours);
      const auto lib = [&](const torch::Tensor& x) {
        return torch::layer_norm(x, {d}, ours->weight.to(x.scalar_type()), ours->bias.to(x.scalar_type()), 1e-5);
      };
      EXPECT_TRUE(same_layer(as_function(ours), lib, torch::randn(shape).mul(3).add(1)))
          << "width " << d << " rank " << shape.size();
    }
  }
}

// LayerNorm calls LibTorch's fused op on the CPU, so the test above compares it with itself
// there: this one holds it to the formula, (x − μ)/√(σ² + ε)·γ + β with the biased variance,
// computed directly in float64, in both dtypes and through autograd.
TEST(NormReference, LayerNormEqualsTheFormulaInFloat64) {
  torch::manual_seed(2);
  for (int64_t d : {2, 7, 64}) {
    Normalizer ours("layernorm", d);
    randomize_affine(ours);
    const auto x = torch::randn({9, 4, d}, torch::kDouble).mul(3).add(1);
    const auto mean = x.mean(-1, true);
    const auto var = x.sub(mean).square().mean(-1, true);
    const auto w = ours->weight.to(torch::kDouble), b = ours->bias.to(torch::kDouble);
    const auto expected = x.sub(mean).div(var.add(1e-5).sqrt()).mul(w).add(b);
    EXPECT_LT(ibn::test::nan_aware_max_diff(as_function(ours)(x), expected), 1e-12) << d;
    EXPECT_LT(ibn::test::nan_aware_max_diff(as_function(ours)(x.to(torch::kFloat)), expected), 2e-5) << d;
  }
}

// On feature maps the token area normalizes each pixel over its channels: LibTorch's layer_norm
// over C after moving C last.
TEST(NormReference, TokenAreaOnFeatureMapsIsChannelLayerNorm) {
  torch::manual_seed(9);
  for (int64_t c : kWidths) {
    Normalizer ours("layernorm", c);
    randomize_affine(ours);
    const auto lib = [&](const torch::Tensor& x) {
      return torch::layer_norm(x.permute({0, 2, 3, 1}), {c}, ours->weight.to(x.scalar_type()),
                               ours->bias.to(x.scalar_type()), 1e-5).permute({0, 3, 1, 2});
    };
    EXPECT_TRUE(same_layer(as_function(ours), lib, torch::randn({2, c, 3, 4}).mul(2))) << c;
  }
}

TEST(NormReference, RMSNormMatchesFormulaAndLibTorch) {
  torch::manual_seed(2);
  for (int64_t d : kWidths) {
    Normalizer ours("rmsnorm:eps=1e-6", d);
    randomize_affine(ours);
    // Independent reference: x / sqrt(mean(x²) + ε) · γ + β (β is SPEC §1's NRR; LibTorch's
    // RMSNorm has none, so it is added to LibTorch's output below).
    const auto formula = [&](const torch::Tensor& x) {
      return x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * ours->weight.to(x.scalar_type()) +
             ours->bias.to(x.scalar_type());
    };
    const auto x = torch::randn({9, 4, d}).add(0.5);
    EXPECT_TRUE(same_layer(as_function(ours), formula, x)) << "width " << d;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    const auto lib = [&](const torch::Tensor& xs) {
      return at::rms_norm(xs, {d}, ours->weight.to(xs.scalar_type()), 1e-6) + ours->bias.to(xs.scalar_type());
    };
    EXPECT_TRUE(same_layer(as_function(ours), lib, x)) << "width " << d << " vs at::rms_norm";
#endif
  }
}

TEST(NormReference, BatchNormMatchesLibTorchInTrainingAndEval) {
  torch::manual_seed(3);
  for (int64_t c : kWidths) {
    // [N, D] against BatchNorm1d.
    Normalizer ours("batchnorm:momentum=0.2", c);
    torch::nn::BatchNorm1d ref(torch::nn::BatchNormOptions(c).momentum(0.2).eps(1e-5));
    randomize_affine(ours);
    {
      torch::NoGradGuard no_grad;
      ref->weight.copy_(ours->weight);
      ref->bias.copy_(ours->bias);
    }
    for (int step = 0; step < 3; ++step) {
      const auto x = torch::randn({16, c}).mul(2).add(step);
      EXPECT_LE(max_abs_diff(ours(x), ref(x)), kTol) << "train width " << c << " step " << step;
    }
    const auto& buffers = ours->named_buffers();
    EXPECT_LE(max_abs_diff(buffers["running_mean"], ref->running_mean), kTol) << c;
    EXPECT_LE(max_abs_diff(buffers["running_var"], ref->running_var), kTol) << c;
    EXPECT_EQ(buffers["num_batches_tracked"].item<int64_t>(), 3);
    ours->eval();
    ref->eval();
    const auto x = torch::randn({5, c});
    EXPECT_LE(max_abs_diff(ours(x), ref(x)), kTol) << "eval width " << c;
  }
}

TEST(NormReference, BatchNorm2dAndTokenLayoutMatchLibTorch) {
  torch::manual_seed(4);
  for (int64_t c : kWidths) {
    Normalizer ours("batchnorm", c);
    torch::nn::BatchNorm2d ref{torch::nn::BatchNormOptions(c)};
    const auto x = torch::randn({4, c, 3, 5});
    EXPECT_LE(max_abs_diff(ours(x), ref(x)), kTol) << "[N, C, H, W] width " << c;
    ours->eval();
    ref->eval();
    EXPECT_LE(max_abs_diff(ours(x), ref(x)), kTol) << "[N, C, H, W] eval width " << c;

    // [N, T, D]: statistics per feature over N·T, as BatchNorm1d on the flattened tokens.
    Normalizer tokens("batchnorm", c);
    torch::nn::BatchNorm1d flat{torch::nn::BatchNormOptions(c)};
    const auto xt = torch::randn({3, 7, c});
    EXPECT_LE(max_abs_diff(tokens(xt), flat(xt.reshape({21, c})).reshape({3, 7, c})), kTol) << c;
  }
}

TEST(NormReference, GroupNormMatchesLibTorch) {
  torch::manual_seed(5);
  for (int64_t c : kWidths) {
    const int64_t groups = some_divisor(c);
    Normalizer ours("groupnorm:groups=" + std::to_string(groups), c);
    randomize_affine(ours);
    const auto lib = [&](const torch::Tensor& x) {
      const auto y = torch::group_norm(x.reshape({-1, c}), groups, ours->weight.to(x.scalar_type()),
                                       ours->bias.to(x.scalar_type()), 1e-5);
      return y.reshape(x.sizes());
    };
    const auto lib4 = [&](const torch::Tensor& x) {
      return torch::group_norm(x, groups, ours->weight.to(x.scalar_type()), ours->bias.to(x.scalar_type()), 1e-5);
    };
    EXPECT_TRUE(same_layer(as_function(ours), lib4, torch::randn({3, c, 2, 3}).mul(2))) << "[N, C, H, W] " << c;
    EXPECT_TRUE(same_layer(as_function(ours), lib, torch::randn({6, c}))) << "[N, D] " << c;
    // [N, T, D]: grouped per token, as GroupNorm on the flattened tokens.
    EXPECT_TRUE(same_layer(as_function(ours), lib, torch::randn({2, 5, c}))) << "[N, T, D] " << c;
  }
}

// IBNorm at λ = 0 is its base norm: compare with LibTorch's layers, not with our own code.
TEST(NormReference, IBNormAtLambdaZeroEqualsBaseNorm) {
  torch::manual_seed(6);
  for (const char* variant : {"ibnorm-s", "ibnorm-l", "ibnorm-t"}) {
    for (int64_t d : kWidths) {
      const std::string name = std::string(variant) + ":lambda=0";
      const auto x = torch::randn({8, d}).mul(2);
      Normalizer token(name, d);
      const auto layer_norm = [&](const torch::Tensor& xs) { return torch::layer_norm(xs, {d}); };
      EXPECT_TRUE(same_layer(as_function(token), layer_norm, x)) << name << " token " << d;

      const int64_t groups = some_divisor(d);
      Normalizer group(name + ":area=group:groups=" + std::to_string(groups), d);
      const auto group_norm = [&](const torch::Tensor& xs) { return torch::group_norm(xs, groups); };
      EXPECT_TRUE(same_layer(as_function(group), group_norm, x)) << name << " group " << d;

      Normalizer batch(name + ":area=batch", d);
      torch::nn::BatchNorm1d bn(d);
      EXPECT_LE(max_abs_diff(batch(x), bn(x)), kTol) << name << " batch " << d;
      batch->eval();
      bn->eval();
      EXPECT_LE(max_abs_diff(batch(x), bn(x)), kTol) << name << " batch eval " << d;
    }
  }
}

// The λ = 0 shortcut is a limit, not a special case: small λ converges to the base norm.
TEST(NormReference, IBNormConvergesToBaseNormAsLambdaShrinks) {
  torch::manual_seed(7);
  const auto x = torch::randn({64, 128}, torch::kDouble);
  // eps = 0 so that the only difference left is the compression's.
  const auto base = torch::layer_norm(x, {128}, {}, {}, /*eps=*/0.0);
  for (const char* variant : {"ibnorm-s", "ibnorm-l", "ibnorm-t"}) {
    double previous = INFINITY;
    for (double lambda : {1e-1, 1e-2, 1e-3}) {
      Normalizer norm(std::string(variant) + ":eps=0:lambda=" + std::to_string(lambda), 128);
      norm->to(torch::kDouble);
      const double diff = max_abs_diff(norm(x), base);
      EXPECT_LT(diff, previous) << variant << " lambda " << lambda;
      EXPECT_LT(diff, 50 * lambda) << variant << " lambda " << lambda;
      previous = diff;
    }
  }
}

// ψ_λ written out from SPEC §2 here, apart from src/norm/compression_*.cpp.
torch::Tensor psi_reference(const std::string& variant, const torch::Tensor& z, double lambda) {
  if (variant == "ibnorm-t") return torch::tanh(z * lambda) / lambda;
  if (variant == "ibnorm-l") return torch::sign(z) * torch::log1p(z.abs() * lambda) / lambda;
  const double p = 1.0 / (1.0 + lambda), delta = 1e-3;
  return torch::sign(z) * ((z.abs() + delta).pow(p) - std::pow(delta, p));
}

// Per row over the last dim: (x − mean)/√(biased var + ε).
torch::Tensor standardize_rows(const torch::Tensor& x, double eps) {
  const auto centred = x - x.mean(-1, true);
  return centred / (centred.square().mean(-1, true) + eps).sqrt();
}

// The order ablation (order=first|between|last) and ln-tanh against their formulas in float64.
TEST(NormReference, IBNormOrdersAndLnTanhMatchTheirFormulas) {
  torch::manual_seed(9);
  const auto x = torch::randn({16, 12}, torch::kDouble).mul(2).add(0.5);
  const double lambda = 1.5, eps = 1e-5;
  for (const std::string variant : {"ibnorm-s", "ibnorm-l", "ibnorm-t"}) {
    const std::map<std::string, torch::Tensor> expected = {
        {"first", standardize_rows(psi_reference(variant, x - x.mean(-1, true), lambda), eps)},
        {"between", standardize_rows(psi_reference(variant, standardize_rows(x, eps), lambda), eps)},
        {"last", psi_reference(variant, standardize_rows(x, eps), lambda)},
    };
    for (const auto& [order, x_hat] : expected) {
      Normalizer norm = in_float64(variant + ":lambda=1.5:order=" + order, 12);
      EXPECT_LE(max_abs_diff(norm(x), x_hat * norm->weight + norm->bias), 1e-12) << variant << " order=" << order;
    }
  }
  Normalizer ln_tanh = in_float64("ln-tanh:lambda=1.5", 12);
  const auto x_hat = psi_reference("ibnorm-t", standardize_rows(x, eps), lambda);
  EXPECT_LE(max_abs_diff(ln_tanh(x), x_hat * ln_tanh->weight + ln_tanh->bias), 1e-12);
}

// DyT: y = γ·tanh(α·x) + β, γ, β per channel (dim 1 of feature maps), α one learned scalar.
TEST(NormReference, DynamicTanhMatchesItsFormula) {
  torch::manual_seed(10);
  Normalizer dyt = in_float64("dyt:alpha=0.7", 12);
  // α is a float32 parameter made double: 0.7 rounded to float once.
  const double alpha = dyt->named_parameters()["alpha"].item<double>();
  EXPECT_EQ(alpha, static_cast<double>(0.7f));
  const auto tokens = torch::randn({4, 5, 12}, torch::kDouble).mul(3);
  EXPECT_LE(max_abs_diff(dyt(tokens), torch::tanh(tokens * alpha) * dyt->weight + dyt->bias), 1e-14);
  const auto maps = torch::randn({2, 12, 3, 3}, torch::kDouble).mul(3);
  const auto per_channel = [](const torch::Tensor& v) { return v.view({1, -1, 1, 1}); };
  EXPECT_LE(max_abs_diff(dyt(maps), torch::tanh(maps * alpha) * per_channel(dyt->weight) + per_channel(dyt->bias)), 1e-14);
  {
    torch::NoGradGuard no_grad;
    dyt->named_parameters()["alpha"].fill_(1.3);  // what an optimizer step does: the output follows
  }
  EXPECT_LE(max_abs_diff(dyt(tokens), torch::tanh(tokens * 1.3) * dyt->weight + dyt->bias), 1e-14);
}

// Yeo–Johnson written directly with pow and log (no expm1/log1p forms), λ a scalar.
torch::Tensor yeo_johnson_reference(const torch::Tensor& z, double lambda) {
  const auto positive = lambda == 0 ? torch::log(1 + z.clamp_min(0)) : ((1 + z.clamp_min(0)).pow(lambda) - 1) / lambda;
  const auto negative = lambda == 2 ? -torch::log(1 - z.clamp_max(0))
                                    : -((1 - z.clamp_max(0)).pow(2 - lambda) - 1) / (2 - lambda);
  return torch::where(z >= 0, positive, negative);
}

// The Gaussian NLL per sample of YJ(z; λ): ½·log var − (λ − 1)·mean(sign(z)·log(1 + |z|)).
double yeo_johnson_nll(const torch::Tensor& z, double lambda) {
  const auto u = yeo_johnson_reference(z, lambda);
  return 0.5 * std::log(u.var(0, false).item<double>()) - (lambda - 1) * (z.sign() * (1 + z.abs()).log()).mean().item<double>();
}

// One Newton step from λ = 1 with the NLL's derivatives taken by central differences, clipped
// to [0, 2] as NormalNorm clips it.
double newton_lambda_by_differences(const torch::Tensor& z) {
  const double h = 1e-4;
  const double up = yeo_johnson_nll(z, 1 + h), mid = yeo_johnson_nll(z, 1), down = yeo_johnson_nll(z, 1 - h);
  const double first = (up - down) / (2 * h), second = (up - 2 * mid + down) / (h * h);
  EXPECT_GT(second, 0);
  return std::clamp(1 - first / second, 0.0, 2.0);
}

// NormalNorm's x̂ row by row from the direct formulas: YJ(z_i; λ̂_i), z the standardized rows
// of x (autograd flows through them) and λ̂_i a number from the detached z_i.
torch::Tensor normalnorm_reference(const torch::Tensor& x) {
  const auto z = standardize_rows(x, 1e-5);
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < z.size(0); ++i) rows.push_back(yeo_johnson_reference(z[i], newton_lambda_by_differences(z[i].detach())));
  return torch::stack(rows);
}

// NormalNorm's λ̂ against a Newton step on the NLL by central differences (so the closed-form
// derivatives in op_normalnorm.cpp are checked by none of their own algebra), and its output
// in eval mode (no noise) against YJ(z; λ̂) with the direct formula.
TEST(NormReference, NormalNormIsYeoJohnsonAtTheNewtonStepLambda) {
  torch::manual_seed(12);
  const int64_t d = 2048;
  Normalizer norm = in_float64("normalnorm", d);
  norm->eval();
  // Rows of different skew: a Gaussian, a log-normal, and a negated exponential.
  const auto gaussian = torch::randn({d}, torch::kDouble);
  const auto rows = torch::stack({gaussian, gaussian.mul(0.5).exp(), torch::rand({d}, torch::kDouble).log()});
  const auto y = norm(rows);
  for (int64_t i = 0; i < rows.size(0); ++i) {
    const auto z = standardize_rows(rows[i], 1e-5);
    const double lambda = newton_lambda_by_differences(z);
    const auto expected = yeo_johnson_reference(z, lambda) * norm->weight + norm->bias;
    EXPECT_LE(max_abs_diff(y[i], expected), 1e-5) << "row " << i << ", lambda " << lambda;
    if (i > 0) {
      EXPECT_GT(std::abs(lambda - 1), 0.05) << "row " << i << ": a skewed row moves lambda";
    }
  }
}

// λ̂ held constant in backprop: the gradient is that of YJ(z(x); λ̂) with λ̂ a number.
TEST(NormReference, NormalNormGradientHoldsLambdaConstant) {
  torch::manual_seed(14);
  const int64_t d = 256;
  Normalizer norm = in_float64("normalnorm:noise=0", d);
  const auto x = torch::randn({3, d}, torch::kDouble).exp().requires_grad_(true);
  const auto r = torch::randn({3, d}, torch::kDouble);
  const auto grad = torch::autograd::grad({(norm(x) * r).sum()}, {x})[0];
  const auto expected = torch::autograd::grad({((normalnorm_reference(x) * norm->weight + norm->bias) * r).sum()}, {x})[0];
  EXPECT_LE(max_abs_diff(grad, expected), 1e-5 * expected.abs().max().item<double>());
}

// Training adds ξ·s·N(0,1) with s the group's mean absolute deviation; noise=0 is eval's output.
TEST(NormReference, NormalNormNoiseIsScaledByTheMeanAbsoluteDeviation) {
  torch::manual_seed(13);
  const auto x = torch::randn({4, 8192}, torch::kDouble).exp();
  Normalizer quiet = in_float64("normalnorm:noise=0:affine=false", 8192);
  Normalizer noisy = in_float64("normalnorm:noise=0.4:affine=false", 8192);
  const auto clean = quiet(x);
  const auto noise = noisy(x) - clean;
  const auto spread = (clean - clean.mean(1, true)).abs().mean(1);
  const auto ratio = noise.std(1) / (spread * 0.4);
  EXPECT_LE((ratio - 1).abs().max().item<double>(), 0.05);  // std of 8192 normals: ±1.6 % (2σ)
  EXPECT_LE(noise.mean(1).abs().max().item<double>(), 0.05);
}

// s is held constant in backprop: with the same noise draw, the gradient is that of
// YJ(z; λ̂) + ξ·s·ε with s (and λ̂) numbers.
TEST(NormReference, NormalNormNoiseScaleIsConstantInBackprop) {
  const int64_t d = 256;
  Normalizer norm = in_float64("normalnorm:noise=0.4:affine=false", d);
  torch::manual_seed(15);
  const auto x = torch::randn({2, d}, torch::kDouble).exp().requires_grad_(true);
  const auto r = torch::randn({2, d}, torch::kDouble);
  torch::manual_seed(16);
  const auto grad = torch::autograd::grad({(norm(x) * r).sum()}, {x})[0];
  const auto y = normalnorm_reference(x);
  const auto spread = (y.detach() - y.detach().mean(1, true)).abs().mean(1, true);
  torch::manual_seed(16);  // the layer's one random draw, again
  const auto noisy = y + torch::randn_like(y) * spread * 0.4;
  const auto expected = torch::autograd::grad({(noisy * r).sum()}, {x})[0];
  EXPECT_LE(max_abs_diff(grad, expected), 1e-5 * expected.abs().max().item<double>());
}

// On the batch area, training keeps running estimates of μ, σ² and λ̂, which eval uses: with
// momentum 1 they are this batch's, so eval reproduces training's output (noise 0) up to the
// unbiased variance's n/(n − 1).
TEST(NormReference, NormalNormOnTheBatchAreaKeepsRunningLambda) {
  torch::manual_seed(17);
  Normalizer norm = in_float64("normalnorm:area=batch:momentum=1:noise=0:affine=false", 3);
  const auto x = torch::randn({4096, 3}, torch::kDouble).mul(0.7).exp();
  const auto train_out = norm(x);
  const auto& running_lambda = norm->named_buffers()["running_yj_lambda"];
  EXPECT_GT((running_lambda - 1).abs().min().item<double>(), 0.05);  // skewed columns move λ̂
  norm->eval();
  EXPECT_LE(max_abs_diff(norm(x), train_out), 1e-3);
  // And the running λ̂ is the one a Newton step on each standardized column gives.
  const auto z = (x - x.mean(0)) / (x.var(0, false) + 1e-5).sqrt();
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_NEAR(running_lambda[c].item<double>(), newton_lambda_by_differences(z.select(1, c)), 1e-5) << "column " << c;
  }
}

TEST(NormReference, BatchAreaRunningStatsForIBNorm) {
  torch::manual_seed(8);
  Normalizer norm("ibnorm-t:lambda=2:area=batch:momentum=1", 6);
  const auto x = torch::randn({32, 6}).mul(3).add(2);
  const auto train_out = norm(x);
  // momentum=1: the running estimates are exactly this batch's (variances unbiased), so eval on
  // the same batch reproduces training output up to the n/(n-1) factor of the variances.
  const auto& buffers = norm->named_buffers();
  EXPECT_LE(max_abs_diff(buffers["running_mean"], x.mean(0)), 1e-5);
  EXPECT_LE(max_abs_diff(buffers["running_var"], x.var(0, /*unbiased=*/true)), 1e-4);
  ASSERT_TRUE(buffers.contains("running_mean_u"));
  ASSERT_TRUE(buffers.contains("running_var_u"));
  norm->eval();
  const auto eval_out = norm(x);
  EXPECT_LT(max_abs_diff(eval_out, train_out), 0.1);
  EXPECT_GT(max_abs_diff(eval_out, train_out), 1e-6);  // running variances are unbiased
}

}  // namespace
