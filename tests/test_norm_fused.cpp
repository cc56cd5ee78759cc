// The fused kernels' arithmetic (src/norm/fused/norm_math.h), run on the CPU as plain loops
// over groups, against LibTorch's autograd of the ATen normalizers: forward, dx, dγ, dβ in
// double for every operation and compression on the token and batch areas. The CUDA kernels
// do these sums with block reductions and are compared with this reference on the GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/norm/normalizer.h"
#include "norm/fused/params.h"
#include "test_util.h"

namespace {

using ibn::test::max_abs_diff;
namespace fused = ibn::norm::fused;

struct Result {
  torch::Tensor y, dx, dgamma, dbeta;
};

// Runs the reference over every group of x: [rows, D] for the token area, [N, C, H, W] for batch.
Result reference(const fused::Params& p, bool batch_area, const torch::Tensor& x, const torch::Tensor& gamma,
                 const torch::Tensor& beta, const torch::Tensor& dy) {
  Result r{torch::empty_like(x), torch::empty_like(x), torch::zeros_like(gamma), torch::zeros_like(beta)};
  const double* xs = x.data_ptr<double>();
  const double* dys = dy.data_ptr<double>();
  const auto run = [&](const auto& group) {
    const auto stats = fused::group_forward<double>(p, xs, r.y.data_ptr<double>(), group, gamma.data_ptr<double>(),
                                                    beta.data_ptr<double>());
    fused::group_backward<double>(p, xs, dys, r.dx.data_ptr<double>(), group, gamma.data_ptr<double>(), stats,
                                  r.dgamma.data_ptr<double>(), r.dbeta.data_ptr<double>());
  };
  if (batch_area) {
    const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C);
    for (int64_t c = 0; c < C; ++c) run(fused::ChannelGroup{N, C, HW, c});
  } else {
    for (int64_t row = 0; row < x.size(0); ++row) run(fused::TokenGroup{x.size(1), row});
  }
  return r;
}

TEST(FusedNormMath, MatchesTheAtenPathForwardAndBackward) {
  torch::manual_seed(5);
  const std::vector<std::string> specs = {"layernorm", "rmsnorm", "batchnorm", "layernorm:eps=0.5",
                                          "ibnorm-s:lambda=0", "ibnorm-s:lambda=0.5", "ibnorm-l:lambda=2",
                                          "ibnorm-t:lambda=0.5", "ibnorm-t:lambda=2", "ibnorm-t:lambda=2:area=batch",
                                          "ibnorm-l:lambda=0.5:area=batch", "ibnorm-s:lambda=2:area=batch",
                                          "ibnorm-t:lambda=1:affine=false"};
  for (const std::string& spec : specs) {
    const ibn::norm::NormSpec parsed = ibn::norm::parse_norm_spec(spec);
    const auto params = fused::params_of(parsed);
    ASSERT_TRUE(params.has_value()) << spec;
    const bool batch_area = parsed.area == "batch";
    for (const auto& shape : batch_area ? std::vector<std::vector<int64_t>>{{6, 5, 3, 4}, {9, 1, 1, 1}}
                                        : std::vector<std::vector<int64_t>>{{7, 33}, {3, 1}, {2, 260}}) {
      const int64_t features = shape[1];
      const auto x = (torch::randn(shape, torch::kDouble) * 2 + 0.5).requires_grad_(true);
      ibn::norm::Normalizer norm(spec, features);
      norm->to(torch::kDouble);
      if (parsed.affine) {
        torch::NoGradGuard no_grad;
        norm->weight.copy_(torch::rand({features}, torch::kDouble) + 0.5);
        norm->bias.copy_(torch::randn({features}, torch::kDouble));
      }
      const auto dy = torch::randn(shape, torch::kDouble);
      const auto y = norm(x);
      y.backward(dy);
      const auto gamma = parsed.affine ? norm->weight.detach() : torch::ones({features}, torch::kDouble);
      const auto beta = parsed.affine ? norm->bias.detach() : torch::zeros({features}, torch::kDouble);
      const Result r = reference(*params, batch_area, x.detach().contiguous(), gamma, beta, dy);
      const std::string where = spec + " " + std::to_string(shape[0]) + "x" + std::to_string(shape[1]);
      EXPECT_LT(max_abs_diff(r.y, y.detach()), 1e-10) << where;
      EXPECT_LT(max_abs_diff(r.dx, x.grad()), 1e-9) << where;
      if (parsed.affine) {
        EXPECT_LT(max_abs_diff(r.dgamma, norm->weight.grad()), 1e-9) << where;
        EXPECT_LT(max_abs_diff(r.dbeta, norm->bias.grad()), 1e-9) << where;
      }
    }
  }
}

TEST(FusedNormMath, GroupAreaIsLeftToAten) {
  EXPECT_FALSE(fused::params_of(ibn::norm::parse_norm_spec("groupnorm")).has_value());
  const auto p = fused::params_of(ibn::norm::parse_norm_spec("ibnorm-t:lambda=0"));
  ASSERT_TRUE(p.has_value());
  EXPECT_FALSE(p->compresses());  // λ = 0 is exactly LayerNorm
}

}  // namespace

namespace {

// The kernels' ψ for each registered compression is that compression: norm_math.h's ψ and ψ′
// against the registry's ATen ψ and ψ′ on a grid of z, for several λ. A compression without a
// kernel ψ stays on the ATen path instead of falling through to another ψ.
TEST(FusedNormMath, KernelPsiOfEveryCompressionIsThatCompression) {
  const auto z = torch::linspace(-6, 6, 241, torch::kDouble);
  int with_kernel = 0;
  for (const ibn::norm::Compression& compression : ibn::norm::compressions()) {
    const std::optional<fused::Psi> psi = fused::kernel_psi(compression);
    if (!psi) continue;
    ++with_kernel;
    for (double lambda : {0.3, 1.0, 4.0}) {
      fused::Params p;
      p.op = fused::Op::ibnorm, p.psi = *psi, p.lambda = lambda;
      const auto expected = compression.psi(z, lambda), expected_slope = compression.dpsi(z, lambda);
      for (int64_t i = 0; i < z.size(0); ++i) {
        const double zi = z[i].item<double>();
        EXPECT_NEAR(fused::psi(p, zi), expected[i].item<double>(), 1e-12) << compression.label << " λ=" << lambda << " z=" << zi;
        EXPECT_NEAR(fused::dpsi(p, zi), expected_slope[i].item<double>(), 1e-12) << compression.label << " λ=" << lambda << " z=" << zi;
      }
    }
    const auto spec = ibn::norm::parse_norm_spec("ibnorm-" + compression.name + ":lambda=0.5");
    const auto params = fused::params_of(spec);
    ASSERT_TRUE(params.has_value()) << compression.label;
    EXPECT_EQ(params->psi, *psi);
  }
  EXPECT_EQ(with_kernel, 3);  // s, l, t
  const ibn::norm::Compression no_kernel{"x", "test", "ψ(z) = z", nullptr, nullptr};
  EXPECT_FALSE(fused::kernel_psi(no_kernel).has_value());
}

}  // namespace
