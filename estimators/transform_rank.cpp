// Rank-based transforms: each coordinate replaced by a function of its rank among the N
// samples, u = r / (N + 1) with mid-ranks for ties.
//   rank     u itself: the empirical copula, uniform marginals on (0, 1).
//   normal   Φ⁻¹(u) (van der Waerden's normal scores): Gaussian marginals.
// Why: KSG's neighbour counts assume the density is roughly uniform within each ε-ball. A
// heavy-tailed coordinate (Student-t with 1 degree of freedom) puts a few samples far out,
// where the balls are huge and the counts mix regions of very different density; KSG then
// underestimates badly (0.25 for a true 0.43 nats). Ranks bring every marginal to bounded,
// evenly filled support without changing the dependence (the copula), and so the MI. Normal
// scores do the same with Gaussian marginals, under which KSG on Gaussian data is unchanged.
// The empirical ranks are themselves an estimate of the marginal CDFs: with ties (discrete
// coordinates) they are not invertible and the estimate can change.
#include <cmath>

#include <ATen/ops/erfinv.h>

#include "ibn/mi/transform.h"

namespace ibn::mi {
namespace {

at::Tensor uniform_scores(const at::Tensor& x) {
  return mid_ranks(x).div(static_cast<double>(x.size(0) + 1));
}

at::Tensor identity(const at::Tensor& x) { return x; }

at::Tensor copula(const at::Tensor& x) { return uniform_scores(x).to(x.scalar_type()); }

at::Tensor normal_scores(const at::Tensor& x) {
  return uniform_scores(x).mul(2).sub(1).erfinv().mul(std::sqrt(2.0)).to(x.scalar_type());
}

}  // namespace

TransformEntry none_transform() { return {"none", "no transform (the default)", identity}; }

TransformEntry rank_transform() {
  return {"rank", "per-coordinate ranks r/(N+1) (empirical copula): robust to heavy tails, MI unchanged", copula};
}

TransformEntry normal_scores_transform() {
  return {"normal", "per-coordinate normal scores Φ⁻¹(r/(N+1)): robust to heavy tails, MI unchanged", normal_scores};
}

}  // namespace ibn::mi
