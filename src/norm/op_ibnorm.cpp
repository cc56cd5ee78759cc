// op=ibnorm (SPEC §1): z = (x − μ)/√(σ² + ε), u = ψ_λ(z), x̂ = (u − mean u)/√(var u + ε).
// Compression comes before the final standardization, the order the paper's ablation found best
// (order=between). The ablation's other two orders are keys of the same operation:
//   order=first: u = ψ_λ(x − μ) on the unscaled centred input, x̂ = (u − mean u)/√(var u + ε);
//   order=last:  x̂ = ψ_λ(z), no second standardization (also the preset ln-tanh).
#include <memory>
#include <string>
#include <utility>

#include "ibn/norm/compression.h"
#include "ibn/norm/operation.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

class IBNormOperation final : public Operation {
 public:
  IBNormOperation(const Compression& compression, double lambda, double eps, std::string order)
      : compression_(compression), lambda_(lambda), eps_(eps), order_(std::move(order)) {}

  std::vector<RunningStat> running_stats() const override {
    const RunningStat mean{"mean", 0.0, false}, var{"var", 1.0, true};
    const RunningStat mean_u{"mean_u", 0.0, false}, var_u{"var_u", 1.0, true};
    if (order_ == "last") return {mean, var};
    return {mean, var, mean_u, var_u};  // order=first reads var only at λ = 0
  }

  at::Tensor normalize(const at::Tensor& x, StatsContext& stats) const override {
    // λ = 0: ψ is the identity, and every order is the variance-centric norm. A second
    // standardization would only apply ε once more, so it is skipped.
    if (lambda_ == 0.0) return standardize(x, stats, eps_);
    if (order_ == "first") {
      const at::Tensor mean = stats.stat("mean", [&] { return stats.mean(x); });
      return standardize(compress(x.sub(mean)), stats, eps_, "_u");
    }
    const at::Tensor z = standardize(x, stats, eps_);
    if (order_ == "last") return compress(z);
    return standardize(compress(z), stats, eps_, "_u");
  }

  at::Tensor compress(const at::Tensor& z) const override {
    return ibn::norm::compress(compression_, z, lambda_);
  }

  std::string formula() const override {
    if (order_ == "first") return "u = ψ_λ(x − μ), " + compression_.formula + "; x̂ = (u − mean u)/√(var u + ε)";
    if (order_ == "last") return "z = (x − μ)/√(σ² + ε); x̂ = ψ_λ(z), " + compression_.formula;
    return "z = (x − μ)/√(σ² + ε); u = ψ_λ(z), " + compression_.formula + "; x̂ = (u − mean u)/√(var u + ε)";
  }

 private:
  const Compression& compression_;
  double lambda_;
  double eps_;
  std::string order_;
};

}  // namespace

std::unique_ptr<Operation> make_ibnorm(const NormSpec& spec) {
  return std::make_unique<IBNormOperation>(find_compression(spec.compression), spec.lambda, spec.eps, spec.order);
}

}  // namespace ibn::norm
