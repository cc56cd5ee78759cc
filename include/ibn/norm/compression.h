#pragma once
// IBNorm's compression functions ψ_λ (SPEC §2): odd, monotone, ψ → identity as λ → 0.
// Each is one file (src/norm/compression_*.cpp) plus one line in src/norm/registry.cpp.
#include <string>

#include <ATen/core/Tensor.h>

namespace ibn::norm {

// Which ψ the fused CUDA kernels compute for a compression (src/norm/fused/norm_math.h). A
// compression that leaves it `none` runs on the ATen path everywhere; it can never fall through
// to another ψ in the kernels.
enum class KernelPsi { none, sign_power, log, tanh };

struct Compression {
  std::string name;     // spec suffix: "t" in ibnorm-t
  std::string label;    // "tanh"
  std::string formula;  // "ψ(z) = tanh(λz)/λ", printed in reports
  // ψ_λ(z) and its exact derivative dψ/dz, elementwise, as ATen ops on any device and dtype.
  // Both must be finite for every finite z and return the identity (derivative 1) at λ = 0.
  at::Tensor (*psi)(const at::Tensor& z, double lambda);
  at::Tensor (*dpsi)(const at::Tensor& z, double lambda);
  KernelPsi kernel = KernelPsi::none;
};

// ψ_λ(z) with gradient dψ/dz taken from `dpsi`, not from autograd through `psi`: autograd's
// derivative of sign(z)·f(|z|) is 0 at z = 0, while the true one is f'(0).
at::Tensor compress(const Compression& compression, const at::Tensor& z, double lambda);

}  // namespace ibn::norm
