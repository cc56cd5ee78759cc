// ksg (Kraskov, Stögbauer & Grassberger 2004, algorithm 1; Chebyshev metric):
//   I = ψ(k) + ψ(N) − ⟨ψ(n_a + 1) + ψ(n_b + 1)⟩
// with ε_i the distance to the k-th neighbour of sample i in the joint space and n_a, n_b the
// samples strictly closer than ε_i in each marginal. With a discrete side (labels), Ross's
// (2014) mixed estimator: I = ψ(N) + ⟨ψ(k)⟩ − ⟨ψ(N_y)⟩ − ⟨ψ(m)⟩, neighbours within the label.
//
// Two searches give the same per-sample counts, and the estimate is computed from the counts
// alone, so they give the same number:
//   method=tree   exact max-norm k-d trees (sorted arrays in one dimension), queries spread
//                 over the CPU threads, O(N log N) in low dimension;
//   method=brute  blocked O(N²) distance matrices in ATen, sized by memory_mb: the reference,
//                 and the path for CUDA tensors.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sub.h>
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
#include "ibn/mi/max_norm_tree.h"
#include "ibn/spec_string.h"

namespace ibn::mi {
namespace {

constexpr int64_t kDefaultK = 3;
constexpr double kDefaultJitter = 1e-10;  // breaks ties between equal values (scikit-learn's)
constexpr int64_t kQueriesPerTask = 512;  // tree queries per parallel work item
constexpr int64_t kTreeDims = 16;         // method=auto: the tree up to this many dimensions

// Per-sample counts: the only part of KSG that depends on the data's geometry.
struct ContinuousCounts {
  std::vector<int64_t> a, b;  // n_a, n_b: others strictly closer than ε_i in each marginal
};
struct MixedCounts {
  std::vector<int64_t> k, label_size, m;  // k_i, N_{y_i}, m_i (the sample itself included)
};

// ψ(0..up_to) at the integers, from ψ(1) = −γ and ψ(n + 1) = ψ(n) + 1/n (ψ(0) unused).
std::vector<double> digamma_table(int64_t up_to) {
  constexpr double kEulerGamma = 0.57721566490153286061;
  std::vector<double> psi(static_cast<size_t>(std::max<int64_t>(up_to, 1) + 1));
  psi[0] = std::numeric_limits<double>::quiet_NaN();
  psi[1] = -kEulerGamma;
  for (size_t n = 1; n + 1 < psi.size(); ++n) psi[n + 1] = psi[n] + 1.0 / static_cast<double>(n);
  return psi;
}

double mean_digamma(const std::vector<int64_t>& values, int64_t offset, const std::vector<double>& psi) {
  double sum = 0;
  for (const int64_t v : values) sum += psi[static_cast<size_t>(v + offset)];
  return sum / static_cast<double>(values.size());
}

double continuous_estimate(const ContinuousCounts& c, int64_t k) {
  const int64_t n = static_cast<int64_t>(c.a.size());
  const std::vector<double> psi = digamma_table(n + 1);
  return psi[static_cast<size_t>(k)] + psi[static_cast<size_t>(n)] - mean_digamma(c.a, 1, psi) - mean_digamma(c.b, 1, psi);
}

double mixed_estimate(const MixedCounts& c) {
  const int64_t n = static_cast<int64_t>(c.m.size());
  const std::vector<double> psi = digamma_table(n + 1);
  return psi[static_cast<size_t>(n)] + mean_digamma(c.k, 0, psi) - mean_digamma(c.label_size, 0, psi) -
         mean_digamma(c.m, 0, psi);
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor flat = t.to(at::kCPU, at::kLong).contiguous();
  return {flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel()};
}

// --- brute force ---------------------------------------------------------------------------

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

// Rows per block: about six [rows, N] buffers are live (two marginal distances, their
// maximum, a scratch buffer and the comparison masks).
int64_t block_rows(int64_t n, int64_t element_size, int64_t memory_mb) {
  constexpr int64_t kLiveBuffers = 6;
  const int64_t budget = memory_mb * (int64_t{1} << 20);
  return std::clamp<int64_t>(budget / (n * element_size * kLiveBuffers), 1, n);
}

ContinuousCounts brute_continuous(const at::Tensor& a, const at::Tensor& b, int64_t k, int64_t memory_mb) {
  const int64_t n = a.size(0);
  const int64_t block = block_rows(n, a.element_size(), memory_mb);
  const at::Tensor a_columns = a.t().contiguous(), b_columns = b.t().contiguous();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<at::Tensor> na, nb;
  for (int64_t start = 0; start < n; start += block) {
    const int64_t stop = std::min(n, start + block);
    const at::Tensor self = at::arange(start, stop, a.options().dtype(at::kLong)).unsqueeze(1);
    at::Tensor da = chebyshev(a.slice(0, start, stop), a_columns).scatter_(1, self, inf);
    at::Tensor db = chebyshev(b.slice(0, start, stop), b_columns).scatter_(1, self, inf);
    const at::Tensor eps = std::get<0>(at::maximum(da, db).kthvalue(k, 1)).unsqueeze(1);
    na.push_back(da.lt(eps).sum(1));
    nb.push_back(db.lt(eps).sum(1));
  }
  return {to_vector(at::cat(na)), to_vector(at::cat(nb))};
}

// Ross (2014), as scikit-learn's mutual_info_classif: k_i = min(k, N_{y_i} − 1). `xs` and `ys`
// hold only samples whose label occurs at least twice.
MixedCounts brute_mixed(const at::Tensor& xs, const at::Tensor& ys, const at::Tensor& label_sizes,
                        const at::Tensor& k_each, int64_t k, int64_t memory_mb) {
  const int64_t n = xs.size(0);
  const int64_t block = block_rows(n, xs.element_size(), memory_mb);
  const at::Tensor x_columns = xs.t().contiguous();
  // k_i ≤ N_{y_i} − 1 ≤ n − 1, so the k_i-th neighbour is among the first min(k, n − 1)
  // (topk cannot take more than there are).
  const int64_t nearest_count = std::min<int64_t>(k, n - 1);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<at::Tensor> m;
  for (int64_t start = 0; start < n; start += block) {
    const int64_t stop = std::min(n, start + block);
    const at::Tensor self = at::arange(start, stop, xs.options().dtype(at::kLong)).unsqueeze(1);
    const at::Tensor d = chebyshev(xs.slice(0, start, stop), x_columns).scatter_(1, self, inf);
    // Distance to the k-th neighbour within the label: other labels pushed to infinity.
    const at::Tensor same = ys.slice(0, start, stop).unsqueeze(1).eq(ys.unsqueeze(0));
    const at::Tensor within = d.masked_fill(same.logical_not(), inf);
    const at::Tensor nearest = std::get<0>(within.topk(nearest_count, 1, /*largest=*/false, /*sorted=*/true));
    const at::Tensor radius = nearest.gather(1, k_each.slice(0, start, stop).sub(1).unsqueeze(1));
    m.push_back(d.lt(radius).sum(1).add(1));  // others strictly inside, and the sample itself
  }
  return {to_vector(k_each), to_vector(label_sizes), to_vector(at::cat(m))};
}

// --- trees -------------------------------------------------------------------------------

// Others strictly closer than `radius` to stored point i: the count includes i itself exactly
// when 0 < radius.
template <typename T>
int64_t others_closer(const MaxNormTree<T>& tree, int64_t i, T radius) {
  return tree.count_closer(tree.point(i), radius) - (T(0) < radius ? 1 : 0);
}

template <typename T>
ContinuousCounts tree_continuous(const at::Tensor& a, const at::Tensor& b, int64_t k) {
  const int64_t n = a.size(0);
  const at::Tensor joint = at::cat({a, b}, 1).contiguous();
  const MaxNormTree<T> joint_tree(joint.data_ptr<T>(), n, joint.size(1));
  const MaxNormTree<T> a_tree(a.contiguous().data_ptr<T>(), n, a.size(1));
  const MaxNormTree<T> b_tree(b.contiguous().data_ptr<T>(), n, b.size(1));
  ContinuousCounts c{std::vector<int64_t>(static_cast<size_t>(n)), std::vector<int64_t>(static_cast<size_t>(n))};
  const std::vector<int64_t>& order = joint_tree.storage_order();
  at::parallel_for(0, n, kQueriesPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const int64_t i = order[static_cast<size_t>(s)];
      const T eps = joint_tree.kth_neighbour_distance(i, k);
      c.a[static_cast<size_t>(i)] = others_closer(a_tree, i, eps);
      c.b[static_cast<size_t>(i)] = others_closer(b_tree, i, eps);
    }
  });
  return c;
}

