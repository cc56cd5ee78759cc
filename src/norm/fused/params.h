#pragma once
// The fused kernels' parameters from a normalizer spec; empty for what they do not cover
// (the group area, which stays on the ATen path).
#include <optional>

#include "ibn/norm/spec.h"
#include "norm/fused/norm_math.h"

namespace ibn::norm::fused {

inline std::optional<Params> params_of(const NormSpec& spec) {
  if (spec.area != "token" && spec.area != "batch") return std::nullopt;
  Params p;
  p.eps = spec.eps;
  p.affine = spec.affine;
  if (spec.operation == "standardize") {
    p.op = Op::standardize;
  } else if (spec.operation == "rms") {
    p.op = Op::rms;
  } else if (spec.operation == "ibnorm") {
    p.op = Op::ibnorm;
    p.lambda = spec.lambda;
    if (spec.compression == "s") p.psi = Psi::sign_power;
    if (spec.compression == "l") p.psi = Psi::log;
    if (spec.compression == "t") p.psi = Psi::tanh;
  } else {
    return std::nullopt;
  }
  return p;
}

}  // namespace ibn::norm::fused
