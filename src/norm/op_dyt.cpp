// op=dyt: Dynamic Tanh (Zhu et al. 2025, "Transformers without Normalization"),
// x̂ = tanh(α·x) with one learned scalar α per layer (initial value `alpha`, 0.5 by default as in
// the paper for most models), then the layer's γ, β. No statistics: it is the control that
// keeps a bounded, tanh-shaped map and drops standardization altogether.
#include <memory>

#include <ATen/ops/full.h>
#include <fmt/format.h>

#include "ibn/norm/operation.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

class DynamicTanh final : public Operation {
 public:
  explicit DynamicTanh(double alpha) : alpha_(at::full({}, alpha)) {}

  std::vector<RunningStat> running_stats() const override { return {}; }
  std::vector<std::pair<std::string, at::Tensor>> parameters() const override { return {{"alpha", alpha_}}; }
  void use_parameter(const std::string& name, const at::Tensor& value) override {
    if (name != "alpha") return Operation::use_parameter(name, value);
    alpha_ = value;
  }

  at::Tensor normalize(const at::Tensor& x, StatsContext&) const override { return x.mul(alpha_).tanh(); }

  // DyT never standardizes: κ is the per-group variance of tanh(α·x) itself, at the current α.
  at::Tensor compressed(const at::Tensor& x, StatsContext& stats, double) const override { return normalize(x, stats); }

  std::string formula() const override { return "x̂ = tanh(α·x), α learned (one scalar)"; }

 private:
  at::Tensor alpha_;  // registered by the layer as its parameter "alpha"
};

}  // namespace

std::unique_ptr<Operation> make_dyt(const NormSpec& spec) { return std::make_unique<DynamicTanh>(spec.alpha); }

}  // namespace ibn::norm
