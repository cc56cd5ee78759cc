// op=ibnorm (SPEC §1): z = (x − μ)/√(σ² + ε), u = ψ_λ(z), x̂ = (u − mean u)/√(var u + ε).
// Compression comes before the final standardization, the order the paper's ablation found best.
#include <memory>

#include "ibn/norm/compression.h"
#include "ibn/norm/operation.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

class IBNormOperation final : public Operation {
 public:
  IBNormOperation(const Compression& compression, double lambda, double eps)
      : compression_(compression), lambda_(lambda), eps_(eps) {}

  std::vector<RunningStat> running_stats() const override {
    return {{"mean", 0.0, false}, {"var", 1.0, true}, {"mean_u", 0.0, false}, {"var_u", 1.0, true}};
  }

  at::Tensor normalize(const at::Tensor& x, StatsContext& stats) const override {
    const at::Tensor z = standardize(x, stats, eps_);
    // λ = 0: ψ is the identity and z is already standardized, so a second standardization
    // would only apply ε once more. Skipping it makes λ = 0 exactly the variance-centric norm.
    if (lambda_ == 0.0) return z;
    return standardize(compress(z), stats, eps_, "_u");
  }

  at::Tensor compress(const at::Tensor& z) const override {
    return ibn::norm::compress(compression_, z, lambda_);
  }

  std::string formula() const override {
    return "z = (x − μ)/√(σ² + ε); u = ψ_λ(z), " + compression_.formula +
           "; x̂ = (u − mean u)/√(var u + ε)";
  }

 private:
  const Compression& compression_;
  double lambda_;
  double eps_;
};

}  // namespace

std::unique_ptr<Operation> make_ibnorm(const NormSpec& spec) {
  return std::make_unique<IBNormOperation>(find_compression(spec.compression), spec.lambda, spec.eps);
}

}  // namespace ibn::norm
