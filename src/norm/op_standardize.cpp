// op=standardize: the variance-centric operation of BatchNorm, LayerNorm and GroupNorm.
#include <memory>

#include "ibn/norm/operation.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

class Standardize final : public Operation {
 public:
  explicit Standardize(double eps) : eps_(eps) {}
  std::vector<RunningStat> running_stats() const override {
    return {{"mean", 0.0, false}, {"var", 1.0, true}};
  }
  at::Tensor normalize(const at::Tensor& x, StatsContext& stats) const override {
    return standardize(x, stats, eps_);
  }
  std::string formula() const override { return "x̂ = (x − μ)/√(σ² + ε)"; }

 private:
  double eps_;
};

}  // namespace

std::unique_ptr<Operation> make_standardize(const NormSpec& spec) {
  return std::make_unique<Standardize>(spec.eps);
}

}  // namespace ibn::norm
