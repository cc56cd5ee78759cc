// vit: Vision Transformer for small images. Patch embedding (conv p×p, stride p) with learned
// positions, pre-norm blocks x + Attn(norm_attn(x)), x + MLP(norm_mlp(x)) with GELU, a final
// norm, mean over tokens and a linear head. Taps: "embed", "block<i>" (tokens [N, T, D]),
// "final", "pool", "logits".
#include <cmath>
#include <memory>

#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "ibn/models/attention.h"
#include "ibn/models/model.h"
#include "ibn/spec_string.h"

namespace ibn::models {
namespace {

class VitImpl final : public ModelImpl {
 public:
  VitImpl(int64_t patch, int64_t dim, int64_t depth, int64_t heads, int64_t mlp_ratio, const ModelContext& context)
      : patch_(patch), dim_(dim), depth_(depth), heads_(heads), mlp_ratio_(mlp_ratio) {
    const int64_t channels = context.sample_shape.size() == 3 ? context.sample_shape[0] : 1;
    const int64_t height = context.sample_shape[context.sample_shape.size() - 2];
    const int64_t width = context.sample_shape.back();
    const int64_t tokens = (height / patch) * (width / patch);
    embed_ = register_module("embed", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, dim, patch).stride(patch)));
    positions_ = register_parameter("positions", at::zeros({1, tokens, dim}).normal_(0, 0.02));
    for (int64_t i = 0; i < depth; ++i) {
      const std::string p = fmt::format("block{}_", i + 1);
      Block b;
      b.norm_attn = norm_site(p + "norm_attn", context.attn(), dim);
      b.qkv = register_module(p + "qkv", torch::nn::Linear(dim, 3 * dim));
      b.proj = register_module(p + "proj", torch::nn::Linear(dim, dim));
      b.norm_mlp = norm_site(p + "norm_mlp", context.mlp(), dim);
      b.fc1 = register_module(p + "fc1", torch::nn::Linear(dim, mlp_ratio * dim));
      b.fc2 = register_module(p + "fc2", torch::nn::Linear(mlp_ratio * dim, dim));
      blocks_.push_back(b);
    }
    final_norm_ = norm_site("norm_final", context.final(), dim);
    head_ = register_module("head", torch::nn::Linear(dim, context.classes));
  }

  at::Tensor forward(const at::Tensor& x, Taps* taps) override {
    at::Tensor images = x.dim() == 3 ? x.unsqueeze(1) : x;
    at::Tensor h = embed_->forward(images).flatten(2).transpose(1, 2).add(positions_);  // [N, T, D]
    if (taps != nullptr) (*taps)["embed"] = h;
    for (size_t i = 0; i < blocks_.size(); ++i) {
      Block& b = blocks_[i];
      h = h.add(attention(b, b.norm_attn(h)));
      h = h.add(b.fc2->forward(torch::nn::functional::gelu(b.fc1->forward(b.norm_mlp(h)))));
      if (taps != nullptr) (*taps)[fmt::format("block{}", i + 1)] = h;
    }
    h = final_norm_(h);
    if (taps != nullptr) (*taps)["final"] = h;
    const at::Tensor pooled = h.mean(1);
    if (taps != nullptr) (*taps)["pool"] = pooled;
    at::Tensor logits = head_->forward(pooled);
    if (taps != nullptr) (*taps)["logits"] = logits;
    return logits;
  }

  std::vector<std::string> tap_names() const override {
    std::vector<std::string> names{"embed"};
    for (int64_t i = 1; i <= depth_; ++i) names.push_back(fmt::format("block{}", i));
    for (const char* n : {"final", "pool", "logits"}) names.emplace_back(n);
    return names;
  }

  // The residual stream after each block, then the logits.
  std::vector<std::string> chain() const override {
    std::vector<std::string> names;
    for (int64_t i = 1; i <= depth_; ++i) names.push_back(fmt::format("block{}", i));
    names.emplace_back("logits");
    return names;
  }

  std::string spec() const override {
    return fmt::format("vit:patch={}:dim={}:depth={}:heads={}:mlp={}", patch_, dim_, depth_, heads_, mlp_ratio_);
  }

 private:
  struct Block {
    NormSite norm_attn, norm_mlp;
    torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  };

  // Multi-head self-attention over all tokens (no mask).
  at::Tensor attention(Block& b, const at::Tensor& x) const {
    const int64_t n = x.size(0), t = x.size(1), head_dim = dim_ / heads_;
    const at::Tensor qkv = b.qkv->forward(x).reshape({n, t, 3, heads_, head_dim}).permute({2, 0, 3, 1, 4});
    const at::Tensor out = scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], /*causal=*/false);  // [N, H, T, hd]
    return b.proj->forward(out.transpose(1, 2).reshape({n, t, dim_}));
  }

  int64_t patch_, dim_, depth_, heads_, mlp_ratio_;
  torch::nn::Conv2d embed_{nullptr};
  at::Tensor positions_;
  std::vector<Block> blocks_;
  NormSite final_norm_;
  torch::nn::Linear head_{nullptr};
};

}  // namespace

ModelEntry vit_model() {
  return {"vit", "Vision Transformer: patch embedding, pre-norm blocks (norm-attn, norm-mlp), final norm",
          "patch (4), dim (64), depth (2), heads (4), mlp (ratio, 2)", "layernorm",
          [](KeyValueSpec& kv, const ModelContext& context) -> std::shared_ptr<ModelImpl> {
            if (context.sample_shape.size() < 2) kv.fail("vit needs image inputs [C, H, W] or [H, W]");
            const int64_t patch = kv.integer_at_least("patch", 4, 1);
            const int64_t dim = kv.integer_at_least("dim", 64, 1);
            const int64_t depth = kv.integer_at_least("depth", 2, 1);
            const int64_t heads = kv.integer_at_least("heads", 4, 1);
            const int64_t mlp = kv.integer_at_least("mlp", 2, 1);
            if (dim % heads != 0) kv.fail(fmt::format("dim={} must be a multiple of heads={}", dim, heads));
            const int64_t h = context.sample_shape[context.sample_shape.size() - 2], w = context.sample_shape.back();
            if (h % patch != 0 || w % patch != 0) kv.fail(fmt::format("patch={} must divide the {}x{} image", patch, h, w));
            return std::make_shared<VitImpl>(patch, dim, depth, heads, mlp, context);
          }};
}

}  // namespace ibn::models
