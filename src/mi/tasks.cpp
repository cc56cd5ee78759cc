#include "ibn/mi/tasks.h"

#include <cmath>
#include <functional>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/full.h>
#include <ATen/ops/_standard_gamma.h>
#include <ATen/ops/linalg_cholesky.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/randperm.h>
#include <ATen/ops/rand.h>
#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/spec_string.h"

namespace ibn::mi {
namespace {

struct Drawn {
  at::Tensor a, b;
  double truth;
};

// Samples N rows of a zero-mean Gaussian over [A, B] with the given covariance.
Drawn draw_gaussian(const at::Tensor& covariance, int64_t dx, int64_t n, at::Generator& g) {
  const at::Tensor lower = at::linalg_cholesky(covariance);
  const at::Tensor z = at::randn({n, covariance.size(0)}, g, at::kDouble);
  const at::Tensor x = z.matmul(lower.t());
  return {x.slice(1, 0, dx).contiguous(), x.slice(1, dx).contiguous(), gaussian_mi(covariance, dx)};
}

// ln Γ and ψ at real arguments, for the Student-t correction.
double digamma_real(double x) {
  return at::full({1}, x, at::kDouble).digamma().item<double>();
}

// The multivariate Student-t's excess over the Gaussian MI of its dispersion matrix: the
// information the shared scale carries (Arellano-Valle, Contreras-Reyes & Genton 2013, as in
// Czyż et al.'s bmi benchmark). With ν = 1 and dx = dy = 2 it is 0.4319 nats.
double student_t_excess(double nu, int64_t dx, int64_t dy) {
  const auto term = [](double a) { return std::lgamma(a) - a * digamma_real(a); };
  const double x = static_cast<double>(dx), y = static_cast<double>(dy);
  return term(nu / 2) + term((nu + x + y) / 2) - term((nu + x) / 2) - term((nu + y) / 2);
}

}  // namespace

double gaussian_mi(const at::Tensor& covariance, int64_t dx) {
  const at::Tensor c = covariance.to(at::kDouble);
  const double joint = c.logdet().item<double>();
  const double a = c.slice(0, 0, dx).slice(1, 0, dx).logdet().item<double>();
  const double b = c.slice(0, dx).slice(1, dx).logdet().item<double>();
  return 0.5 * (a + b - joint);
}

std::string task_help() {
  return "gaussian:dx=,dy=,rho=  (min(dx,dy) pairs correlated rho, the rest independent)\n"
         "gaussian-dense:dx=,dy=,rho=  (every pair of coordinates correlated rho)\n"
         "gaussian-random:dx=,dy=,seed=  (a random covariance)\n"
         "uniform-noise:eps=  (X ~ U(0,1), Y = X + U(-eps, eps), eps >= 0.5)\n"
         "student-t:dx=,dy=,rho=,df=  (the gaussian task divided by one shared sqrt(chi2_df/df): heavy tails)\n"
         "every task: shuffle=true (I = 0), transform=cube|exp|sinh (monotone map of A)";
}

TaskSample sample_task(const std::string& text, int64_t n, uint64_t seed) {
  // 10^8 rows of a few dims is already gigabytes, and past any estimator's reach.
  constexpr int64_t kMaxSamples = 100'000'000;
  if (n < 2 || n > kMaxSamples) {
    throw UsageError(fmt::format("--n {}: a task draws between 2 and {} samples", n, kMaxSamples));
  }
  KeyValueSpec kv(text, "task spec");
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  Drawn drawn;
  std::string canonical;
  const std::string& name = kv.name();
  if (name == "gaussian" || name == "gaussian-dense" || name == "student-t") {
    const int64_t dx = kv.integer_at_least("dx", 1, 1), dy = kv.integer_at_least("dy", 1, 1);
    const double rho = kv.number("rho", 0.5);
    const int64_t d = dx + dy;
    at::Tensor cov = at::eye(d, at::kDouble);
    if (name != "gaussian-dense") {
      kv.require_within("rho", rho, -0.999999, 0.999999);
      for (int64_t i = 0; i < std::min(dx, dy); ++i) {
        cov[i][dx + i] = rho;
        cov[dx + i][i] = rho;
      }
    } else {
      // All off-diagonal entries ρ: positive definite for −1/(d−1) < ρ < 1.
      kv.require_within("rho", rho, -1.0 / static_cast<double>(d - 1) + 1e-6, 0.999999);
      cov = at::full({d, d}, rho, at::kDouble).add(at::eye(d, at::kDouble).mul(1.0 - rho));
    }
    drawn = draw_gaussian(cov, dx, n, g);
    canonical = fmt::format("{}:dx={},dy={},rho={}", name, dx, dy, rho);
    if (name == "student-t") {
      // X = Z / sqrt(W/ν) with one W ~ χ²_ν = 2·Gamma(ν/2) per sample, shared by all coordinates.
      const double df = kv.number("df", 1.0);
      kv.require_above("df", df, 0);
      const at::Tensor w = at::_standard_gamma(at::full({n, 1}, df / 2, at::kDouble), g).mul(2.0 / df);
      const at::Tensor scale = w.rsqrt();
      drawn = {drawn.a.mul(scale), drawn.b.mul(scale), drawn.truth + student_t_excess(df, dx, dy)};
      canonical += fmt::format(",df={}", df);
    }
  } else if (name == "gaussian-random") {
    const int64_t dx = kv.integer_at_least("dx", 2, 1), dy = kv.integer_at_least("dy", 2, 1);
    const int64_t cov_seed = kv.integer("seed", 0);
    at::Generator cov_g = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(cov_seed));
    // W Wᵀ/d + I/2, scaled to unit variances: a well-conditioned random correlation matrix.
    const int64_t d = dx + dy;
    const at::Tensor w = at::randn({d, d}, cov_g, at::kDouble);
    at::Tensor cov = w.matmul(w.t()).div(static_cast<double>(d)).add(at::eye(d, at::kDouble).mul(0.5));
    const at::Tensor scale = cov.diagonal().rsqrt();
    cov = cov.mul(scale.unsqueeze(0)).mul(scale.unsqueeze(1));
    drawn = draw_gaussian(cov, dx, n, g);
    canonical = fmt::format("gaussian-random:dx={},dy={},seed={}", dx, dy, cov_seed);
  } else if (name == "uniform-noise") {
    const double eps = kv.number("eps", 0.5);
    kv.require_at_least("eps", eps, 0.5);
    const at::Tensor x = at::rand({n, 1}, g, at::kDouble);
    const at::Tensor noise = at::rand({n, 1}, g, at::kDouble).mul(2 * eps).sub(eps);
    drawn = {x, x.add(noise), 1.0 / (4.0 * eps)};
    canonical = fmt::format("uniform-noise:eps={}", eps);
  } else {
    kv.fail(fmt::format("unknown task '{}'; expected one of: gaussian, gaussian-dense, gaussian-random, uniform-noise, student-t", name));
  }

  const std::string transform = kv.word("transform", "none", {"none", "cube", "exp", "sinh"});
  if (transform == "cube") drawn.a = drawn.a.pow(3);
  if (transform == "exp") drawn.a = drawn.a.exp();
  if (transform == "sinh") drawn.a = drawn.a.sinh();
  if (transform != "none") canonical += ",transform=" + transform;
  if (kv.boolean("shuffle", false)) {
    drawn.b = drawn.b.index_select(0, at::randperm(n, g, at::TensorOptions().dtype(at::kLong)));
    drawn.truth = 0.0;
    canonical += ",shuffle=true";
  }
  kv.finish("dx, dy, rho (gaussian*, student-t), df (student-t), seed (gaussian-random), eps (uniform-noise), transform, shuffle");
  return {canonical, drawn.a, drawn.b, drawn.truth};
}

}  // namespace ibn::mi
