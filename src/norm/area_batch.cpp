// area=batch (BatchNorm): per channel, over every sample (and token or pixel) of the batch.
#include <memory>

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/norm/area.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

class BatchArea final : public Area {
 public:
  std::string name() const override { return "batch"; }
  bool keeps_running_stats() const override { return true; }

  AreaPlan plan(c10::IntArrayRef shape, int64_t num_features, bool training) const override {
    const int64_t channel = channel_dim(shape, num_features, name());
    AreaPlan plan;
    plan.grouped_shape = shape.vec();
    for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
      if (d != channel) plan.reduce_dims.push_back(d);
    }
    finish_plan(plan, shape, channel);
    if (training && plan.group_size < 2) {
      throw UsageError(fmt::format(
          "area 'batch' in training needs more than one value per channel; got input {}",
          shape_str(shape)));
    }
    return plan;
  }
};

}  // namespace

std::unique_ptr<Area> make_batch_area(const NormSpec&) { return std::make_unique<BatchArea>(); }

}  // namespace ibn::norm
