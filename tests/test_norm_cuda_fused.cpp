// The fused CUDA path of the normalizer modules (IBN_FUSED_NORM=1) against the ATen path run on
// the same GPU: fp32 and double, forward and backward, every width tier, rows, λ and eps,
// non-contiguous inputs, constant rows (the same dy on both sides; ε = 0 is NaN on both);
// fp16/bf16 forward and backward within 2× ATen LayerNorm's own error against fp64 + 1e-3;
// running statistics; another GPU than the current one; bitwise-deterministic backward.
// Comparisons are NaN-aware. Skipped without a CUDA device.
#include <cstdlib>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/norm/normalizer.h"
#include "norm/fused/fused_function.h"
#include "require_gpu.h"
#include "test_util.h"

namespace {

using ibn::test::max_abs_diff;
using ibn::test::nan_aware_max_diff;

struct Outputs {
  torch::Tensor y, dx, dweight, dbias;
};

bool batch_area(const std::string& spec) { return spec.find("area=batch") != std::string::npos || spec == "batchnorm"; }


Outputs run(const std::string& spec, const torch::Tensor& x_in, const torch::Tensor& dy, bool fused,
            ibn::norm::Normalizer* keep = nullptr) {
  ::setenv("IBN_FUSED_NORM", fused ? "1" : "0", 1);
  // The batch area's channels: dimension 1, or the last of a 3-D [N, T, D] input.
  const int64_t features = batch_area(spec) ? x_in.size(x_in.dim() == 3 ? 2 : 1) : x_in.size(-1);
  ibn::norm::Normalizer norm(spec, features);
  norm->to(x_in.device(), x_in.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat);
  if (keep != nullptr) *keep = norm;
  {
    // γ, β drawn on the CPU in float, then converted: the same values whatever the dtype.
    torch::NoGradGuard no_grad;
    torch::manual_seed(11);
    if (norm->weight.defined()) norm->weight.copy_(torch::rand(norm->weight.sizes()) + 0.5);
    if (norm->bias.defined()) norm->bias.copy_(torch::randn(norm->bias.sizes()));
  }
  const auto x = x_in.detach().clone().requires_grad_(true);
  const int64_t launches_before = ibn::norm::fused::forward_calls();
  const auto y = norm(x);
  y.backward(dy);
  ::unsetenv("IBN_FUSED_NORM");
  // A fused run must have taken the fused path (not the ATen path compared with itself).
  if (fused) {
    EXPECT_EQ(ibn::norm::fused::forward_calls(), launches_before + 1) << spec << " did not take the fused path";
  }
  return {y.detach(), x.grad(), norm->weight.defined() ? norm->weight.grad() : torch::Tensor(),
          norm->bias.defined() ? norm->bias.grad() : torch::Tensor()};
}

// max(1, max |finite reference|): the scale errors are relative to.
double scale_of(const torch::Tensor& t) {
  const auto finite = t.to(torch::kDouble).masked_select(t.isfinite());
  return finite.numel() == 0 ? 1.0 : std::max(1.0, finite.abs().max().item<double>());
}

void expect_close(const Outputs& a, const Outputs& b, double tolerance, const std::string& where) {
  EXPECT_LT(nan_aware_max_diff(a.y, b.y) / scale_of(b.y), tolerance) << where;
  EXPECT_LT(nan_aware_max_diff(a.dx, b.dx) / scale_of(b.dx), tolerance * 10) << where;
  if (b.dweight.defined()) {
    EXPECT_LT(nan_aware_max_diff(a.dweight, b.dweight) / scale_of(b.dweight), tolerance * 10) << where;
    EXPECT_LT(nan_aware_max_diff(a.dbias, b.dbias) / scale_of(b.dbias), tolerance * 10) << where;
  }
}

TEST(FusedCuda, MatchesTheAtenPathOnTheGpu) {
  IBN_SKIP_WITHOUT_GPU(torch::cuda::is_available(), "no CUDA device");
  torch::manual_seed(3);
  const std::vector<std::string> specs = {"layernorm", "rmsnorm", "layernorm:eps=1", "layernorm:eps=0",
                                          "ibnorm-s:lambda=0", "ibnorm-s:lambda=0.5", "ibnorm-l:lambda=2",
                                          "ibnorm-t:lambda=0.5", "ibnorm-t:lambda=2"};
  for (const auto dtype : {torch::kDouble, torch::kFloat}) {
    const double tolerance = dtype == torch::kDouble ? 1e-10 : 1e-4;
    for (const std::string& spec : specs) {
      for (int64_t D : {1, 33, 132, 260, 1025, 4096, 8192, 9000, 16411, 65536}) {
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
      for (int64_t D : {132, 4096, 20000}) {
        const auto constant = torch::full({7, D}, 2.5, opts);
        const auto dy = torch::randn_like(constant);  // one dy for both paths
        expect_close(run(spec, constant, dy, true), run(spec, constant, dy, false), tolerance,
                     spec + " constant rows D=" + std::to_string(D));
      }
    }
    for (const std::string spec : {"batchnorm", "ibnorm-t:lambda=0.5:area=batch", "ibnorm-l:lambda=2:area=batch",
                                   "ibnorm-s:lambda=1:area=batch"}) {
      const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
      for (const auto& shape : std::vector<std::vector<int64_t>>{{32, 16, 7, 7}, {4096, 70}, {2, 3, 56, 56}, {64, 9, 1000}}) {
        const auto x = torch::randn(shape, opts);
        const auto dy = torch::randn_like(x);
        expect_close(run(spec, x, dy, true), run(spec, x, dy, false), tolerance, spec + " " + c10::str(x.sizes()));
      }
    }
  }
}

// Half precision, forward and backward: the fused error against the fp64 reference (the ATen
// path in double on the same values) is at most twice ATen's own error in that dtype (its
// LayerNorm, or RMSNorm composed of ATen ops), plus 1e-3, for y, dx, dγ and dβ.
TEST(FusedCuda, HalfPrecisionForwardAndBackwardWithinTwiceAten) {
  IBN_SKIP_WITHOUT_GPU(torch::cuda::is_available(), "no CUDA device");
  torch::manual_seed(7);
  for (const auto dtype : {torch::kHalf, torch::kBFloat16}) {
    for (const std::string spec : {"layernorm", "rmsnorm", "ibnorm-t:lambda=1", "ibnorm-s:lambda=0.5", "ibnorm-l:lambda=2"}) {
      for (int64_t D : {96, 1024, 4096, 20000}) {
        const auto x = torch::randn({512, D}, torch::TensorOptions().device(torch::kCUDA).dtype(dtype));
        const auto dy = torch::randn_like(x);
        const Outputs reference = run(spec, x.to(torch::kDouble), dy.to(torch::kDouble), false);
        const Outputs fused = run(spec, x, dy, true);
        // ATen's own error in this dtype, on a plain LayerNorm (or RMSNorm) of the same values.
        const bool rms = spec == "rmsnorm";
        const auto aten_in = x.detach().clone().requires_grad_(true);
        const auto aten_in64 = x.to(torch::kDouble).requires_grad_(true);
        const auto norm_of = [&](const torch::Tensor& v) {
          return rms ? v * (v.square().mean(-1, true) + 1e-5).rsqrt() : torch::layer_norm(v, {D});
        };
        norm_of(aten_in).backward(dy);
        const auto aten_y = norm_of(aten_in.detach());
        norm_of(aten_in64).backward(dy.to(torch::kDouble));
        const auto aten_y64 = norm_of(aten_in64.detach());
        const double y_bound = 2 * nan_aware_max_diff(aten_y, aten_y64) / scale_of(aten_y64) + 1e-3;
        const double dx_bound = 2 * nan_aware_max_diff(aten_in.grad(), aten_in64.grad()) / scale_of(aten_in64.grad()) + 1e-3;
        const std::string where = spec + " " + c10::toString(dtype) + " D=" + std::to_string(D);
        EXPECT_LT(nan_aware_max_diff(fused.y, reference.y) / scale_of(reference.y), y_bound) << where;
        EXPECT_LT(nan_aware_max_diff(fused.dx, reference.dx) / scale_of(reference.dx), dx_bound) << where;
        EXPECT_LT(nan_aware_max_diff(fused.dweight, reference.dweight) / scale_of(reference.dweight), 1e-3) << where;
        EXPECT_LT(nan_aware_max_diff(fused.dbias, reference.dbias) / scale_of(reference.dbias), 1e-3) << where;
      }
    }
  }
}

// The batch area's running statistics: the same as the ATen path's, also when σ² is far below ε
// (the saved σ² is used; one rebuilt as r⁻² − ε from r = 1/√(σ² + ε) in float is off by about
// 1e-4 of σ² here). momentum = 1 makes the running value the batch value, so nothing hides the
// error. At λ = 0 the statistics of u are left alone, as the ATen path leaves them.
TEST(FusedCuda, RunningStatisticsMatchTheAtenPath) {
  IBN_SKIP_WITHOUT_GPU(torch::cuda::is_available(), "no CUDA device");
  const auto x = torch::randn({64, 8, 5, 5}, torch::TensorOptions().device(torch::kCUDA)) * 1e-4;  // σ² ≈ 1e-8 ≪ ε
  for (const std::string spec : {"batchnorm:momentum=1", "ibnorm-t:lambda=1:area=batch:momentum=1",
                                 "ibnorm-t:lambda=0:area=batch:momentum=1"}) {
    ibn::norm::Normalizer fused_norm(nullptr), aten_norm(nullptr);
    run(spec, x, torch::ones_like(x), true, &fused_norm);
    run(spec, x, torch::ones_like(x), false, &aten_norm);
    const auto fused_buffers = fused_norm->named_buffers(), aten_buffers = aten_norm->named_buffers();
    ASSERT_EQ(fused_buffers.size(), aten_buffers.size()) << spec;
    for (const auto& item : aten_buffers) {
      const auto& fused_value = fused_buffers[item.key()];
      const double size = std::max(item.value().abs().max().item<double>(), 1e-30);  // running_mean_u may be 0
      const double relative = nan_aware_max_diff(fused_value, item.value()) / size;
      EXPECT_LT(relative, 1e-5) << spec << " " << item.key();
    }
  }
}

// The fused backward is not differentiable: create_graph is refused, not answered without a graph.
TEST(FusedCuda, DoubleBackwardIsRefused) {
  IBN_SKIP_WITHOUT_GPU(torch::cuda::is_available(), "no CUDA device");
  ::setenv("IBN_FUSED_NORM", "1", 1);
  ibn::norm::Normalizer norm("ibnorm-t:lambda=1", 64);
  norm->to(torch::kCUDA);
  const auto x = torch::randn({8, 64}, torch::TensorOptions().device(torch::kCUDA)).requires_grad_(true);
  const auto y = norm(x).square().sum();
  EXPECT_THROW(torch::autograd::grad({y}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true), std::exception);
  ::unsetenv("IBN_FUSED_NORM");
}

// Inputs on a GPU other than the current one run there (the kernels launch under a device guard).
TEST(FusedCuda, RunsOnTheInputsDevice) {
  if (!torch::cuda::is_available() || torch::cuda::device_count() < 2) GTEST_SKIP() << "needs two CUDA devices";
  const auto x = torch::randn({33, 260}, torch::TensorOptions().device(torch::Device(torch::kCUDA, 1)));
  const auto dy = torch::randn_like(x);
  const Outputs fused = run("ibnorm-t:lambda=1", x, dy, true);
  EXPECT_EQ(fused.y.device(), x.device());
  expect_close(fused, run("ibnorm-t:lambda=1", x, dy, false), 1e-4, "cuda:1");
}

TEST(FusedCuda, BackwardIsBitwiseDeterministic) {
  IBN_SKIP_WITHOUT_GPU(torch::cuda::is_available(), "no CUDA device");
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

// The fused FP8 output stage (issue 17) against the ATen path's FP8 output on the same GPU: the
// scales to float rounding, the bytes equal but where the two paths' y differ by rounding across
// a code boundary (one code, rarely), and the gradient straight through to the same dx.
TEST(FusedCuda, Fp8OutputMatchesTheAtenPath) {
  IBN_SKIP_WITHOUT_GPU(torch::cuda::is_available(), "no CUDA device");
  torch::manual_seed(4);
  const auto x = torch::randn({257, 1025}, torch::TensorOptions().device(torch::kCUDA)) * 3 + 1;
  const auto dy = torch::randn_like(x);
  for (const std::string spec : {"layernorm", "rmsnorm", "ibnorm-t:lambda=2", "ibnorm-s:lambda=0.5:area=batch"}) {
    for (const char* scaling : {"tensor", "row"}) {
      const std::string full = spec + ":fp8=e4m3:scaling=" + scaling;
      const Outputs fused = run(full, x, dy, true), aten = run(full, x, dy, false);
      const auto codes_apart = (fused.y - aten.y).abs() > 1e-3 * (aten.y.abs() + 1e-6);
      EXPECT_LE(codes_apart.sum().item<int64_t>(), x.numel() / 1000 + 1) << full;
      EXPECT_LT(max_abs_diff(fused.dx, aten.dx), 1e-3 * scale_of(aten.dx)) << full;
      ibn::norm::Normalizer norm(full, 1025);
      norm->to(torch::kCUDA);
      ::setenv("IBN_FUSED_NORM", "1", 1);
      const auto q_fused = norm->forward_fp8(x, norm->fp8_output());
      ::setenv("IBN_FUSED_NORM", "0", 1);
      const auto q_aten = norm->forward_fp8(x, norm->fp8_output());
      ::unsetenv("IBN_FUSED_NORM");
      EXPECT_EQ(q_fused.scale.sizes(), q_aten.scale.sizes()) << full;
      EXPECT_LT(max_abs_diff(q_fused.scale, q_aten.scale), 1e-5 * q_aten.scale.abs().max().item<double>()) << full;
      const auto differ = q_fused.bytes.ne(q_aten.bytes);
      EXPECT_LE(differ.sum().item<int64_t>(), x.numel() / 1000 + 1) << full;
    }
  }
}

TEST(FusedCuda, OffWithoutTheSwitch) {
  ::unsetenv("IBN_FUSED_NORM");
  EXPECT_FALSE(ibn::norm::fused::enabled());
}

}  // namespace
