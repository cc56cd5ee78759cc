#include "ibn/mi/entropy.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include <ATen/ops/logsumexp.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/_unique2.h>
#include <ATen/ops/unique_dim.h>

namespace ibn::mi {
namespace {

// Rows of a block of distances that fit the budget: the block, its exponent and the
// logsumexp's temporaries are each B×N values.
int64_t rows_per_block(int64_t n, int64_t element_size, int64_t memory_mb) {
  constexpr int64_t kLiveCopies = 3;
  const int64_t budget = memory_mb * (int64_t{1} << 20);
  return std::clamp<int64_t>(budget / (n * element_size * kLiveCopies), 1, n);
}

}  // namespace

at::Tensor row_ids(const at::Tensor& x) {
  const at::Tensor rows = x.dim() == 1 ? x.unsqueeze(1) : x.reshape({x.size(0), -1});
  // Non-negative integer codes (bins, labels) whose value ranges multiply to less than 2^62
  // are one exact integer key per row (mixed radix, first column most significant, so keys
  // sort as the rows do): a 1-d unique, far faster than unique_dim's row comparisons.
  if (!rows.is_floating_point() && rows.numel() > 0 && rows.min().item<int64_t>() >= 0) {
    const at::Tensor sizes = rows.amax(0).to(at::kLong).add(1).cpu();
    constexpr int64_t kLimit = int64_t{1} << 62;
    int64_t product = 1;
    bool fits = true;
    std::vector<int64_t> weights(static_cast<size_t>(rows.size(1)));
    for (int64_t j = rows.size(1) - 1; j >= 0 && fits; --j) {
      weights[static_cast<size_t>(j)] = product;
      const int64_t size = sizes[j].item<int64_t>();
      fits = size <= kLimit / product;  // integers throughout: no rounding, no overflow
      product *= fits ? size : 1;
    }
    if (fits) {
      const at::Tensor key = rows.to(at::kLong).mul(at::tensor(weights, at::kLong).to(rows.device())).sum(1);
      return std::get<1>(at::_unique2(key, /*sorted=*/true, /*return_inverse=*/true, /*return_counts=*/false));
    }
  }
  return std::get<1>(at::unique_dim(rows, 0, /*sorted=*/true, /*return_inverse=*/true));
}

double discrete_entropy(const at::Tensor& ids) {
  const at::Tensor counts = std::get<2>(at::_unique2(ids.reshape({-1}), /*sorted=*/true, false, /*return_counts=*/true));
  const at::Tensor p = counts.to(at::kDouble).div(static_cast<double>(ids.numel()));
  return -p.mul(p.log()).sum().item<double>();
}

at::Tensor joint_ids(const at::Tensor& ids_a, const at::Tensor& ids_b) {
  return row_ids(at::stack({ids_a.reshape({-1}), ids_b.reshape({-1})}, 1));
}

double mean_log_mean_kernel(const at::Tensor& t, double var, int64_t memory_mb) {
  const int64_t n = t.size(0);
  const at::Tensor squared_norms = t.square().sum(1);  // [N]
  const int64_t block = rows_per_block(n, t.element_size(), memory_mb);
  double total = 0;
  for (int64_t start = 0; start < n; start += block) {
    const int64_t stop = std::min(n, start + block);
    const at::Tensor rows = t.slice(0, start, stop);
    // ‖a‖² + ‖b‖² − 2abᵀ as one matrix product, then in place (rounding can make it slightly
    // negative); in-place steps keep one block-sized buffer live.
    at::Tensor exponent = rows.matmul(t.t());
    exponent.mul_(-2.0)
        .add_(squared_norms.slice(0, start, stop).unsqueeze(1))
        .add_(squared_norms.unsqueeze(0))
        .clamp_min_(0.0)
        .mul_(-0.5 / var);
    total += at::logsumexp(exponent, {1}).sum().item<double>();
  }
  return total / static_cast<double>(n) - std::log(static_cast<double>(n));
}

double kde_entropy_upper(const at::Tensor& t, double var, int64_t memory_mb) {
  const double d = static_cast<double>(t.size(1));
  return 0.5 * d * std::log(2.0 * M_PI * M_E * var) - mean_log_mean_kernel(t, var, memory_mb);
}

double kde_entropy_lower(const at::Tensor& t, double var, int64_t memory_mb) {
  const double d = static_cast<double>(t.size(1));
  return kde_entropy_upper(t, 4.0 * var, memory_mb) + 0.5 * d * std::log(0.25);
}

double gaussian_entropy(const at::Tensor& covariance) {
  const double d = static_cast<double>(covariance.size(0));
  return 0.5 * (d * std::log(2.0 * M_PI * M_E) + covariance.to(at::kDouble).logdet().item<double>());
}

}  // namespace ibn::mi
