// op=rms: RMSNorm's operation, scale only, no centring.
#include <memory>

#include "ibn/norm/operation.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

class RootMeanSquare final : public Operation {
 public:
  explicit RootMeanSquare(double eps) : eps_(eps) {}
  std::vector<RunningStat> running_stats() const override { return {{"ms", 1.0, false}}; }
  at::Tensor normalize(const at::Tensor& x, StatsContext& stats) const override {
    const at::Tensor mean_square =
        stats.stat("ms", [&] { return stats.mean(x.square()); });
    return x.mul(mean_square.add(eps_).rsqrt());
  }
  std::string formula() const override { return "x̂ = x/√(mean(x²) + ε)"; }

 private:
  double eps_;
};

}  // namespace

std::unique_ptr<Operation> make_rms(const NormSpec& spec) {
  return std::make_unique<RootMeanSquare>(spec.eps);
}

}  // namespace ibn::norm
