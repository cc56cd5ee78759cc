// The fused CUDA path of the normalizer modules (IBN_FUSED_NORM=1) against the ATen path run on
// the same GPU: fp32 and double, forward and backward, the widths, rows, λ and eps,
// non-contiguous inputs, constant rows; fp16/bf16 within 2× ATen LayerNorm's own error + 1e-3;
// bitwise-deterministic backward. Skipped without a CUDA device.
#include <cstdlib>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/norm/normalizer.h"
#include "norm/fused/fused_function.h"
#include "test_util.h"

namespace {

using ibn::test::max_abs_diff;

struct Outputs {
  torch::Tensor y, dx, dweight, dbias;
};

Outputs run(const std::string& spec, const torch::Tensor& x_in, const torch::Tensor& dy, bool fused) {
  ::setenv("IBN_FUSED_NORM", fused ? "1" : "0", 1);
  const int64_t features = spec.find("area=batch") != std::string::npos || spec == "batchnorm" ? x_in.size(1) : x_in.size(-1);
  ibn::norm::Normalizer norm(spec, features);
  norm->to(x_in.device(), x_in.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat);
  {
    torch::NoGradGuard no_grad;
    torch::manual_seed(11);
    if (norm->weight.defined()) norm->weight.copy_(torch::rand_like(norm->weight) + 0.5);
    if (norm->bias.defined()) norm->bias.copy_(torch::randn_like(norm->bias));
  }
  const auto x = x_in.detach().clone().requires_grad_(true);
  const auto y = norm(x);
  y.backward(dy);
  ::unsetenv("IBN_FUSED_NORM");
  return {y.detach(), x.grad(), norm->weight.defined() ? norm->weight.grad() : torch::Tensor(),
          norm->bias.defined() ? norm->bias.grad() : torch::Tensor()};
}

void expect_close(const Outputs& a, const Outputs& b, double tolerance, const std::string& where) {
  const double scale = std::max(1.0, b.y.abs().max().item<double>());
  EXPECT_LT(max_abs_diff(a.y, b.y) / scale, tolerance) << where;
  EXPECT_LT(max_abs_diff(a.dx, b.dx) / std::max(1.0, b.dx.abs().max().item<double>()), tolerance * 10) << where;
  if (b.dweight.defined()) {
    EXPECT_LT(max_abs_diff(a.dweight, b.dweight) / std::max(1.0, b.dweight.abs().max().item<double>()), tolerance * 10) << where;
    EXPECT_LT(max_abs_diff(a.dbias, b.dbias) / std::max(1.0, b.dbias.abs().max().item<double>()), tolerance * 10) << where;
  }
}

TEST(FusedCuda, MatchesTheAtenPathOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(3);
  const std::vector<std::string> specs = {"layernorm", "rmsnorm", "layernorm:eps=1", "layernorm:eps=0",
                                          "ibnorm-s:lambda=0", "ibnorm-s:lambda=0.5", "ibnorm-l:lambda=2",
                                          "ibnorm-t:lambda=0.5", "ibnorm-t:lambda=2"};
  for (const auto dtype : {torch::kDouble, torch::kFloat}) {
    const double tolerance = dtype == torch::kDouble ? 1e-10 : 1e-4;
    for (const std::string& spec : specs) {
      for (int64_t D : {1, 33, 132, 260, 1025, 4096, 8192}) {
        for (int64_t rows : {1, 7, 65536}) {
          if (rows * D > (1 << 26)) continue;
          const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
          const auto x = torch::randn({rows, D}, opts) * 3 + 1;
          const auto dy = torch::randn({rows, D}, opts);
          expect_close(run(spec, x, dy, true), run(spec, x, dy, false), tolerance,
                       spec + " rows=" + std::to_string(rows) + " D=" + std::to_string(D));
        }
      }
      // Non-contiguous input (a transposed view) and constant rows.
      const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
      const auto t = torch::randn({260, 33}, opts).t();
      expect_close(run(spec, t, torch::ones_like(t), true), run(spec, t, torch::ones_like(t), false), tolerance, spec + " transposed");
      const auto constant = torch::full({7, 132}, 2.5, opts);
      expect_close(run(spec, constant, torch::randn_like(constant), true), run(spec, constant, torch::randn_like(constant), false),
                   tolerance, spec + " constant rows");
    }
    for (const std::string spec : {"batchnorm", "ibnorm-t:lambda=0.5:area=batch", "ibnorm-l:lambda=2:area=batch"}) {
      const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
      const auto x = torch::randn({32, 16, 7, 7}, opts);
      const auto dy = torch::randn_like(x);
      expect_close(run(spec, x, dy, true), run(spec, x, dy, false), tolerance, spec + " [32,16,7,7]");
    }
  }
}

// Half precision: the fused error against the fp64 reference is at most twice ATen's
// LayerNorm (or RMSNorm) error in the same dtype, plus 1e-3.
TEST(FusedCuda, HalfPrecisionWithinTwiceAten) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const auto dtype : {torch::kHalf, torch::kBFloat16}) {
    for (const std::string spec : {"layernorm", "rmsnorm", "ibnorm-t:lambda=1"}) {
      const auto x64 = torch::randn({4096, 1024}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kDouble));
      const auto reference = run(spec, x64, torch::ones_like(x64), false).y;
      const auto x = x64.to(dtype);
      const auto ours = run(spec, x, torch::ones_like(x), true).y.to(torch::kDouble);
      const auto aten = spec == "rmsnorm" ? (x.to(torch::kFloat) * (x.to(torch::kFloat).square().mean(-1, true) + 1e-5).rsqrt()).to(dtype)
                                          : torch::layer_norm(x, {1024}).to(dtype);
      const auto aten_reference = spec == "rmsnorm" ? x64 * (x64.square().mean(-1, true) + 1e-5).rsqrt()
                                                    : torch::layer_norm(x64, {1024});
      const double aten_error = max_abs_diff(aten.to(torch::kDouble), aten_reference);
      // Our reference has γ, β from the seeded module; compare the normalized part's error scale.
      EXPECT_LT(max_abs_diff(ours, reference), 2 * aten_error * std::max(1.0, reference.abs().max().item<double>()) + 1e-3)
          << spec << " " << c10::toString(dtype);
    }
  }
}

TEST(FusedCuda, BackwardIsBitwiseDeterministic) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto x = torch::randn({65536, 1024}, torch::TensorOptions().device(torch::kCUDA));
  const auto dy = torch::randn_like(x);
  for (const std::string spec : {"layernorm", "ibnorm-t:lambda=1", "ibnorm-s:lambda=0.5:area=batch"}) {
    const auto input = spec.find("batch") != std::string::npos ? x.view({256, 256, 1024}).select(2, 0).contiguous() : x;
    const auto grad = spec.find("batch") != std::string::npos ? dy.view({256, 256, 1024}).select(2, 0).contiguous() : dy;
    const Outputs a = run(spec, input, grad, true), b = run(spec, input, grad, true);
    EXPECT_TRUE(torch::equal(a.dx, b.dx)) << spec;
    EXPECT_TRUE(torch::equal(a.dweight, b.dweight)) << spec;
    EXPECT_TRUE(torch::equal(a.dbias, b.dbias)) << spec;
  }
}

TEST(FusedCuda, OffWithoutTheSwitch) {
  ::unsetenv("IBN_FUSED_NORM");
  EXPECT_FALSE(ibn::norm::fused::enabled());
}

}  // namespace
