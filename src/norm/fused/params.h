#pragma once
// The fused kernels' parameters from a normalizer spec; empty for what they do not cover (the
// group area, other operations, and compressions whose registry entry names no kernel ψ), which
// stay on the ATen path.
#include <optional>

#include "ibn/norm/compression.h"
#include "ibn/norm/registry.h"
#include "ibn/norm/spec.h"
#include "norm/fused/norm_math.h"

namespace ibn::norm::fused {

// The kernels' ψ for a compression's registry entry, or nothing.
inline std::optional<Psi> kernel_psi(const Compression& compression) {
  switch (compression.kernel) {
    case KernelPsi::none: return std::nullopt;
    case KernelPsi::sign_power: return Psi::sign_power;
    case KernelPsi::log: return Psi::log;
    case KernelPsi::tanh: return Psi::tanh;
  }
  return std::nullopt;
}

inline std::optional<Params> params_of(const NormSpec& spec) {
  if (spec.area != "token" && spec.area != "batch") return std::nullopt;
  Params p;
  p.eps = spec.eps;
  p.affine = spec.affine;
  if (spec.operation == "standardize") {
    p.op = Op::standardize;
  } else if (spec.operation == "rms") {
    if (spec.area == "batch") return std::nullopt;  // keeps running estimates of its own: ATen path
    p.op = Op::rms;
  } else if (spec.operation == "ibnorm" && spec.order == "between") {  // the kernels' one order
    const std::optional<Psi> psi = kernel_psi(find_compression(spec.compression));
    if (!psi) return std::nullopt;
    p.op = Op::ibnorm;
    p.lambda = spec.lambda;
    p.psi = *psi;
  } else {
    return std::nullopt;
  }
  return p;
}

}  // namespace ibn::norm::fused
