// mine, infonce, smile: the neural estimators, differing only in the bound their critic
// maximises and reports (neural.h). One registry entry each.
#include <memory>

#include "ibn/mi/estimator.h"
#include "ibn/spec_string.h"
#include "neural.h"

namespace ibn::mi {
namespace {

template <neural::Bound kBound>
class NeuralEstimator final : public Estimator {
 public:
  NeuralEstimator(KeyValueSpec& kv, std::string name) : name_(std::move(name)), options_(neural::read_options(kv, kBound)) {}
  std::string spec() const override { return name_ + ":" + neural::options_str(options_, kBound); }
  Estimate estimate(const Variable& a, const Variable& b) const override {
    return neural::estimate(a, b, options_, kBound, spec());
  }

 private:
  std::string name_;
  neural::Options options_;
};

}  // namespace

EstimatorEntry mine_estimator() {
  return {"mine", "MINE: Donsker-Varadhan bound of a critic network, moving-average bias correction",
          neural::accepted_keys(neural::Bound::DonskerVaradhan), [](KeyValueSpec& kv) -> std::unique_ptr<Estimator> {
            return std::make_unique<NeuralEstimator<neural::Bound::DonskerVaradhan>>(kv, "mine");
          }};
}

EstimatorEntry infonce_estimator() {
  return {"infonce", "InfoNCE: contrastive bound, capped at log of the number of samples scored",
          neural::accepted_keys(neural::Bound::InfoNCE), [](KeyValueSpec& kv) -> std::unique_ptr<Estimator> {
            return std::make_unique<NeuralEstimator<neural::Bound::InfoNCE>>(kv, "infonce");
          }};
}

EstimatorEntry smile_estimator() {
  return {"smile", "SMILE: Donsker-Varadhan with the density ratio clipped to [e^-tau, e^tau]",
          neural::accepted_keys(neural::Bound::Smile), [](KeyValueSpec& kv) -> std::unique_ptr<Estimator> {
            return std::make_unique<NeuralEstimator<neural::Bound::Smile>>(kv, "smile");
          }};
}

}  // namespace ibn::mi
