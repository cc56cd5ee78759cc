#include "ibn/models/model.h"

#include <fmt/format.h>

#include "ibn/spec_string.h"

namespace ibn::models {

ModelEntry mlp_model();

const std::vector<ModelEntry>& models() {
  static const std::vector<ModelEntry> entries{
      mlp_model(),
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
