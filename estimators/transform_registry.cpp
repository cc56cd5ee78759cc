// Every transform of the estimators' continuous sides, one line each; each is defined in its
// own file in estimators/ (transform_*.cpp).
#include "ibn/mi/transform.h"

namespace ibn::mi {

TransformEntry none_transform();
TransformEntry rank_transform();
TransformEntry normal_scores_transform();

const std::vector<TransformEntry>& transform_registry() {
  static const std::vector<TransformEntry> entries{none_transform(), rank_transform(), normal_scores_transform()};
  return entries;
}

}  // namespace ibn::mi
