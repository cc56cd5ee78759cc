// Every MI estimator, one line each; each is defined in its own file in estimators/.
#include "ibn/mi/estimator.h"

namespace ibn::mi {

EstimatorEntry binning_estimator();
EstimatorEntry kde_estimator();
EstimatorEntry ksg_estimator();
EstimatorEntry mine_estimator();
EstimatorEntry infonce_estimator();
EstimatorEntry smile_estimator();

const std::vector<EstimatorEntry>& estimator_registry() {
  static const std::vector<EstimatorEntry> entries{
      binning_estimator(), kde_estimator(), ksg_estimator(),
      mine_estimator(),    infonce_estimator(), smile_estimator(),
  };
  return entries;
}

}  // namespace ibn::mi
