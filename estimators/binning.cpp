// binning (Shwartz-Ziv & Tishby): continuous values cut into uniform per-unit bins, then
// I(A;B) = H(A') + H(B') − H(A', B') over the distinct binned rows (discrete sides as they are).
// For a deterministic network with unique inputs, I(X;T) = H(T') since H(T'|X) = 0.
// edges=quantile puts equal counts in each bin of each unit instead (ranks, so the estimate is
// unchanged by any strictly increasing map of a unit; tied values may straddle a bin edge).
#include <cmath>
#include <memory>
#include <optional>

#include <ATen/ops/zeros_like.h>
#include <fmt/format.h>

#include "ibn/mi/entropy.h"
#include "ibn/mi/estimator.h"
#include "ibn/spec_string.h"

namespace ibn::mi {
namespace {

constexpr int64_t kDefaultBins = 30;

class Binning final : public Estimator {
 public:
  explicit Binning(KeyValueSpec& kv) {
    bins_ = kv.integer_at_least("bins", kDefaultBins, 1);
    if (kv.has("width")) {
      width_ = kv.number("width", 0);
      kv.require_above("width", *width_, 0);
    }
    if (kv.has("lo") != kv.has("hi")) kv.fail("lo and hi go together (a fixed range)");
    if (kv.has("lo")) {
      lo_ = kv.number("lo", 0);
      hi_ = kv.number("hi", 0);
      if (!(*hi_ > *lo_)) kv.fail(fmt::format("hi={} must exceed lo={}", *hi_, *lo_));
    }
    if (width_ && kv.has("bins")) kv.fail("give bins or width, not both");
    quantile_ = kv.word("edges", "uniform", {"uniform", "quantile"}) == "quantile";
    if (quantile_ && (width_ || lo_)) kv.fail("edges=quantile takes bins only (no width, lo or hi)");
  }

  std::string spec() const override {
    std::string out = width_ ? fmt::format("binning:width={}", *width_) : fmt::format("binning:bins={}", bins_);
    if (lo_) out += fmt::format(":lo={}:hi={}", *lo_, *hi_);
    if (quantile_) out += ":edges=quantile";
    return out;
  }

  Estimate estimate(const Variable& a, const Variable& b) const override {
    check_pair(a, b);
    const at::Tensor ids_a = ids(a);
    const at::Tensor ids_b = ids(b);
    const double mi = discrete_entropy(ids_a) + discrete_entropy(ids_b) - discrete_entropy(joint_ids(ids_a, ids_b));
    Estimate e{spec(), std::max(0.0, mi), {}, {}, {}};
    e.details.emplace_back("distinct_a", fmt::format("{}", ids_a.max().item<int64_t>() + 1));
    e.details.emplace_back("distinct_b", fmt::format("{}", ids_b.max().item<int64_t>() + 1));
    return e;
  }

  // Codes of the bins each value falls in: uniform over [lo, hi] (the observed range of the
  // whole variable unless fixed), values outside a fixed range going to the edge bins.
  at::Tensor codes(const at::Tensor& x) const {
    if (quantile_) {
      const at::Tensor ranks = x.argsort(/*dim=*/int64_t{0}).argsort(int64_t{0});  // per unit, 0..N-1
      return ranks.mul(bins_).div(x.size(0), /*rounding_mode=*/"floor");
    }
    const double lo = lo_ ? *lo_ : x.min().item<double>();
    if (width_) {
      // Bin codes are integers: a width so small that the range holds more bins than an
      // int64 (or a double's exact integers) can count would give meaningless codes.
      constexpr double kMaxBinsInRange = 1ull << 50;
      const double span = (x.max().item<double>() - lo) / *width_;
      if (!(span < kMaxBinsInRange)) {
        throw UsageError(fmt::format("{} cuts the data's range [{}, {}] into {} bins, more than 2^50; choose a wider width",
                                     spec(), lo, x.max().item<double>(), span));
      }
      return x.sub(lo).div(*width_).floor().to(at::kLong);
    }
    const double hi = hi_ ? *hi_ : x.max().item<double>();
    if (hi <= lo) return at::zeros_like(x, x.options().dtype(at::kLong));
    return x.sub(lo).mul(static_cast<double>(bins_) / (hi - lo)).floor().clamp(0, bins_ - 1).to(at::kLong);
  }

 private:
  at::Tensor ids(const Variable& v) const { return row_ids(v.discrete ? v.values : codes(as_matrix(v))); }

  int64_t bins_ = kDefaultBins;
  std::optional<double> width_, lo_, hi_;
  bool quantile_ = false;
};

}  // namespace

EstimatorEntry binning_estimator() {
  return {"binning", "uniform per-unit bins; I = H(A') + H(B') − H(A', B') over distinct binned rows",
          "bins (30) or width, lo and hi (default: the observed range), edges (uniform or quantile)",
          [](KeyValueSpec& kv) -> std::unique_ptr<Estimator> { return std::make_unique<Binning>(kv); }};
}

}  // namespace ibn::mi
