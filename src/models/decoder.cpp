// gpt and llama: byte-level decoder-only transformers with pre-norm blocks
//   x + Attn(norm_attn(x)) (causal), x + MLP(norm_mlp(x)), then norm_final and the LM head.
// gpt (GPT-2 style): learned positions, biases, GELU MLP of 4·dim; LayerNorm by default.
// llama (LLaMA style): rotary embeddings, no biases, SwiGLU MLP; RMSNorm by default.
// Input [N, T] token ids, logits [N, T, vocab]. Taps: "embed", "block<i>" ([N, T, D]), "final".
#include <cmath>
#include <memory>

#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "ibn/models/attention.h"
#include "ibn/models/model.h"
#include "ibn/spec_string.h"

namespace ibn::models {
namespace {

enum class Style { Gpt, Llama };

torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

class DecoderImpl final : public ModelImpl {
 public:
  DecoderImpl(Style style, int64_t dim, int64_t depth, int64_t heads, int64_t hidden, const ModelContext& context)
      : style_(style), dim_(dim), depth_(depth), heads_(heads), hidden_(hidden) {
    const int64_t context_length = context.sample_shape.at(0);
    const bool bias = style == Style::Gpt;
    tokens_ = register_module("tokens", torch::nn::Embedding(context.classes, dim));
    if (style == Style::Gpt) positions_ = register_parameter("positions", at::zeros({1, context_length, dim}).normal_(0, 0.02));
    for (int64_t i = 0; i < depth; ++i) {
      const std::string p = fmt::format("block{}_", i + 1);
      Block b;
      b.norm_attn = norm_site(p + "norm_attn", context.attn(), dim);
      b.qkv = register_module(p + "qkv", linear(dim, 3 * dim, bias));
      b.proj = register_module(p + "proj", linear(dim, dim, bias));
      b.norm_mlp = norm_site(p + "norm_mlp", context.mlp(), dim);
      b.up = register_module(p + "up", linear(dim, hidden, bias));
      if (style == Style::Llama) b.gate = register_module(p + "gate", linear(dim, hidden, false));
      b.down = register_module(p + "down", linear(hidden, dim, bias));
      blocks_.push_back(b);
    }
    final_norm_ = norm_site("norm_final", context.final(), dim);
    head_ = register_module("head", linear(dim, context.classes, false));
  }

  at::Tensor forward(const at::Tensor& x, Taps* taps) override {
    at::Tensor h = tokens_->forward(x);  // [N, T, D]
    if (positions_.defined()) h = h.add(positions_.slice(1, 0, x.size(1)));
    if (taps != nullptr) (*taps)["embed"] = h;
    for (size_t i = 0; i < blocks_.size(); ++i) {
      Block& b = blocks_[i];
      h = h.add(attention(b, b.norm_attn(h)));
      const at::Tensor m = b.norm_mlp(h);
      const at::Tensor inner = style_ == Style::Gpt ? torch::nn::functional::gelu(b.up->forward(m))
                                                     : torch::silu(b.gate->forward(m)).mul(b.up->forward(m));
      h = h.add(b.down->forward(inner));
      if (taps != nullptr) (*taps)[fmt::format("block{}", i + 1)] = h;
    }
    h = final_norm_(h);
    if (taps != nullptr) (*taps)["final"] = h;
    at::Tensor logits = head_->forward(h);
    if (taps != nullptr) (*taps)["logits"] = logits;
    return logits;
  }

  std::vector<std::string> tap_names() const override {
    std::vector<std::string> names{"embed"};
    for (int64_t i = 1; i <= depth_; ++i) names.push_back(fmt::format("block{}", i));
    names.emplace_back("final");
    names.emplace_back("logits");
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
    return fmt::format("{}:dim={}:depth={}:heads={}:hidden={}", style_ == Style::Gpt ? "gpt" : "llama", dim_, depth_,
                       heads_, hidden_);
  }

 private:
  struct Block {
    NormSite norm_attn, norm_mlp;
    torch::nn::Linear qkv{nullptr}, proj{nullptr}, up{nullptr}, gate{nullptr}, down{nullptr};
  };

  at::Tensor attention(Block& b, const at::Tensor& x) const {
    const int64_t n = x.size(0), t = x.size(1), head_dim = dim_ / heads_;
    const at::Tensor qkv = b.qkv->forward(x).reshape({n, t, 3, heads_, head_dim}).permute({2, 0, 3, 1, 4});
    at::Tensor q = qkv[0], k = qkv[1];
    if (style_ == Style::Llama) {
      q = rotary_embedding(q);
      k = rotary_embedding(k);
    }
    const at::Tensor out = scaled_dot_product_attention(q, k, qkv[2], /*causal=*/true);
    return b.proj->forward(out.transpose(1, 2).reshape({n, t, dim_}));
  }

  Style style_;
  int64_t dim_, depth_, heads_, hidden_;
  torch::nn::Embedding tokens_{nullptr};
  at::Tensor positions_;
  std::vector<Block> blocks_;
  NormSite final_norm_;
  torch::nn::Linear head_{nullptr};
};

std::shared_ptr<ModelImpl> make(Style style, KeyValueSpec& kv, const ModelContext& context) {
  if (context.sample_shape.size() != 1) kv.fail(fmt::format("{} needs token sequences (the text dataset)", kv.name()));
  const int64_t dim = kv.integer_at_least("dim", 64, 2);
  const int64_t depth = kv.integer_at_least("depth", 2, 1);
  const int64_t heads = kv.integer_at_least("heads", 4, 1);
  // GPT-2: 4·dim; LLaMA: 8/3·dim rounded up to a multiple of 8 (same parameters as 4·dim GELU).
  const int64_t default_hidden = style == Style::Gpt ? 4 * dim : (8 * dim / 3 + 7) / 8 * 8;
  const int64_t hidden = kv.integer_at_least("hidden", default_hidden, 1);
  if (dim % heads != 0) kv.fail(fmt::format("dim={} must be a multiple of heads={}", dim, heads));
  if (style == Style::Llama && (dim / heads) % 2 != 0) kv.fail(fmt::format("llama's rotary embedding needs an even head size; dim/heads = {}", dim / heads));
  return std::make_shared<DecoderImpl>(style, dim, depth, heads, hidden, context);
}

}  // namespace

ModelEntry gpt_model() {
  return {"gpt", "GPT-2 style decoder: learned positions, pre-norm, GELU MLP (LayerNorm by default)",
          "dim (64), depth (2), heads (4), hidden (4*dim)", "layernorm",
          [](KeyValueSpec& kv, const ModelContext& context) { return make(Style::Gpt, kv, context); }};
}

ModelEntry llama_model() {
  return {"llama", "LLaMA style decoder: rotary embeddings, SwiGLU, no biases (RMSNorm by default)",
          "dim (64), depth (2), heads (4), hidden (8/3*dim rounded up to 8)", "rmsnorm",
          [](KeyValueSpec& kv, const ModelContext& context) { return make(Style::Llama, kv, context); }};
}

}  // namespace ibn::models
