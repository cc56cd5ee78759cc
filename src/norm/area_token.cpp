// area=token (LayerNorm, RMSNorm): per sample (per token), over the feature dimension.
#include <memory>

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/norm/area.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

class TokenArea final : public Area {
 public:
  std::string name() const override { return "token"; }

  AreaPlan plan(c10::IntArrayRef shape, int64_t num_features, bool) const override {
    if (shape.size() >= 4) {
      throw UsageError(fmt::format(
          "area 'token' got feature maps {}: it takes [N, D] or [N, T, D]; for per-sample "
          "statistics over [N, C, H, W] use area=group with groups=1",
          shape_str(shape)));
    }
    const int64_t channel = channel_dim(shape, num_features, name());
    AreaPlan plan;
    plan.grouped_shape = shape.vec();
    plan.reduce_dims = {channel};
    finish_plan(plan, shape, channel);
    return plan;
  }
};

}  // namespace

std::unique_ptr<Area> make_token_area(const NormSpec&) { return std::make_unique<TokenArea>(); }

}  // namespace ibn::norm
