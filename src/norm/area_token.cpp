// area=token (LayerNorm, RMSNorm): per sample (per token), over the feature dimension. On
// feature maps [N, C, H, W] every pixel is a token: statistics over C at each (n, h, w), as
// ConvNeXt's channels-first LayerNorm.
#include <memory>

#include "ibn/norm/area.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

class TokenArea final : public Area {
 public:
  std::string name() const override { return "token"; }

  AreaPlan plan(c10::IntArrayRef shape, int64_t num_features, bool) const override {
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
