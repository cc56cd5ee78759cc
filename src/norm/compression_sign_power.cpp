// IBNorm-S: ψ(z) = sign(z)·((|z| + δ)^p − δ^p), p = 1/(1 + λ).
// δ keeps dψ/dz = p·(|z| + δ)^(p−1) finite at z = 0; z is unit-scale, so δ needs no tuning.
#include <cmath>

#include <ATen/ops/ones_like.h>

#include "ibn/norm/compression.h"
#include "norm/fused/norm_math.h"

namespace ibn::norm {
namespace {

constexpr double kDelta = fused::kSignPowerDelta;  // the fused kernels use the same δ

double power(double lambda) { return 1.0 / (1.0 + lambda); }

at::Tensor psi(const at::Tensor& z, double lambda) {
  if (lambda == 0.0) return z.clone();
  const double p = power(lambda);
  return z.abs().add(kDelta).pow(p).sub(std::pow(kDelta, p)).mul(z.sign());
}

at::Tensor dpsi(const at::Tensor& z, double lambda) {
  if (lambda == 0.0) return at::ones_like(z);
  const double p = power(lambda);
  return z.abs().add(kDelta).pow(p - 1.0).mul(p);
}

}  // namespace

Compression sign_power_compression() {
  return {"s", "sign-power", "ψ(z) = sign(z)·((|z|+δ)^p − δ^p), p = 1/(1+λ), δ = 1e-3", psi, dpsi, KernelPsi::sign_power};
}

}  // namespace ibn::norm
