#pragma once
// Sampled tasks with known mutual information (SPEC §4), for calibrating an estimator before
// trusting it, and for the validation tests.
//   gaussian:dx=5,dy=5,rho=0.8        independent pairs (a_i, b_i) with correlation ρ
//   gaussian-dense:dx=3,dy=3,rho=0.5  all 2·d coordinates pairwise correlated ρ
//   gaussian-random:dx=4,dy=3,seed=1  a random covariance
//   uniform-noise:eps=0.5             X ~ U(0,1), Y = X + U(−ε, ε), ε ≥ 1/2: I = 1/(4ε)
//   student-t:dx=2,dy=2,rho=0,df=1    the gaussian task over one shared √(χ²_ν/ν): heavy tails
// Every task also takes shuffle=true (pairs broken: I = 0) and transform=cube|exp|sinh
// (an invertible monotone map of A, leaving I unchanged).
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

namespace ibn::mi {

struct TaskSample {
  std::string spec;   // canonical task spec
  at::Tensor a, b;    // [N, dx], [N, dy], float64 on the CPU
  double truth_nats;  // the exact mutual information
};

// Throws ibn::UsageError for an unknown task, key or value.
TaskSample sample_task(const std::string& spec, int64_t n, uint64_t seed);

// I(A;B) for jointly Gaussian (A, B) with covariance Σ over [A, B]:
// ½·log(det Σ_AA · det Σ_BB / det Σ).
double gaussian_mi(const at::Tensor& covariance, int64_t dx);

// The tasks' names with their keys, for help texts.
std::string task_help();

}  // namespace ibn::mi
