#include "ibn/models/attention.h"

#include <cmath>
#include <limits>

#include <ATen/ops/arange.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/stack.h>

namespace ibn::models {

at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal) {
  at::Tensor scores = q.matmul(k.transpose(-2, -1)).div(std::sqrt(static_cast<double>(q.size(-1))));
  if (causal) {
    const int64_t t = q.size(-2);
    const at::Tensor future = at::ones({t, t}, q.options().dtype(at::kBool)).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  }
  return scores.softmax(-1).matmul(v);
}

at::Tensor rotary_embedding(const at::Tensor& x) {
  const int64_t t = x.size(-2), d = x.size(-1);
  const at::Tensor frequencies = at::arange(0, d, 2, x.options()).div(static_cast<double>(d)).mul(-std::log(10000.0)).exp();
  const at::Tensor angles = at::arange(t, x.options()).unsqueeze(1).mul(frequencies.unsqueeze(0));  // [T, d/2]
  const at::Tensor cos = angles.cos(), sin = angles.sin();
  const at::Tensor pairs = x.reshape({x.size(0), x.size(1), t, d / 2, 2});
  const at::Tensor even = pairs.select(-1, 0), odd = pairs.select(-1, 1);
  return at::stack({even.mul(cos).sub(odd.mul(sin)), even.mul(sin).add(odd.mul(cos))}, -1).reshape(x.sizes());
}

}  // namespace ibn::models
