// IBNorm-T: ψ(z) = tanh(λz)/λ, bounded by 1/λ; dψ/dz = 1 − tanh²(λz).
#include <ATen/ops/ones_like.h>

#include "ibn/norm/compression.h"

namespace ibn::norm {
namespace {

at::Tensor psi(const at::Tensor& z, double lambda) {
  if (lambda == 0.0) return z.clone();
  return z.mul(lambda).tanh().div(lambda);
}

at::Tensor dpsi(const at::Tensor& z, double lambda) {
  if (lambda == 0.0) return at::ones_like(z);
  return z.mul(lambda).tanh().square().neg().add(1.0);
}

}  // namespace

Compression tanh_compression() { return {"t", "tanh", "ψ(z) = tanh(λz)/λ", psi, dpsi, KernelPsi::tanh}; }

}  // namespace ibn::norm
