#pragma once
// Attention pieces shared by the transformer models (vit, gpt, llama).
#include <ATen/core/Tensor.h>

namespace ibn::models {

// softmax(q kᵀ/√d) v over q, k, v [N, H, T, d]; `causal` hides later positions.
at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal);

// Rotary position embedding (Su et al.) of x [N, H, T, d], d even: each pair (x_2i, x_2i+1)
// at position t turns by the angle t·10000^(−2i/d).
at::Tensor rotary_embedding(const at::Tensor& x);

}  // namespace ibn::models
