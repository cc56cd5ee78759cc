#pragma once
// Models (SPEC §6), one registry. Every normalization site takes a normalizer spec (`--norm`),
// and every named layer can record its output into Taps during a forward pass (the activation
// store dumps them; analysis reads them as T_l).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "ibn/norm/normalizer.h"

namespace ibn {
class KeyValueSpec;
}

namespace ibn::models {

struct ModelContext {
  ModelContext() = default;
  ModelContext(std::vector<int64_t> shape, int64_t classes_, std::string norm_)
      : sample_shape(std::move(shape)), classes(classes_), norm(std::move(norm_)) {}

  std::vector<int64_t> sample_shape;  // one input's shape, e.g. {12}
  int64_t classes = 0;
  std::string norm;                   // every site; "none": no normalizer; empty: the model's default
  // Transformer sites; empty means `norm`.
  std::string norm_attn, norm_mlp, norm_final;

  // Each records that the model has such a site, so that a --norm-attn given to a model
  // without one is an error instead of silently unused.
  const std::string& attn() const {
    has_attn_site = true;
    return norm_attn.empty() ? norm : norm_attn;
  }
  const std::string& mlp() const {
    has_mlp_site = true;
    return norm_mlp.empty() ? norm : norm_mlp;
  }
  const std::string& final() const {
    has_final_site = true;
    return norm_final.empty() ? norm : norm_final;
  }
  mutable bool has_attn_site = false, has_mlp_site = false, has_final_site = false;
};

// Variance contraction κ of each normalization site's input (SPEC §3), by site name.
using Contractions = std::map<std::string, double>;

// While one lives, every normalization site that runs on this thread records κ of its input
// into `into` (the trainer's dump pass: κ needs the norm's input, which no tap holds).
class RecordContractions {
 public:
  explicit RecordContractions(Contractions& into);
  ~RecordContractions();
  RecordContractions(const RecordContractions&) = delete;
  RecordContractions& operator=(const RecordContractions&) = delete;

 private:
  Contractions* previous_;
};

// A normalization site: the normalizer of `spec` over `features`, or the identity for "none".
// Registers it on `owner` under `name` and lists it in `sites` (for κ per layer).
class NormSite {
 public:
  NormSite() = default;
  NormSite(torch::nn::Module& owner, std::vector<std::pair<std::string, norm::Normalizer>>& sites,
           const std::string& name, const std::string& spec, int64_t features);
  // Const like a function call; the normalizer itself may still update running statistics.
  at::Tensor operator()(const at::Tensor& x) const;

 private:
  norm::Normalizer norm_{nullptr};
  std::string name_;
};

// Outputs of named layers, recorded when a forward pass is given a Taps to fill.
using Taps = std::map<std::string, at::Tensor>;

class ModelImpl : public torch::nn::Module {
 public:
  // x: [B, sample_shape...] -> logits [B, classes]. Records every tap it has into `taps`.
  virtual at::Tensor forward(const at::Tensor& x, Taps* taps = nullptr) = 0;
  // Every tap name, in forward order: "fc1", "norm1", ..., "logits".
  virtual std::vector<std::string> tap_names() const = 0;
  // The representation chain the IB value sums over (SPEC §3): one tap per block, in forward
  // order, and the logits last; never two taps of one block.
  virtual std::vector<std::string> chain() const = 0;
  // The model's normalization layers with their names (for κ per layer).
  const std::vector<std::pair<std::string, norm::Normalizer>>& normalizers() const { return normalizers_; }
  NormSite norm_site(const std::string& name, const std::string& spec, int64_t features) {
    return NormSite(*this, normalizers_, name, spec, features);
  }
  // Canonical spec with every parameter resolved.
  virtual std::string spec() const = 0;

 protected:
  std::vector<std::pair<std::string, norm::Normalizer>> normalizers_;
};

struct ModelEntry {
  std::string name;
  std::string summary;
  std::string keys;
  std::string default_norm;  // used where ModelContext::norm is empty
  std::shared_ptr<ModelImpl> (*make)(KeyValueSpec& spec, const ModelContext& context);
};

const std::vector<ModelEntry>& models();

// The normalizer spec a model gets for `norm`: `norm` itself, or the model's default if empty.
std::string resolve_norm(const std::string& model_spec, const std::string& norm);

// Throws ibn::UsageError for an unknown model, key or value, or a norm spec that does not fit.
std::shared_ptr<ModelImpl> make_model(const std::string& spec, const ModelContext& context);

}  // namespace ibn::models
