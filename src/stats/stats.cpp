#include "ibn/stats/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <boost/math/distributions/binomial.hpp>
#include <boost/math/distributions/fisher_f.hpp>
#include <boost/math/distributions/normal.hpp>
#include <boost/math/distributions/students_t.hpp>

namespace ibn::stats {
namespace {

std::vector<double> finite(const std::vector<double>& values) {
  std::vector<double> out;
  for (const double v : values) {
    if (std::isfinite(v)) out.push_back(v);
  }
  return out;
}

double mean_of(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); }

double sample_sd(const std::vector<double>& v, double mean) {
  double ss = 0;
  for (const double x : v) ss += (x - mean) * (x - mean);
  return std::sqrt(ss / static_cast<double>(v.size() - 1));
}

// Average ranks (1-based) of |d|, ties sharing their mean rank, as scipy's rankdata.
std::vector<double> average_ranks(const std::vector<double>& magnitudes) {
  const size_t n = magnitudes.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return magnitudes[a] < magnitudes[b]; });
  std::vector<double> ranks(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && magnitudes[order[j + 1]] == magnitudes[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = (static_cast<double>(i + j) + 2.0) / 2.0;
    i = j + 1;
  }
  return ranks;
}

}  // namespace

double t_quantile(double p, double dof) {
  if (!(dof >= 1) || !(p > 0 && p < 1)) return kNaN;
  return boost::math::quantile(boost::math::students_t_distribution<double>(dof), p);
}

Interval mean_interval(const std::vector<double>& values, double lo, double hi) {
  const std::vector<double> v = finite(values);
  Interval out;
  out.n = static_cast<int64_t>(v.size());
  if (v.empty()) return out;
  out.mean = mean_of(v);
  if (v.size() < 2) return out;
  const double half = t_quantile(0.975, static_cast<double>(v.size() - 1)) * sample_sd(v, out.mean) /
                      std::sqrt(static_cast<double>(v.size()));
  out.low = std::clamp(out.mean - half, lo, hi);
  out.high = std::clamp(out.mean + half, lo, hi);
  return out;
}

double paired_t_p(const std::vector<double>& differences) {
  const std::vector<double> d = finite(differences);
  if (d.size() < 2) return kNaN;
  const double mean = mean_of(d), sd = sample_sd(d, mean);
  if (sd == 0) return mean == 0 ? kNaN : 0.0;
  const double t = mean / (sd / std::sqrt(static_cast<double>(d.size())));
  const boost::math::students_t_distribution<double> dist(static_cast<double>(d.size() - 1));
  return std::min(1.0, 2 * boost::math::cdf(boost::math::complement(dist, std::fabs(t))));
}

double wilcoxon_p(const std::vector<double>& differences) {
  std::vector<double> d;
  for (const double x : finite(differences)) {
    if (x != 0) d.push_back(x);
  }
  const size_t n = d.size();
  if (n == 0) return kNaN;
  std::vector<double> magnitudes;
  for (const double x : d) magnitudes.push_back(std::fabs(x));
  // Ties share midranks: the exact distribution below counts them as they are, the normal
  // approximation corrects its variance for them.
  const std::vector<double> ranks = average_ranks(magnitudes);
  double r_plus = 0;
  for (size_t i = 0; i < n; ++i) {
    if (d[i] > 0) r_plus += ranks[i];
  }
  const bool had_zeros = d.size() != finite(differences).size();
  if (n <= 50 && !had_zeros) {
    // Exact: every sign assignment of the (mid)ranks equally likely. Doubled midranks are
    // integers, so the null distribution of 2·R+ is a subset-sum count; without ties this is
    // the classic table, with ties the exact conditional distribution given the ties.
    std::vector<size_t> doubled;
    size_t max_sum = 0;
    for (const double rank : ranks) {
      doubled.push_back(static_cast<size_t>(std::llround(2 * rank)));
      max_sum += doubled.back();
    }
    std::vector<double> ways(max_sum + 1, 0.0);
    ways[0] = 1;
    for (const size_t rank : doubled) {
      for (size_t s = max_sum; s >= rank; --s) ways[s] += ways[s - rank];
    }
    const double total = std::ldexp(1.0, static_cast<int>(n));
    const size_t r = static_cast<size_t>(std::llround(2 * r_plus));
    if (2 * r == max_sum) return 1.0;
    double below = 0, above = 0;
    for (size_t s = 0; s <= max_sum; ++s) {
      if (s <= r) below += ways[s];
      if (s >= r) above += ways[s];
    }
    return std::min(1.0, 2 * std::min(below, above) / total);
  }
  const double count = static_cast<double>(n);
  const double r_minus = count * (count + 1) / 2 - r_plus;
  const double statistic = std::min(r_plus, r_minus);
  const double mean = count * (count + 1) / 4;
  double variance = count * (count + 1) * (2 * count + 1);
  std::vector<double> sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && sorted[j + 1] == sorted[i]) ++j;
    const double t = static_cast<double>(j - i + 1);
    if (t > 1) variance -= 0.5 * t * (t * t - 1);
    i = j + 1;
  }
  const double se = std::sqrt(variance / 24);
  if (se == 0) return kNaN;
  const double z = (statistic - mean) / se;
  return std::min(1.0, 2 * boost::math::cdf(boost::math::complement(boost::math::normal_distribution<double>(), std::fabs(z))));
}

