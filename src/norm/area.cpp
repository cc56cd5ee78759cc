#include "ibn/norm/area.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/error.h"

namespace ibn::norm {

std::string shape_str(c10::IntArrayRef shape) {
  return fmt::format("[{}]", fmt::join(shape.begin(), shape.end(), ", "));
}

int64_t channel_dim(c10::IntArrayRef shape, int64_t num_features, const std::string& area) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (rank < 2) {
    throw UsageError(fmt::format(
        "area '{}' got input {}: expected [N, D], [N, T, D] or [N, C, H, W] with {} features",
        area, shape_str(shape), num_features));
  }
  const int64_t dim = feature_dim(shape.size());
  if (shape[dim] != num_features) {
    throw UsageError(fmt::format(
        "area '{}' got input {} with {} features in dim {}; the layer was built for {} "
        "(layouts: [N, D], [N, T, D], [N, C, H, W])",
        area, shape_str(shape), shape[dim], dim, num_features));
  }
  for (int64_t s : shape) {
    if (s == 0) throw UsageError(fmt::format("area '{}' got an empty input {}", area, shape_str(shape)));
  }
  return dim;
}

void finish_plan(AreaPlan& plan, c10::IntArrayRef shape, int64_t channel) {
  plan.stat_shape = plan.grouped_shape;
  plan.group_size = 1;
  for (int64_t d : plan.reduce_dims) {
    plan.group_size *= plan.grouped_shape[d];
    plan.stat_shape[d] = 1;
  }
  plan.affine_shape.assign(shape.size(), 1);
  plan.affine_shape[channel] = shape[channel];
}

}  // namespace ibn::norm
