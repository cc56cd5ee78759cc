#pragma once
// The statistics every comparison prints (SPEC §9): per setting a mean with a 95 % Student-t
// interval clipped to the quantity's range; per comparison with a baseline the paired
// difference by seed with its interval, a paired-t and a Wilcoxon signed-rank p-value, and
// Holm–Bonferroni across the comparisons of a table; the one-sided binomial test behind the
// `chance` flag. Quantiles come from Boost.Math, never from a typed-in table.
//
// NaN inputs are skipped (a run without the quantity), never silently counted as 0.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace ibn::stats {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The quantile of Student's t with `dof` degrees of freedom at probability `p` (0 < p < 1);
// NaN for dof < 1.
double t_quantile(double p, double dof);

// A mean with its 95 % interval [low, high]; n values went into it. With one value the
// interval is NaN (unknown, not zero).
struct Interval {
  double mean = kNaN, low = kNaN, high = kNaN;
  int64_t n = 0;
  double half_width() const { return (high - low) / 2; }
};
constexpr const char* kIntervalMethod = "95 % Student-t interval over seeds (t quantile from Boost.Math)";

// Mean and two-sided 95 % Student-t interval of the finite values, clipped to [lo, hi] (the
// quantity's range: [0, 1] for an accuracy, [0, ∞) for a loss or an MI).
Interval mean_interval(const std::vector<double>& values, double lo = -std::numeric_limits<double>::infinity(),
                       double hi = std::numeric_limits<double>::infinity());

// Paired t-test of the differences d (H0: mean 0), two-sided. NaN for fewer than 2
// differences, or when all are equal to 0.
double paired_t_p(const std::vector<double>& differences);

// Wilcoxon signed-rank test of the differences (H0: symmetric about 0), two-sided, as
// scipy.stats.wilcoxon (zero_method='wilcox', no continuity correction, method 'auto'): with
// at most 50 differences and no zeros, the exact null distribution (with tied |d|, the exact
// distribution of their midranks, where scipy 1.10 floors R+ into the untied table); with
// zeros (dropped) or more than 50, the normal approximation with the tie correction. NaN when
// no nonzero difference remains.
double wilcoxon_p(const std::vector<double>& differences);

// The smallest two-sided p-value the exact signed-rank test can give with n pairs (2/2^n):
// with 5 seeds it is 0.0625, so the exact Wilcoxon test alone can never reject at α = 0.05
// (the approximation, used when a difference is 0, can go lower).
double wilcoxon_min_p(int64_t n);

// Holm–Bonferroni adjusted p-values, in the input's order. NaN entries stay NaN and are not
// counted as comparisons.
std::vector<double> holm(const std::vector<double>& p);

// P(X ≥ k) for X ~ Binomial(n, p): the one-sided p-value of "k successes in n trials are more
// than chance rate p allows".
double binomial_upper_p(int64_t k, int64_t n, double p);

// The spread of a quantity within groups (the runs of one grid point across platforms, or of
// one setting across seeds), pooled: sd = sqrt(Σ_g Σ_i (x_gi − mean_g)² / Σ_g (n_g − 1)), the
// estimate of a common within-group standard deviation (each group's variance weighted by its
// degrees of freedom). Groups with fewer than 2 finite values add nothing; `groups` counts those
// that did, `dof` is Σ (n_g − 1), `max_range` the largest max − min within one group. All NaN
// (groups 0) when no group has 2 values. Groups of equal values add exactly 0.
struct PooledSpread {
  double sd = kNaN, max_range = kNaN;
  int64_t groups = 0, dof = 0;
};
PooledSpread pooled_spread(const std::vector<std::vector<double>>& groups);

// The ratio a.sd / b.sd of two pooled spreads with its 95 % interval from the F distribution
// with (a.dof, b.dof) degrees of freedom (normal within-group values): the variance ratio over
// F(0.975) and F(0.025), square-rooted. NaN bounds when either dof is 0 or b.sd is 0.
struct SpreadRatio {
  double ratio = kNaN, low = kNaN, high = kNaN;
};
SpreadRatio spread_ratio(const PooledSpread& a, const PooledSpread& b);
// The quantile of Fisher's F(d1, d2) at p (Boost.Math); NaN for d1 or d2 < 1.
double f_quantile(double p, double d1, double d2);

// One comparison of a setting with the baseline, paired by seed.
struct PairedComparison {
  Interval difference;              // mean of (setting − baseline) over the shared seeds
  double p_t = kNaN, p_wilcoxon = kNaN;
  double p_holm = kNaN;             // filled by holm() over a table's comparisons (of p_t)
  int64_t pairs = 0;
};

// Differences a[i] − b[i] over the pairs where both are finite.
PairedComparison compare_paired(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace ibn::stats
