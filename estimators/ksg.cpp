// ksg (Kraskov, Stögbauer & Grassberger 2004, algorithm 1; Chebyshev metric):
//   I = ψ(k) + ψ(N) − ⟨ψ(n_a + 1) + ψ(n_b + 1)⟩
// with ε_i the distance to the k-th neighbour of sample i in the joint space and n_a, n_b the
// samples strictly closer than ε_i in each marginal. With a discrete side (labels), Ross's
// (2014) mixed estimator: I = ψ(N) + ⟨ψ(k)⟩ − ⟨ψ(N_y)⟩ − ⟨ψ(m)⟩, neighbours within the label.
// Brute force over row blocks sized from a memory budget; no N×N matrix is held.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include <ATen/ops/arange.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/digamma.h>
#include <ATen/ops/full.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/randn.h>
#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/mi/entropy.h"
#include "ibn/mi/estimator.h"
#include "ibn/spec_string.h"

namespace ibn::mi {
namespace {

constexpr int64_t kDefaultK = 3;
constexpr double kDefaultJitter = 1e-10;  // breaks ties between equal values (scikit-learn's)

// Chebyshev distances [rows, N] between a block of rows [rows, d] and every sample, given as
// columns [d, N]: one in-place pass per dimension keeps a single extra block buffer live.
at::Tensor chebyshev(const at::Tensor& rows, const at::Tensor& columns) {
  at::Tensor out = rows.select(1, 0).unsqueeze(1).sub(columns.select(0, 0).unsqueeze(0)).abs_();
  at::Tensor part = at::empty_like(out);
  for (int64_t k = 1; k < columns.size(0); ++k) {
    at::sub_out(part, rows.select(1, k).unsqueeze(1), columns.select(0, k).unsqueeze(0)).abs_();
    at::maximum_out(out, out, part);
  }
  return out;
}

class KraskovStoegbauerGrassberger final : public Estimator {
 public:
  explicit KraskovStoegbauerGrassberger(KeyValueSpec& kv) {
    k_ = kv.integer_at_least("k", kDefaultK, 1);
    jitter_ = kv.number("jitter", kDefaultJitter);
    kv.require_at_least("jitter", jitter_, 0);
    standardize_ = kv.boolean("standardize", true);
    seed_ = kv.integer("seed", 0);
    memory_mb_ = kv.integer_at_least("memory_mb", 0, 0);
  }

  std::string spec() const override {
    std::string out = fmt::format("ksg:k={}:jitter={}:standardize={}:seed={}", k_, jitter_, standardize_, seed_);
    if (memory_mb_ > 0) out += fmt::format(":memory_mb={}", memory_mb_);
    return out;
  }

  Estimate estimate(const Variable& a, const Variable& b) const override {
    const int64_t n = check_pair(a, b);
    if (a.discrete && b.discrete) throw UsageError("ksg needs a continuous side; for two discrete variables use binning");
    if (k_ >= n) throw DataError(fmt::format("ksg:k={} needs more than k samples, and there are {}; lower k", k_, n));
    const int64_t memory = memory_mb_ > 0 ? memory_mb_ : default_memory_mb(a.values);
    double mi = 0;
    if (a.discrete || b.discrete) {
      mi = mixed(prepare(a.discrete ? b : a, 0), row_ids(a.discrete ? a.values : b.values), memory);
    } else {
      mi = continuous(prepare(a, 0), prepare(b, 1), memory);
    }
    return Estimate{spec(), std::max(0.0, mi), {}, {}, {}};
  }

 private:
  // [N, d] in floating point, per-dimension unit variance (if asked), and a seeded jitter.
  at::Tensor prepare(const Variable& v, uint64_t stream) const {
    at::Tensor x = as_matrix(v);
    if (standardize_) x = x.div(x.std(0, /*unbiased=*/true, /*keepdim=*/true).clamp_min(1e-12));
    if (jitter_ > 0) {
      at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed_) * 2 + stream);
      const at::Tensor noise = at::randn(x.sizes(), generator, x.options().device(at::kCPU)).to(x.device());
      x = x.add(noise.mul(x.abs().mean().clamp_min(1.0)).mul(jitter_));
    }
    return x;
  }

  // Rows per block: about six [rows, N] buffers are live (two marginal distances, their
  // maximum, a scratch buffer and the comparison masks).
  static int64_t block_rows(int64_t n, int64_t element_size, int64_t memory_mb) {
    constexpr int64_t kLiveBuffers = 6;
    const int64_t budget = memory_mb * (int64_t{1} << 20);
    return std::clamp<int64_t>(budget / (n * element_size * kLiveBuffers), 1, n);
  }