template <typename T>
MixedCounts tree_mixed(const at::Tensor& xs, const at::Tensor& ys, const at::Tensor& label_sizes,
                       const at::Tensor& k_each) {
  const int64_t n = xs.size(0), dims = xs.size(1);
  const at::Tensor x = xs.contiguous();
  const MaxNormTree<T> all(x.data_ptr<T>(), n, dims);
  // One tree per label over its members; `local[i]` is sample i's index within its label.
  const at::Tensor labels = row_ids(ys);
  const int64_t label_count = labels.max().item<int64_t>() + 1;
  const std::vector<int64_t> label = to_vector(labels);
  std::vector<std::vector<T>> member_points(static_cast<size_t>(label_count));
  std::vector<int64_t> local(static_cast<size_t>(n));
  const T* data = x.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) {
    std::vector<T>& points = member_points[static_cast<size_t>(label[static_cast<size_t>(i)])];
    local[static_cast<size_t>(i)] = static_cast<int64_t>(points.size()) / dims;
    points.insert(points.end(), data + i * dims, data + (i + 1) * dims);
  }
  std::vector<MaxNormTree<T>> within;
  within.reserve(static_cast<size_t>(label_count));
  for (const auto& points : member_points) within.emplace_back(points.data(), static_cast<int64_t>(points.size()) / dims, dims);
  MixedCounts c{to_vector(k_each), to_vector(label_sizes), std::vector<int64_t>(static_cast<size_t>(n))};
  const std::vector<int64_t>& order = all.storage_order();
  at::parallel_for(0, n, kQueriesPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const size_t i = static_cast<size_t>(order[static_cast<size_t>(s)]);
      const T radius = within[static_cast<size_t>(label[i])].kth_neighbour_distance(local[i], c.k[i]);
      c.m[i] = others_closer(all, static_cast<int64_t>(i), radius) + 1;
    }
  });
  return c;
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
    method_ = kv.word("method", "auto", {"auto", "tree", "brute"});
  }

  std::string spec() const override {
    std::string out = fmt::format("ksg:k={}:jitter={}:standardize={}:seed={}", k_, jitter_, standardize_, seed_);
    if (memory_mb_ > 0) out += fmt::format(":memory_mb={}", memory_mb_);
    if (method_ != "auto") out += ":method=" + method_;  // auto: same number either way
    return out;
  }

  Estimate estimate(const Variable& a, const Variable& b) const override {
    const int64_t n = check_pair(a, b);
    if (a.discrete && b.discrete) throw UsageError("ksg needs a continuous side; for two discrete variables use binning");
    if (k_ >= n) throw DataError(fmt::format("ksg:k={} needs more than k samples, and there are {}; lower k", k_, n));
    if (a.discrete || b.discrete) {
      const double mi = mixed(prepare(a.discrete ? b : a, 0), a.discrete ? a.values : b.values);
      return Estimate{spec(), std::max(0.0, mi), {}, {}, {}};
    }
    // One floating type for both sides, so that both searches compute the same differences.
    const at::Tensor pa = prepare(a, 0);
    const double mi = continuous(pa, prepare(b, 1).to(pa.scalar_type()));
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
    return x.contiguous();
  }

  // In many dimensions a k-d tree prunes little and its scalar distance loops lose to the
  // vectorized brute force: auto takes the tree up to kTreeDims joint dimensions.
  bool use_tree(const at::Tensor& x, int64_t dims) const {
    return method_ == "tree" || (method_ == "auto" && !x.is_cuda() && dims <= kTreeDims);
  }
  int64_t memory_mb(const at::Tensor& x) const { return memory_mb_ > 0 ? memory_mb_ : default_memory_mb(x); }

  double continuous(const at::Tensor& a, const at::Tensor& b) const {
    if (!use_tree(a, a.size(1) + b.size(1))) return continuous_estimate(brute_continuous(a, b, k_, memory_mb(a)), k_);
    const at::Tensor ca = a.cpu(), cb = b.cpu();
    return continuous_estimate(ca.scalar_type() == at::kDouble ? tree_continuous<double>(ca, cb, k_)
                                                               : tree_continuous<float>(ca, cb, k_), k_);
  }

  // Samples whose label occurs once are left out (no neighbour shares their label).
  double mixed(const at::Tensor& x, const at::Tensor& label_values) const {
    const at::Tensor labels = row_ids(label_values);
    const at::Tensor counts = at::zeros_like(labels).index_add_(0, labels, at::ones_like(labels)).index_select(0, labels);
    const at::Tensor kept = counts.gt(1).nonzero().squeeze(1);
    const at::Tensor xs = x.index_select(0, kept);
    const at::Tensor ys = labels.index_select(0, kept);
    const at::Tensor label_sizes = counts.index_select(0, kept);
    const at::Tensor k_each = label_sizes.sub(1).clamp_max(k_);
    if (xs.size(0) < 2) {
      throw DataError(fmt::format("ksg: every label occurs once among the {} samples, so no sample has a neighbour "
                                  "with its label; the labels look continuous (say which side is discrete) or the "
                                  "sample is too small", labels.size(0)));
    }
    if (!use_tree(xs, xs.size(1))) return mixed_estimate(brute_mixed(xs, ys, label_sizes, k_each, k_, memory_mb(xs)));
    const at::Tensor cx = xs.cpu(), cy = ys.cpu(), cs = label_sizes.cpu(), ck = k_each.cpu();
    return mixed_estimate(cx.scalar_type() == at::kDouble ? tree_mixed<double>(cx, cy, cs, ck)
                                                          : tree_mixed<float>(cx, cy, cs, ck));
  }

  int64_t k_ = kDefaultK;
  double jitter_ = kDefaultJitter;
  bool standardize_ = true;
  int64_t seed_ = 0;
  int64_t memory_mb_ = 0;
  std::string method_;
};

}  // namespace

EstimatorEntry ksg_estimator() {
  return {"ksg", "Kraskov k-nearest-neighbour estimator (Chebyshev); Ross's mixed form for labels",
          "k (3), jitter (1e-10, tie-breaking noise), standardize (true), seed (0), "
          "method (auto: tree on the CPU up to 16 joint dimensions, else brute; both give the same counts), memory_mb (brute's blocks)",
          [](KeyValueSpec& kv) -> std::unique_ptr<Estimator> {
            return std::make_unique<KraskovStoegbauerGrassberger>(kv);
          }};
}

}  // namespace ibn::mi
