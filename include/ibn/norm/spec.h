#pragma once
// A normalizer spec string (`ibnorm-t:lambda=2:area=batch`), parsed once into a typed struct.
//
// Grammar: NAME[:KEY=VALUE]...  NAME picks a preset from the registry (registry.h) that fixes
// the normalization operation and, for IBNorm, the compression; keys override the rest:
//   area=batch|token|group   which elements share statistics (SPEC §1, NAP)
//   groups=G                 number of channel groups, area=group only
//   lambda=L                 compression strength 0 ≤ λ ≤ kMaxLambda, IBNorm operations only
//   kappa=K                  IBNorm only, instead of lambda: the λ whose Gaussian variance
//                            contraction κ (gaussian_contraction) is K, 0 < K < 1
//   order=first|between|last IBNorm only: where ψ sits (the paper's order ablation):
//                            first: ψ(x − μ), then standardize; between (default):
//                            standardize, ψ, standardize; last: standardize, then ψ
//   alpha=A                  dyt only: the initial value of the learned scalar α, A > 0
//   noise=X                  normalnorm only: the noise factor ξ ≥ 0 of training
//   eps=E                    added to variances, E ≥ 0
//   affine=true|false        learnable per-channel γ, β
//   momentum=M               running-statistics momentum in [0, 1], area=batch only
//   fp8=e4m3|e5m2            FP8 output (fp8.h): y quantized once to OCP FP8 with a scale; the
//                            layer returns the dequantized tensor, gradients pass straight through
//   scaling=tensor|row       with fp8: one scale per tensor (default) or per row
#include <cstdint>
#include <string>

namespace ibn::norm {

// Beyond this λ every ψ_λ is numerically flat on float32 inputs (tanh(λz)/λ ~ 1e-4, and
// log(1 + λ|z|)/λ overflows as λ nears 1e308): outputs would be noise or NaN, not a stronger
// compression.
constexpr double kMaxLambda = 1e4;

struct NormSpec {
  std::string name;         // registry preset, e.g. "ibnorm-t"
  std::string area;         // "batch", "token" or "group"
  std::string operation;    // "standardize", "rms" or "ibnorm"
  std::string compression;  // IBNorm only: "s", "l" or "t"; empty otherwise
  int64_t groups = 32;
  double lambda = 1.0;
  double kappa = 0.0;            // > 0: lambda was chosen for this κ
  std::string order = "between";  // IBNorm only: first, between or last
  double alpha = 0.5;             // dyt only: α's initial value (DyT's α₀ for most models)
  double noise = 0.4;             // normalnorm only: ξ
  double eps = 1e-5;
  bool affine = true;
  double momentum = 0.1;
  std::string fp8;                 // "", "e4m3" or "e5m2"
  std::string scaling = "tensor";  // with fp8: "tensor" or "row"

  bool is_ibnorm() const { return operation == "ibnorm"; }
  bool is_dyt() const { return operation == "dyt"; }
  bool is_normalnorm() const { return operation == "normalnorm"; }
  bool has_fp8_output() const { return !fp8.empty(); }
  // Canonical text holding every resolved value, e.g. "ibnorm-t:area=token:lambda=2:eps=1e-05:
  // affine=true"; parse_norm_spec(s.str()) == s. Reports print it.
  std::string str() const;
};

bool operator==(const NormSpec& a, const NormSpec& b);

// Throws ibn::UsageError (one line: the offending part, the whole spec, what is accepted) for an
// unknown name or key, a repeated key, a missing or malformed value, or a value out of range.
NormSpec parse_norm_spec(const std::string& text);

}  // namespace ibn::norm
