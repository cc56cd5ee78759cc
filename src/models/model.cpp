#include "ibn/models/model.h"

#include <fmt/format.h>

#include "ibn/spec_string.h"

namespace ibn::models {

namespace {
thread_local Contractions* recording = nullptr;
}  // namespace

RecordContractions::RecordContractions(Contractions& into) : previous_(recording) { recording = &into; }
RecordContractions::~RecordContractions() { recording = previous_; }

at::Tensor NormSite::operator()(const at::Tensor& x) const {
  if (!norm_) return x;
  if (recording != nullptr) (*recording)[name_] = norm_->contraction(x).item<double>();
  return norm_.ptr()->forward(x);
}

NormSite::NormSite(torch::nn::Module& owner, std::vector<std::pair<std::string, norm::Normalizer>>& sites,
                   const std::string& name, const std::string& spec, int64_t features)
    : name_(name) {
  if (spec == "none") return;
  norm_ = owner.register_module(name, norm::Normalizer(spec, features));
  sites.emplace_back(name, norm_);
}

ModelEntry mlp_model();
ModelEntry resnet_model();
ModelEntry vit_model();
ModelEntry gpt_model();
ModelEntry llama_model();

const std::vector<ModelEntry>& models() {
  static const std::vector<ModelEntry> entries{
      mlp_model(),
      resnet_model(),
      vit_model(),
      gpt_model(),
      llama_model(),
  };
  return entries;
}

std::string resolve_norm(const std::string& model_spec, const std::string& norm) {
  if (!norm.empty()) return norm;
  const std::string name = model_spec.substr(0, model_spec.find(':'));
  for (const ModelEntry& entry : models()) {
    if (entry.name == name) return entry.default_norm;
  }
  return norm;  // make_model reports the unknown model
}

std::shared_ptr<ModelImpl> make_model(const std::string& text, const ModelContext& context) {
  KeyValueSpec spec(text, "model spec");
  const ModelEntry& entry = spec.find_entry(models(), "model");
  ModelContext resolved = context;
  if (resolved.norm.empty()) resolved.norm = entry.default_norm;
  std::shared_ptr<ModelImpl> model = entry.make(spec, resolved);
  spec.finish(entry.keys);
  return model;
}

}  // namespace ibn::models
