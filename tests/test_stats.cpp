// The statistics of reports against values computed independently: scipy 1.10's printed
// outputs for fixed data (the commands are in each comment) and hand-worked Holm examples.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "ibn/stats/stats.h"

namespace {

using ibn::stats::kNaN;

// scipy.stats.t.ppf(0.975, k) for k = 1, 4, 9, 30 (Boost and scipy agree to about 1e-11)
TEST(Stats, StudentQuantileMatchesScipy) {
  EXPECT_NEAR(ibn::stats::t_quantile(0.975, 1), 12.706204736432095, 1e-8);
  EXPECT_NEAR(ibn::stats::t_quantile(0.975, 4), 2.7764451051977987, 1e-9);
  EXPECT_NEAR(ibn::stats::t_quantile(0.975, 9), 2.2621571627409915, 1e-9);
  EXPECT_NEAR(ibn::stats::t_quantile(0.975, 30), 2.0422724563012373, 1e-9);
  EXPECT_TRUE(std::isnan(ibn::stats::t_quantile(0.975, 0)));
}

// m = mean(x); h = t.ppf(0.975, 4)*std(x, ddof=1)/sqrt(5): m-h, m+h
TEST(Stats, MeanIntervalMatchesScipyAndIsClipped) {
  const std::vector<double> x{0.91, 0.95, 0.93, 0.97, 0.94};
  const ibn::stats::Interval i = ibn::stats::mean_interval(x, 0, 1);
  EXPECT_NEAR(i.mean, 0.94, 1e-12);
  EXPECT_NEAR(i.low, 0.9122355489480218, 1e-12);
  EXPECT_NEAR(i.high, 0.9677644510519778, 1e-12);
  EXPECT_EQ(i.n, 5);
  // An accuracy near 1 with a wide spread: the interval stops at 1.
  const ibn::stats::Interval clipped = ibn::stats::mean_interval({0.99, 1.0, 0.6}, 0, 1);
  EXPECT_EQ(clipped.high, 1.0);
  EXPECT_GT(clipped.low, 0.0);
  // NaN values are skipped, one value has no interval.
  const ibn::stats::Interval one = ibn::stats::mean_interval({kNaN, 0.5});
  EXPECT_EQ(one.n, 1);
  EXPECT_DOUBLE_EQ(one.mean, 0.5);
  EXPECT_TRUE(std::isnan(one.low) && std::isnan(one.high));
}

// scipy.stats.ttest_1samp(d, 0).pvalue
TEST(Stats, PairedTMatchesScipy) {
  EXPECT_NEAR(ibn::stats::paired_t_p({0.012, -0.004, 0.031, 0.027, 0.009}), 0.07742070809531022, 1e-12);
  EXPECT_NEAR(ibn::stats::paired_t_p({1.0, -1.0, 2.0, 2.0, 3.0, 0.0, 4.0, 5.0, -5.0, 6.0}), 0.12715949379547062, 1e-12);
  EXPECT_TRUE(std::isnan(ibn::stats::paired_t_p({0.0, 0.0, 0.0})));
  EXPECT_TRUE(std::isnan(ibn::stats::paired_t_p({1.0})));
}

// scipy.stats.wilcoxon(d).pvalue: exact without ties or zeros, normal approximation with the
// tie correction otherwise (zeros dropped)
TEST(Stats, WilcoxonMatchesScipy) {
  EXPECT_NEAR(ibn::stats::wilcoxon_p({0.012, -0.004, 0.031, 0.027, 0.009}), 0.125, 1e-12);
  EXPECT_NEAR(ibn::stats::wilcoxon_p({1.5, -2.25, 3.0, 4.5, -0.5, 6.0, 7.5, 8.25, 9.0, -10.5, 11.0, 12.25}),
              0.05224609375, 1e-12);
  EXPECT_NEAR(ibn::stats::wilcoxon_p({1.0, -1.0, 2.0, 2.0, 3.0, 0.0, 4.0, 5.0, -5.0, 6.0}), 0.10880943004054568, 1e-12);
  EXPECT_TRUE(std::isnan(ibn::stats::wilcoxon_p({0.0, 0.0})));
  // Tied |d| without zeros: exact over the midranks (scipy 1.10 gives the same here), never
  // below 2/2^n as the normal approximation would (0.0422 for the first).
  EXPECT_NEAR(ibn::stats::wilcoxon_p({1, 1, 2, 3, 4}), 0.0625, 1e-12);
  EXPECT_NEAR(ibn::stats::wilcoxon_p({1, -1, 2, 3, 4}), 0.1875, 1e-12);
  // All five differences of one sign: the smallest p the exact test has for n = 5.
  EXPECT_DOUBLE_EQ(ibn::stats::wilcoxon_p({1, 2, 3, 4, 5}), 0.0625);
  EXPECT_DOUBLE_EQ(ibn::stats::wilcoxon_min_p(5), 0.0625);
}

// Holm: sorted p = 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, then
// running maxima 0.02, 0.03, 0.06, 0.06 (worked by hand)
TEST(Stats, HolmAdjustsByRankAndKeepsOrder) {
  const std::vector<double> adjusted = ibn::stats::holm({0.01, 0.04, 0.03, 0.005});
  ASSERT_EQ(adjusted.size(), 4u);
  EXPECT_NEAR(adjusted[0], 0.03, 1e-15);
  EXPECT_NEAR(adjusted[1], 0.06, 1e-15);
  EXPECT_NEAR(adjusted[2], 0.06, 1e-15);
  EXPECT_NEAR(adjusted[3], 0.02, 1e-15);
  // NaN is no comparison: two real ones, so factors 2 and 1; capped at 1.
  const std::vector<double> with_nan = ibn::stats::holm({0.6, kNaN, 0.2});
  EXPECT_NEAR(with_nan[2], 0.4, 1e-15);
  EXPECT_NEAR(with_nan[0], 0.6, 1e-15);
  EXPECT_TRUE(std::isnan(with_nan[1]));
  EXPECT_EQ(ibn::stats::holm({0.7, 0.8})[0], 1.0);
}

// scipy.stats.binomtest(k, 614, 0.5635, alternative='greater').pvalue for k = 330, 360
TEST(Stats, BinomialUpperTailMatchesScipy) {
  EXPECT_NEAR(ibn::stats::binomial_upper_p(330, 614, 0.5635), 0.9099629946311607, 1e-10);
  EXPECT_NEAR(ibn::stats::binomial_upper_p(360, 614, 0.5635), 0.13570562332234448, 1e-10);
  EXPECT_DOUBLE_EQ(ibn::stats::binomial_upper_p(0, 10, 0.5), 1.0);
  EXPECT_NEAR(ibn::stats::binomial_upper_p(10, 10, 0.5), std::ldexp(1.0, -10), 1e-15);
}

TEST(Stats, PairedComparisonUsesOnlyPairsWithBothValues) {
  const ibn::stats::PairedComparison c =
      ibn::stats::compare_paired({0.9, 0.8, kNaN, 0.7}, {0.5, 0.5, 0.5, kNaN});
  EXPECT_EQ(c.pairs, 2);
  EXPECT_NEAR(c.difference.mean, 0.35, 1e-12);
}

// F quantiles and the ratio interval against scipy 1.10: f.ppf(0.975, 18, 16) = 2.7170033137231457,
// f.ppf(0.025, 18, 16) = 0.37873747385743317.
TEST(Stats, SpreadRatioIntervalFromTheFDistribution) {
  EXPECT_NEAR(ibn::stats::f_quantile(0.975, 18, 16), 2.7170033137231457, 1e-9);
  EXPECT_NEAR(ibn::stats::f_quantile(0.5, 7, 7), 1.0, 1e-12);  // F(d, d) is symmetric in log about 1
  EXPECT_TRUE(std::isnan(ibn::stats::f_quantile(0.5, 0, 7)));
  ibn::stats::PooledSpread a, b;
  a.sd = 2, a.dof = 18, b.sd = 1, b.dof = 16;
  const auto r = ibn::stats::spread_ratio(a, b);
  EXPECT_DOUBLE_EQ(r.ratio, 2.0);
  EXPECT_NEAR(r.low, std::sqrt(4 / 2.7170033137231457), 1e-9);
  EXPECT_NEAR(r.high, std::sqrt(4 / 0.37873747385743317), 1e-9);
  EXPECT_NEAR(ibn::stats::f_quantile(0.025, 18, 16), 1 / ibn::stats::f_quantile(0.975, 16, 18), 1e-12);
  b.sd = 0;
  EXPECT_TRUE(std::isnan(ibn::stats::spread_ratio(a, b).ratio));
}

// Worked by hand (numpy: sqrt(sum of each group's squared deviations / sum of (n - 1))):
// {1,2,3} adds 2 over 2 dof, {10,14} 8 over 1, {7,9} (NaN skipped) 2 over 1; {5} nothing.
TEST(Stats, PooledSpreadWeighsGroupsByDegreesOfFreedom) {
  const ibn::stats::PooledSpread s = ibn::stats::pooled_spread({{1, 2, 3}, {10, 14}, {5}, {kNaN, 7, 9}});
  EXPECT_NEAR(s.sd, std::sqrt(3.0), 1e-15);
  EXPECT_EQ(s.groups, 3);
  EXPECT_EQ(s.dof, 4);
  EXPECT_DOUBLE_EQ(s.max_range, 4.0);
  // Identical values spread by exactly 0, also where their plain mean is off in the last bit
  // ((0.1 + 0.1 + 0.1) / 3 is not 0.1); no group of two: unknown, not 0.
  EXPECT_EQ(ibn::stats::pooled_spread({{0.1, 0.1, 0.1}, {0.5, 0.5}}).sd, 0.0);
  const ibn::stats::PooledSpread none = ibn::stats::pooled_spread({{1}, {kNaN, 2}});
  EXPECT_EQ(none.groups, 0);
  EXPECT_TRUE(std::isnan(none.sd) && std::isnan(none.max_range));
}

}  // namespace
