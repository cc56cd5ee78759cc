// op=normalnorm: normality normalization (Eftekhari & Papyan, arXiv 2505.00685, ICML 2025),
// implemented from its description (SPEC §2):
//   z = (x − μ)/√(σ² + ε);
//   λ̂ = 1 − L′(1)/L″(1), one Newton step from 1 on the Gaussian negative log-likelihood of the
//       Yeo–Johnson transform of z in each group,
//       L(λ)/n = ½·log var(ψ(z; λ)) − (λ − 1)·mean(sign(z)·log(1 + |z|));
//   x̂ = ψ(z; λ̂), the Yeo–Johnson transform;
//   in training, x̂ + ξ·s·N(0, 1) with s = mean |x̂ − mean x̂| of the group, held constant.
// Where the description leaves freedom, this file chooses (and `ibn norms` says so):
//   - λ̂ is held constant in backprop, like s: gradients flow through z and ψ only;
//   - λ̂ falls back to 1 (ψ the identity) where L″(1) ≤ 0 or is not finite, and is clipped to
//     [0, 2], the range in which neither branch of ψ changes form;
//   - no second standardization after ψ (the description has none);
//   - ξ = `noise`, 0.4 by default;
//   - statistics per group of the area (token by default); on the batch area the running
//     estimates cover μ, σ² and λ̂ as BatchNorm's cover μ, σ².
//
// Derivatives at λ = 1, where ψ(z; 1) = z, with a = log(1 + |z|) (one form for both signs):
//   ∂ψ/∂λ = (1 + |z|)(a − 1) + 1,   ∂²ψ/∂λ² = sign(z)·((1 + |z|)(a² − 2a) + 2|z|),
// so, with v = var(z), c₁ = cov(z, ∂ψ/∂λ), c₂ = cov(z, ∂²ψ/∂λ²):
//   L′(1)/n = c₁/v − mean(sign(z)·a),   L″(1)/n = (var(∂ψ/∂λ) + c₂)/v − 2c₁²/v².
#include <memory>

#include <ATen/ops/ones_like.h>
#include <ATen/ops/randn_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <fmt/format.h>

#include "ibn/norm/operation.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

// Mean over the group's dims, kept for broadcasting.
at::Tensor group_mean(const at::Tensor& t, c10::IntArrayRef dims) { return t.mean(dims, true); }

at::Tensor group_cov(const at::Tensor& a, const at::Tensor& b, c10::IntArrayRef dims) {
  return group_mean(a.sub(group_mean(a, dims)).mul(b.sub(group_mean(b, dims))), dims);
}

class NormalNorm final : public Operation {
 public:
  NormalNorm(double eps, double noise) : eps_(eps), noise_(noise) {}

  std::vector<RunningStat> running_stats() const override {
    return {{"mean", 0.0, false}, {"var", 1.0, true}, {"yj_lambda", 1.0, false}};
  }

  at::Tensor normalize(const at::Tensor& x, StatsContext& stats) const override {
    const at::Tensor z = standardize(x, stats, eps_);
    const at::Tensor lambda = stats.stat("yj_lambda", [&] { return newton_lambda(z.detach(), stats.dims()); });
    at::Tensor y = yeo_johnson(z, lambda);
    if (stats.training() && noise_ > 0) {
      const at::Tensor spread = group_mean(y.detach().sub(group_mean(y.detach(), stats.dims())).abs(), stats.dims());
      y = y.add(at::randn_like(y).mul(spread).mul(noise_));
    }
    return y;
  }

  // κ: the variance of YJ(z; λ̂) per group, λ̂ from the batch's own z: the layer's own output
  // on batch statistics, which outside training adds no noise.
  at::Tensor compressed(const at::Tensor& x, StatsContext& batch_stats, double) const override {
    return normalize(x, batch_stats);
  }

  std::string formula() const override {
    return fmt::format("z = (x − μ)/√(σ² + ε); x̂ = YJ(z; λ̂) (Yeo–Johnson), λ̂ = one Newton step from 1 on the "
                       "Gaussian NLL per group (our choices: held constant in backprop, 1 where the NLL is not convex, "
                       "clipped to [0, 2], no second standardization); training adds ξ·s·N(0,1), s = mean|x̂ − mean x̂| "
                       "(held constant), ξ = {}", noise_);
  }

  // λ̂ per group, from the standardized z (no gradient).
  static at::Tensor newton_lambda(const at::Tensor& z, c10::IntArrayRef dims) {
    const at::Tensor magnitude = z.abs();
    const at::Tensor a = magnitude.log1p();
    const at::Tensor d1 = magnitude.add(1).mul(a.sub(1)).add(1);
    const at::Tensor d2 = z.sign().mul(magnitude.add(1).mul(a.square().sub(a.mul(2))).add(magnitude.mul(2)));
    const at::Tensor v = group_cov(z, z, dims);
    const at::Tensor c1 = group_cov(z, d1, dims);
    const at::Tensor c2 = group_cov(z, d2, dims);
    const at::Tensor first = c1.div(v).sub(group_mean(z.sign().mul(a), dims));
    const at::Tensor second = group_cov(d1, d1, dims).add(c2).div(v).sub(c1.square().mul(2).div(v.square()));
    const at::Tensor step = at::where(second.gt(0), first.div(second), at::zeros_like(first));
    const at::Tensor lambda = step.neg().add(1).clamp(0.0, 2.0);
    return at::where(lambda.isfinite(), lambda, at::ones_like(lambda));
  }

  // ψ(z; λ) of Yeo & Johnson, λ per group in [0, 2]: expm1 and log1p keep both branches exact
  // near their λ = 0 and λ = 2 limits, and each branch sees only its own sign of z (clamped), so
  // the unused branch never produces a NaN that `where` would pass on to the gradient.
  static at::Tensor yeo_johnson(const at::Tensor& z, const at::Tensor& lambda) {
    constexpr double kLimit = 1e-6;
    const at::Tensor up = z.clamp_min(0).log1p(), down = z.neg().clamp_min(0).log1p();
    const at::Tensor mu = lambda.neg().add(2);
    const at::Tensor safe_lambda = at::where(lambda.abs().lt(kLimit), at::ones_like(lambda), lambda);
    const at::Tensor safe_mu = at::where(mu.abs().lt(kLimit), at::ones_like(mu), mu);
    const at::Tensor positive = at::where(lambda.abs().lt(kLimit), up, up.mul(safe_lambda).expm1().div(safe_lambda));
    const at::Tensor negative = at::where(mu.abs().lt(kLimit), down, down.mul(safe_mu).expm1().div(safe_mu)).neg();
    return at::where(z.ge(0), positive, negative);
  }

 private:
  double eps_;
  double noise_;
};

}  // namespace

std::unique_ptr<Operation> make_normalnorm(const NormSpec& spec) { return std::make_unique<NormalNorm>(spec.eps, spec.noise); }

}  // namespace ibn::norm
