// IBNorm-L: ψ(z) = sign(z)·log(1 + λ|z|)/λ, dψ/dz = 1/(1 + λ|z|).
#include <ATen/ops/ones_like.h>

#include "ibn/norm/compression.h"

namespace ibn::norm {
namespace {

at::Tensor psi(const at::Tensor& z, double lambda) {
  if (lambda == 0.0) return z.clone();
  return z.abs().mul(lambda).log1p().div(lambda).mul(z.sign());
}

at::Tensor dpsi(const at::Tensor& z, double lambda) {
  if (lambda == 0.0) return at::ones_like(z);
  return z.abs().mul(lambda).add(1.0).reciprocal();
}

}  // namespace

Compression log_compression() {
  return {"l", "logarithmic", "ψ(z) = sign(z)·log(1 + λ|z|)/λ", psi, dpsi, KernelPsi::log};
}

}  // namespace ibn::norm
