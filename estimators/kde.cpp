// kde (Kolchinsky & Tracey; Saxe et al. 2018): entropies of the Gaussian mixture that puts
// noise N(0, σ²I) on every sample, bounded above (pairwise KL) and below (Bhattacharyya).
//   B discrete (labels Y):   I(A;Y) = H(A) − Σ_y p(y)·H(A | Y = y)
//   both continuous, mode=channel (default; B = f(A) deterministic, as for I(X;T) and
//     I(T_{l−1};T_l)):       I(A;B) = H(B + noise) − H(noise),  H(noise) = (d/2)·log(2πeσ²)
//   both continuous, mode=joint: I(A;B) = H(A) + H(B) − H(A, B), each a mixture entropy
// `nats` is the estimate from the upper bounds, `lower_nats` the one from the lower bounds.
#include <cmath>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <ATen/ops/cat.h>
#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/mi/entropy.h"
#include "ibn/mi/estimator.h"
#include "ibn/spec_string.h"

namespace ibn::mi {
namespace {

constexpr double kDefaultVar = 0.1;

class KernelDensity final : public Estimator {
 public:
  explicit KernelDensity(KeyValueSpec& kv) {
    var_ = kv.number("var", kDefaultVar);
    kv.require_above("var", var_, 0);
    mode_ = kv.word("mode", "channel", {"channel", "joint"});
    memory_mb_ = kv.integer_at_least("memory_mb", 0, 0);
  }

  std::string spec() const override {
    std::string out = fmt::format("kde:var={}:mode={}", var_, mode_);
    if (memory_mb_ > 0) out += fmt::format(":memory_mb={}", memory_mb_);
    return out;
  }

  bool channel_only() const override { return mode_ == "channel"; }

  Estimate estimate(const Variable& a, const Variable& b) const override {
    const Mixture mixture = mixture_of(a, b);
    Estimate e{spec(), 0, {}, {}, {}};
    e.upper_nats = information(mixture, /*upper=*/true);
    e.lower_nats = information(mixture, /*upper=*/false);
    e.nats = *e.upper_nats;
    return e;
  }

  double nats(const Variable& a, const Variable& b) const override { return information(mixture_of(a, b), /*upper=*/true); }

 private:
  // I = Σ weight · H(matrix) − H(noise): the matrices (and class subsets) are the same for
  // both bounds; only the entropy differs.
  struct Mixture {
    std::vector<std::pair<double, at::Tensor>> parts;
    double noise_entropy = 0;
    int64_t memory_mb = 0;
  };

  Mixture mixture_of(const Variable& a, const Variable& b) const {
    check_pair(a, b);
    if (a.discrete && b.discrete) {
      throw UsageError("kde needs a continuous side; for two discrete variables use binning");
    }
    Mixture m;
    m.memory_mb = memory_mb_ > 0 ? memory_mb_ : default_memory_mb(a.values);
    if (a.discrete || b.discrete) {
      // I(T;Y) = H(T) − Σ_y p(y)·H(T | Y = y)
      const at::Tensor t = as_matrix(a.discrete ? b : a);
      const at::Tensor ids = row_ids((a.discrete ? a : b).values);
      m.parts.emplace_back(1.0, t);
      const double n = static_cast<double>(t.size(0));
      for (int64_t c = 0, classes = ids.max().item<int64_t>() + 1; c < classes; ++c) {
        const at::Tensor members = t.index_select(0, ids.eq(c).nonzero().squeeze(1));
        m.parts.emplace_back(-static_cast<double>(members.size(0)) / n, members);
      }
    } else if (mode_ == "channel") {
      m.parts.emplace_back(1.0, as_matrix(b));
      m.noise_entropy = 0.5 * static_cast<double>(m.parts[0].second.size(1)) * std::log(2.0 * M_PI * M_E * var_);
    } else {
      const at::Tensor ta = as_matrix(a), tb = as_matrix(b);
      m.parts = {{1.0, ta}, {1.0, tb}, {-1.0, at::cat({ta, tb.to(ta.scalar_type())}, 1)}};
    }
    return m;
  }

  double information(const Mixture& m, bool upper) const {
    double mi = -m.noise_entropy;
    for (const auto& [weight, t] : m.parts) {
      mi += weight * (upper ? upper_entropy(t, m.memory_mb) : kde_entropy_lower(t, var_, m.memory_mb));
    }
    return mi;
  }

  // The analysis asks for I(X;T) = H(T + noise) − H(noise) and then I(T;Y) = H(T) − Σ p·H(T|y)
  // of the same T: the full pairwise H(T), the costliest part, is kept for the next call.
  // The kept tensor holds its storage, so equal data pointer, shape, strides and version
  // counter (its value when kept; an in-place change bumps it) mean the same values.
  double upper_entropy(const at::Tensor& t, int64_t memory_mb) const {
    const std::lock_guard<std::mutex> lock(cache_mutex_);
    const bool same = cached_.defined() && cached_.data_ptr() == t.data_ptr() && cached_.sizes() == t.sizes() &&
                      cached_.strides() == t.strides() && cached_.scalar_type() == t.scalar_type() &&
                      cached_.device() == t.device() && cached_version_ == t._version();
    if (!same) {
      cached_entropy_ = kde_entropy_upper(t, var_, memory_mb);
      cached_ = t;
      cached_version_ = t._version();  // the counter is shared with `t`: keep its value now
    }
    return cached_entropy_;
  }

  double var_ = kDefaultVar;
  std::string mode_;
  int64_t memory_mb_ = 0;
  mutable std::mutex cache_mutex_;
  mutable at::Tensor cached_;
  mutable double cached_entropy_ = 0;
  mutable int64_t cached_version_ = 0;
};

}  // namespace

EstimatorEntry kde_estimator() {
  return {"kde", "Gaussian-mixture entropy bounds (Kolchinsky–Tracey upper, Bhattacharyya lower)",
          "var (noise variance σ², 0.1), mode (channel: B = f(A), or joint), memory_mb (block budget)",
          [](KeyValueSpec& kv) -> std::unique_ptr<Estimator> { return std::make_unique<KernelDensity>(kv); }};
}

}  // namespace ibn::mi
