#include "ibn/models/model.h"

#include <fmt/format.h>

#include "ibn/spec_string.h"

namespace ibn::models {

NormSite::NormSite(torch::nn::Module& owner, std::vector<std::pair<std::string, norm::Normalizer>>& sites,
                   const std::string& name, const std::string& spec, int64_t features) {
  if (spec == "none") return;
  norm_ = owner.register_module(name, norm::Normalizer(spec, features));
  sites.emplace_back(name, norm_);
}

ModelEntry mlp_model();
ModelEntry resnet_model();
ModelEntry vit_model();

const std::vector<ModelEntry>& models() {
  static const std::vector<ModelEntry> entries{
      mlp_model(),
      resnet_model(),
      vit_model(),
  };
  return entries;
}

std::shared_ptr<ModelImpl> make_model(const std::string& text, const ModelContext& context) {
  KeyValueSpec spec(text, "model spec");
  std::string names;
  for (const ModelEntry& entry : models()) {
    if (entry.name == spec.name()) {
      std::shared_ptr<ModelImpl> model = entry.make(spec, context);
      spec.finish(entry.keys);
      return model;
    }
    names += (names.empty() ? "" : ", ") + entry.name;
  }
  spec.fail(fmt::format("unknown model '{}'; expected one of: {}", spec.name(), names));
}

}  // namespace ibn::models