double wilcoxon_min_p(int64_t n) { return n < 1 ? kNaN : std::min(1.0, std::ldexp(2.0, -static_cast<int>(n))); }

std::vector<double> holm(const std::vector<double>& p) {
  std::vector<size_t> order;
  for (size_t i = 0; i < p.size(); ++i) {
    if (!std::isnan(p[i])) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] < p[b]; });
  std::vector<double> adjusted(p.size(), kNaN);
  const double m = static_cast<double>(order.size());
  double running = 0;
  for (size_t rank = 0; rank < order.size(); ++rank) {
    running = std::max(running, std::min(1.0, (m - static_cast<double>(rank)) * p[order[rank]]));
    adjusted[order[rank]] = running;
  }
  return adjusted;
}

double binomial_upper_p(int64_t k, int64_t n, double p) {
  if (n < 1 || k < 0 || k > n || !(p >= 0 && p <= 1)) return kNaN;
  if (k == 0) return 1.0;
  const boost::math::binomial_distribution<double> dist(static_cast<double>(n), p);
  return boost::math::cdf(boost::math::complement(dist, static_cast<double>(k - 1)));
}

PooledSpread pooled_spread(const std::vector<std::vector<double>>& groups) {
  PooledSpread out;
  double squares = 0;
  for (const std::vector<double>& group : groups) {
    const std::vector<double> v = finite(group);
    if (v.size() < 2) continue;
    // Deviations from the group's first value, whose mean is then removed: values that are all
    // the same give exactly 0 (their plain mean can differ from them in the last bit), and
    // nearly equal values lose no digits to cancellation.
    std::vector<double> shifted;
    for (const double x : v) shifted.push_back(x - v.front());
    const double mean = mean_of(shifted);
    for (const double d : shifted) squares += (d - mean) * (d - mean);
    const auto [low, high] = std::minmax_element(v.begin(), v.end());
    out.max_range = out.groups == 0 ? *high - *low : std::max(out.max_range, *high - *low);
    out.dof += static_cast<int64_t>(v.size()) - 1;
    ++out.groups;
  }
  if (out.groups > 0) out.sd = std::sqrt(squares / static_cast<double>(out.dof));
  return out;
}

double f_quantile(double p, double d1, double d2) {
  if (!(d1 >= 1) || !(d2 >= 1) || !(p > 0 && p < 1)) return kNaN;
  return boost::math::quantile(boost::math::fisher_f_distribution<double>(d1, d2), p);
}

SpreadRatio spread_ratio(const PooledSpread& a, const PooledSpread& b) {
  SpreadRatio out;
  if (!(b.sd > 0) || std::isnan(a.sd)) return out;
  out.ratio = a.sd / b.sd;
  const double variance_ratio = out.ratio * out.ratio;
  const auto d1 = static_cast<double>(a.dof), d2 = static_cast<double>(b.dof);
  out.low = std::sqrt(variance_ratio / f_quantile(0.975, d1, d2));
  out.high = std::sqrt(variance_ratio / f_quantile(0.025, d1, d2));
  return out;
}

PairedComparison compare_paired(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isfinite(a[i]) && std::isfinite(b[i])) d.push_back(a[i] - b[i]);
  }
  PairedComparison out;
  out.pairs = static_cast<int64_t>(d.size());
  out.difference = mean_interval(d);
  out.p_t = paired_t_p(d);
  out.p_wilcoxon = wilcoxon_p(d);
  return out;
}

}  // namespace ibn::stats
