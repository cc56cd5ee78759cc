// resnet: basic-block ResNet for small images (28×28, 32×32): a 3×3 stem, stages of basic
// blocks (conv3×3 → norm → ReLU → conv3×3 → norm, plus the shortcut, then ReLU), the first
// block of each later stage halving the resolution, global average pooling and a linear head.
// Taps: "stem", "stage<s>.block<b>" (feature maps), "pool", "logits".
#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "ibn/models/model.h"
#include "ibn/spec_string.h"
#include "widths.h"

namespace ibn::models {
namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

class ResNetImpl final : public ModelImpl {
 public:
  ResNetImpl(std::vector<int64_t> widths, int64_t blocks, const ModelContext& context)
      : widths_(std::move(widths)), blocks_(blocks) {
    const int64_t channels = context.sample_shape.size() == 3 ? context.sample_shape[0] : 1;
    stem_ = register_module("stem", conv3x3(channels, widths_[0], 1));
    stem_norm_ = norm_site("stem_norm", context.norm, widths_[0]);
    int64_t in = widths_[0];
    for (size_t s = 0; s < widths_.size(); ++s) {
      for (int64_t b = 0; b < blocks_; ++b) {
        const std::string name = fmt::format("stage{}.block{}", s + 1, b + 1);
        const std::string prefix = fmt::format("stage{}_block{}_", s + 1, b + 1);
        const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        Block block;
        block.name = name;
        block.conv1 = register_module(prefix + "conv1", conv3x3(in, widths_[s], stride));
        block.norm1 = norm_site(prefix + "norm1", context.norm, widths_[s]);
        block.conv2 = register_module(prefix + "conv2", conv3x3(widths_[s], widths_[s], 1));
        block.norm2 = norm_site(prefix + "norm2", context.norm, widths_[s]);
        if (stride != 1 || in != widths_[s]) {
          block.shortcut = register_module(
              prefix + "shortcut", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, widths_[s], 1).stride(stride).bias(false)));
          block.shortcut_norm = norm_site(prefix + "shortcut_norm", context.norm, widths_[s]);
        }
        blocks_list_.push_back(block);
        in = widths_[s];
      }
    }
    head_ = register_module("head", torch::nn::Linear(in, context.classes));
  }

  at::Tensor forward(const at::Tensor& x, Taps* taps) override {
    at::Tensor h = x.dim() == 3 ? x.unsqueeze(1) : x;
    h = stem_norm_(stem_->forward(h)).relu();
    if (taps != nullptr) (*taps)["stem"] = h;
    for (Block& block : blocks_list_) {
      at::Tensor out = block.norm1(block.conv1->forward(h)).relu();
      out = block.norm2(block.conv2->forward(out));
      const at::Tensor skip = block.shortcut ? block.shortcut_norm(block.shortcut->forward(h)) : h;
      h = out.add(skip).relu();
      if (taps != nullptr) (*taps)[block.name] = h;
    }
    const at::Tensor pooled = h.mean({2, 3});
    if (taps != nullptr) (*taps)["pool"] = pooled;
    at::Tensor logits = head_->forward(pooled);
    if (taps != nullptr) (*taps)["logits"] = logits;
    return logits;
  }

  std::vector<std::string> tap_names() const override {
    std::vector<std::string> names{"stem"};
    for (const Block& block : blocks_list_) names.push_back(block.name);
    names.push_back("pool");
    names.push_back("logits");
    return names;
  }

  // The output of each stage (its last residual block), then the logits.
  std::vector<std::string> chain() const override {
    std::vector<std::string> names;
    for (size_t s = 0; s < widths_.size(); ++s) names.push_back(fmt::format("stage{}.block{}", s + 1, blocks_));
    names.push_back("logits");
    return names;
  }

  std::string spec() const override { return fmt::format("resnet:widths={}:blocks={}", fmt::join(widths_, "-"), blocks_); }

 private:
  struct Block {
    std::string name;
    torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, shortcut{nullptr};
    NormSite norm1, norm2, shortcut_norm;
  };
  std::vector<int64_t> widths_;
  int64_t blocks_;
  torch::nn::Conv2d stem_{nullptr};
  NormSite stem_norm_;
  std::vector<Block> blocks_list_;
  torch::nn::Linear head_{nullptr};
};

}  // namespace

ModelEntry resnet_model() {
  return {"resnet", "basic-block ResNet for 28x28 / 32x32 images (stages of widths, blocks per stage)",
          "widths (16-32-64), blocks (2 per stage)", "layernorm",
          [](KeyValueSpec& kv, const ModelContext& context) -> std::shared_ptr<ModelImpl> {
            if (context.sample_shape.size() < 2) kv.fail("resnet needs image inputs [C, H, W] or [H, W]");
            std::vector<int64_t> widths = parse_widths(kv, "16-32-64");
            const int64_t blocks = kv.integer_at_least("blocks", 2, 1);
            return std::make_shared<ResNetImpl>(std::move(widths), blocks, context);
          }};
}

}  // namespace ibn::models