  double continuous(const at::Tensor& a, const at::Tensor& b, int64_t memory_mb) const {
    const int64_t n = a.size(0);
    const int64_t block = block_rows(n, a.element_size(), memory_mb);
    const at::Tensor a_columns = a.t().contiguous(), b_columns = b.t().contiguous();
    const double inf = std::numeric_limits<double>::infinity();
    double sum = 0;
    for (int64_t start = 0; start < n; start += block) {
      const int64_t stop = std::min(n, start + block);
      const at::Tensor self = at::arange(start, stop, a.options().dtype(at::kLong)).unsqueeze(1);
      at::Tensor da = chebyshev(a.slice(0, start, stop), a_columns).scatter_(1, self, inf);
      at::Tensor db = chebyshev(b.slice(0, start, stop), b_columns).scatter_(1, self, inf);
      const at::Tensor eps = std::get<0>(at::maximum(da, db).kthvalue(k_, 1)).unsqueeze(1);
      const at::Tensor na = da.lt(eps).sum(1).to(a.scalar_type());
      const at::Tensor nb = db.lt(eps).sum(1).to(a.scalar_type());
      sum += na.add(1).digamma().add(nb.add(1).digamma()).sum().item<double>();
    }
    return digamma(k_) + digamma(n) - sum / static_cast<double>(n);
  }

  // Ross (2014), as scikit-learn's mutual_info_classif: k is capped by each label's size minus
  // one and samples whose label occurs once are left out.
  double mixed(const at::Tensor& x, const at::Tensor& labels, int64_t memory_mb) const {
    const at::Tensor counts = at::zeros_like(labels).index_add_(0, labels, at::ones_like(labels)).index_select(0, labels);
    const at::Tensor kept = counts.gt(1).nonzero().squeeze(1);
    const at::Tensor xs = x.index_select(0, kept);
    const at::Tensor ys = labels.index_select(0, kept);
    const at::Tensor label_sizes = counts.index_select(0, kept);
    const at::Tensor k_each = label_sizes.sub(1).clamp_max(k_);
    const int64_t n = xs.size(0);
    if (n < 2) {
      throw DataError(fmt::format("ksg: every label occurs once among the {} samples, so no sample has a neighbour "
                                  "with its label; the labels look continuous (say which side is discrete) or the "
                                  "sample is too small", labels.size(0)));
    }
    const int64_t block = block_rows(n, xs.element_size(), memory_mb);
    const at::Tensor x_columns = xs.t().contiguous();
    // k_each <= a label's size - 1 <= n - 1, so the k_each-th neighbour is among the first
    // min(k, n - 1) (topk cannot take more than there are).
    const int64_t nearest_count = std::min<int64_t>(k_, n - 1);
    const double inf = std::numeric_limits<double>::infinity();
    double sum_m = 0;
    for (int64_t start = 0; start < n; start += block) {
      const int64_t stop = std::min(n, start + block);
      const at::Tensor self = at::arange(start, stop, xs.options().dtype(at::kLong)).unsqueeze(1);
      const at::Tensor d = chebyshev(xs.slice(0, start, stop), x_columns).scatter_(1, self, inf);
      // Distance to the k-th neighbour within the label: other labels pushed to infinity.
      const at::Tensor same = ys.slice(0, start, stop).unsqueeze(1).eq(ys.unsqueeze(0));
      const at::Tensor within = d.masked_fill(same.logical_not(), inf);
      const at::Tensor nearest = std::get<0>(within.topk(nearest_count, 1, /*largest=*/false, /*sorted=*/true));
      const at::Tensor radius = nearest.gather(1, k_each.slice(0, start, stop).sub(1).unsqueeze(1));
      // m counts every sample strictly inside the radius, the sample itself included.
      const at::Tensor m = d.lt(radius).sum(1).add(1).to(xs.scalar_type());
      sum_m += m.digamma().sum().item<double>();
    }
    const double mean_psi_k = k_each.to(at::kDouble).digamma().mean().item<double>();
    const double mean_psi_label = label_sizes.to(at::kDouble).digamma().mean().item<double>();
    return digamma(n) + mean_psi_k - mean_psi_label - sum_m / static_cast<double>(n);
  }

  static double digamma(int64_t x) {
    return at::full({1}, static_cast<double>(x), at::kDouble).digamma().item<double>();
  }

  int64_t k_ = kDefaultK;
  double jitter_ = kDefaultJitter;
  bool standardize_ = true;
  int64_t seed_ = 0;
  int64_t memory_mb_ = 0;
};

}  // namespace

EstimatorEntry ksg_estimator() {
  return {"ksg", "Kraskov k-nearest-neighbour estimator (Chebyshev); Ross's mixed form for labels",
          "k (3), jitter (1e-10, tie-breaking noise), standardize (true), seed (0), memory_mb",
          [](KeyValueSpec& kv) -> std::unique_ptr<Estimator> {
            return std::make_unique<KraskovStoegbauerGrassberger>(kv);
          }};
}

}  // namespace ibn::mi
