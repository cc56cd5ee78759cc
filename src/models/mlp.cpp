// mlp: fully connected layers, each hidden one Linear → normalizer → activation.
// Default widths 10-7-5-4-3 with tanh: with 12 inputs and 2 classes, Shwartz-Ziv & Tishby's
// 12-10-7-5-4-3-2 network. Taps: "norm<i>" (normalizer output), "fc<i>" (hidden layer i after
// its activation: the T_i of the information plane), "logits".
#include <cstdlib>
#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/modules/linear.h>

#include "ibn/error.h"
#include "ibn/models/model.h"
#include "ibn/spec_string.h"
#include "widths.h"

namespace ibn::models {
namespace {

class MlpImpl final : public ModelImpl {
 public:
  MlpImpl(std::vector<int64_t> widths, std::string activation, const ModelContext& context)
      : widths_(std::move(widths)), activation_(std::move(activation)), norm_(context.norm) {
    int64_t in = 1;
    for (int64_t s : context.sample_shape) in *= s;
    for (size_t i = 0; i < widths_.size(); ++i) {
      const std::string index = std::to_string(i + 1);
      linears_.push_back(register_module("linear" + index, torch::nn::Linear(in, widths_[i])));
      norms_.push_back(norm_site("norm" + index, norm_, widths_[i]));
      in = widths_[i];
    }
    output_ = register_module("output", torch::nn::Linear(in, context.classes));
  }

  at::Tensor forward(const at::Tensor& x, Taps* taps) override {
    at::Tensor h = x.reshape({x.size(0), -1});
    for (size_t i = 0; i < linears_.size(); ++i) {
      const std::string index = std::to_string(i + 1);
      h = linears_[i]->forward(h);
      if (norm_ != "none") {
        h = norms_[i](h);
        if (taps != nullptr) (*taps)["norm" + index] = h;
      }
      h = activation_ == "tanh" ? h.tanh() : h.relu();
      if (taps != nullptr) (*taps)["fc" + index] = h;
    }
    at::Tensor logits = output_->forward(h);
    if (taps != nullptr) (*taps)["logits"] = logits;
    return logits;
  }

  std::vector<std::string> tap_names() const override {
    std::vector<std::string> names;
    for (size_t i = 1; i <= linears_.size(); ++i) {
      if (norm_ != "none") names.push_back("norm" + std::to_string(i));
      names.push_back("fc" + std::to_string(i));
    }
    names.push_back("logits");
    return names;
  }

  // A block is linear, norm, activation: its representation is the activation's output.
  std::vector<std::string> chain() const override {
    std::vector<std::string> names;
    for (size_t i = 1; i <= linears_.size(); ++i) names.push_back("fc" + std::to_string(i));
    names.push_back("logits");
    return names;
  }

  std::string spec() const override {
    return fmt::format("mlp:widths={}:act={}", fmt::join(widths_, "-"), activation_);
  }

 private:
  std::vector<int64_t> widths_;
  std::string activation_;
  std::string norm_;
  std::vector<torch::nn::Linear> linears_;
  std::vector<NormSite> norms_;
  torch::nn::Linear output_{nullptr};
};

}  // namespace

ModelEntry mlp_model() {
  return {"mlp", "fully connected: Linear → norm → activation per hidden layer (12-10-7-5-4-3-2 tanh by default)",
          "widths (10-7-5-4-3), act (tanh or relu)", "layernorm",
          [](KeyValueSpec& kv, const ModelContext& context) -> std::shared_ptr<ModelImpl> {
            std::vector<int64_t> widths = parse_widths(kv, "10-7-5-4-3");
            const std::string act = kv.word("act", "tanh", {"tanh", "relu"});
            return std::make_shared<MlpImpl>(std::move(widths), act, context);
          }};
}

}  // namespace ibn::models
