// area=group (GroupNorm): per sample, over each of G equal groups of channels (and their
// pixels). [N, T, D] inputs are grouped per token over D.
#include <memory>

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/norm/area.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

class GroupArea final : public Area {
 public:
  explicit GroupArea(int64_t groups) : groups_(groups) {}
  std::string name() const override { return "group"; }

  void check_features(int64_t num_features) const override {
    if (num_features % groups_ != 0) {
      throw UsageError(fmt::format(
          "area 'group' with groups={} cannot split {} channels: groups must divide the "
          "channel count",
          groups_, num_features));
    }
  }

  AreaPlan plan(c10::IntArrayRef shape, int64_t num_features, bool) const override {
    const int64_t channel = channel_dim(shape, num_features, name());
    check_features(num_features);
    AreaPlan plan;
    // Split the channel dim into [G, C/G] and fold every later dim (pixels) into one.
    plan.grouped_shape.assign(shape.begin(), shape.begin() + channel);
    plan.grouped_shape.push_back(groups_);
    plan.grouped_shape.push_back(num_features / groups_);
    int64_t pixels = 1;
    for (size_t d = channel + 1; d < shape.size(); ++d) pixels *= shape[d];
    plan.grouped_shape.push_back(pixels);
    plan.reduce_dims = {channel + 1, channel + 2};
    finish_plan(plan, shape, channel);
    return plan;
  }

 private:
  int64_t groups_;
};

}  // namespace

std::unique_ptr<Area> make_group_area(const NormSpec& spec) {
  return std::make_unique<GroupArea>(spec.groups);
}

}  // namespace ibn::norm
