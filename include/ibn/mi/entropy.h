#pragma once
// Entropy functions the estimators are built from, public for analysis code and tests.
// All in nats; inputs on any device.
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ibn::mi {

// Dense ids 0..K-1 of the distinct rows of x ([N] or [N, k], any integer type): equal rows get
// equal ids. Counts distinct rows by sorting (torch.unique over dim 0).
at::Tensor row_ids(const at::Tensor& x);

// Plug-in entropy H = −Σ p log p of the empirical distribution of ids [N] (integers).
double discrete_entropy(const at::Tensor& ids);

// Ids of the joint rows (a_i, b_i) of two id vectors.
at::Tensor joint_ids(const at::Tensor& ids_a, const at::Tensor& ids_b);

// Kolchinsky–Tracey upper bound on the entropy of the Gaussian mixture (1/N) Σ_i N(t_i, σ²I):
// H ≤ (d/2)·log(2πeσ²) − (1/N) Σ_i log (1/N) Σ_j exp(−‖t_i − t_j‖²/(2σ²)).
// Streams row blocks of at most `memory_mb` MiB of distances; never holds an N×N matrix.
double kde_entropy_upper(const at::Tensor& t, double var, int64_t memory_mb);

// The Bhattacharyya lower bound: the upper bound's form at 4σ² plus (d/2)·log(1/4).
double kde_entropy_lower(const at::Tensor& t, double var, int64_t memory_mb);

// (1/N) Σ_i log (1/N) Σ_j exp(−‖t_i − t_j‖²/(2σ²)) for t [N, d], streamed in row blocks.
double mean_log_mean_kernel(const at::Tensor& t, double var, int64_t memory_mb);

// Entropy of N(μ, Σ): ½·log((2πe)^d det Σ).
double gaussian_entropy(const at::Tensor& covariance);

}  // namespace ibn::mi
