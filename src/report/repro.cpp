#include "ibn/report/repro.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "runs.h"
#include "tables.h"

namespace ibn::report {
namespace {

namespace fs = std::filesystem;

// ---- the runs -------------------------------------------------------------------------------

// Every (platform, point): its loaded run, or nothing where the point did not finish. Sized once,
// so the pointers into it that the statistics hold stay valid.
using Grid = std::vector<std::vector<std::optional<RunSummary>>>;

Grid load_grid(const std::vector<PlatformSweep>& platforms, const ReportOptions& options) {
  Grid grid(platforms.size());
  for (size_t p = 0; p < platforms.size(); ++p) {
    if (platforms[p].points.size() != platforms.front().points.size()) {
      throw std::logic_error("write_repro_report: the platforms' grids differ in size");
    }
    grid[p].resize(platforms[p].points.size());
    for (size_t i = 0; i < platforms[p].points.size(); ++i) {
      const PlatformPoint& point = platforms[p].points[i];
      if (point.id != platforms.front().points[i].id) throw std::logic_error("write_repro_report: the platforms' grids differ");
      if (point.missing.empty()) grid[p][i] = load_run(point.run, options);
    }
  }
  return grid;
}

// Whether a run's values enter the spreads: finished, and unflagged unless flagged runs are kept.
bool used(const std::optional<RunSummary>& run, const ReportOptions& options) {
  return run && (options.include_flagged || run->flags.empty());
}

// ---- the quantities -------------------------------------------------------------------------

struct ReproQuantity {
  std::string symbol;     // test_accuracy, test_loss, I_XT, I_TY, I_TY_chain, I_prev_chain, IB_chain, kappa
  std::string estimator;  // canonical spec; empty for the metrics and κ
  std::string layer;      // the analyzed layer or normalization site; empty for the others
  std::string label;      // for people
  std::function<double(const RunSummary&)> of;
};

const analysis::AnalysisRow* row_at(const analysis::Analysis& a, int64_t epoch, const std::string& layer, const std::string& estimator) {
  for (const analysis::AnalysisRow& row : a.rows) {
    if (row.epoch == epoch && row.layer == layer && row.estimator == estimator) return &row;
  }
  return nullptr;
}

double row_value(const RunSummary& r, const std::string& layer, const std::string& estimator, double analysis::AnalysisRow::*field) {
  const analysis::AnalysisRow* row = row_at(r.analysis, r.final_epoch, layer, estimator);
  return row == nullptr ? kNaN : row->*field;
}

double total_value(const RunSummary& r, const std::string& estimator, double analysis::ChainTotal::*field) {
  for (const analysis::ChainTotal& t : r.final_totals) {
    if (t.estimator == estimator) return t.*field;
  }
  return kNaN;
}

double site_kappa(const RunSummary& r, const std::string& site) {
  for (const auto& [name, value] : r.site_kappas) {
    if (name == site) return value;
  }
  return kNaN;
}

// An estimator's name in the tables: its short name ("binning") where no other estimator of the
// analysis has it, else its whole canonical spec.
std::string estimator_name(const std::vector<std::string>& estimators, const std::string& estimator) {
  const auto short_of = [](const std::string& spec) { return spec.substr(0, spec.find(':')); };
  const auto same = std::count_if(estimators.begin(), estimators.end(), [&](const std::string& e) { return short_of(e) == short_of(estimator); });
  return same > 1 ? estimator : short_of(estimator);
}

// Every quantity the report compares, as the first finished run holds them (the platforms ran
// one grid analyzed alike, so every run holds the same ones).
std::vector<ReproQuantity> quantities_of(const RunSummary& first) {
  std::vector<ReproQuantity> q{
      {"test_accuracy", "", "", "test accuracy", [](const RunSummary& r) { return r.test_accuracy(); }},
      {"test_loss", "", "", "test loss (nats)", [](const RunSummary& r) { return r.test_loss(); }}};
  const analysis::Analysis& a = first.analysis;
  for (const std::string& e : a.estimators) {
    const std::string name = estimator_name(a.estimators, e);
    for (const std::string& layer : a.layers) {
      q.push_back({"I_XT", e, layer, fmt::format("I(X;T) {} · {}", layer, name),
                   [=](const RunSummary& r) { return row_value(r, layer, e, &analysis::AnalysisRow::i_xt); }});
      q.push_back({"I_TY", e, layer, fmt::format("I(T;Y) {} · {}", layer, name),
                   [=](const RunSummary& r) { return row_value(r, layer, e, &analysis::AnalysisRow::i_ty); }});
    }
    q.push_back({"I_TY_chain", e, "", fmt::format("Σ_l I(T_l;Y) · {}", name),
                 [=](const RunSummary& r) { return total_value(r, e, &analysis::ChainTotal::i_ty); }});
    q.push_back({"I_prev_chain", e, "", fmt::format("Σ_l I(T_(l−1);T_l) · {}", name),
                 [=](const RunSummary& r) { return total_value(r, e, &analysis::ChainTotal::i_prev); }});
    q.push_back({"IB_chain", e, "", fmt::format("Σ_l IB_l (β = {}) · {}", a.beta, name),
                 [=](const RunSummary& r) { return total_value(r, e, &analysis::ChainTotal::ib); }});
  }
  for (const auto& [site, value] : first.site_kappas) {
    q.push_back({"kappa", "", site, fmt::format("κ {}", site), [site = site](const RunSummary& r) { return site_kappa(r, site); }});
  }
  return q;
}

// ---- bit-identity ---------------------------------------------------------------------------

bool same_bits(double a, double b) {
  uint64_t x = 0, y = 0;
  std::memcpy(&x, &a, sizeof x);
  std::memcpy(&y, &b, sizeof y);
  return x == y;
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](double x, double y) { return same_bits(x, y); });
}

// Whether two runs' results are the same to the bit: every metric at every epoch, every analysis
// row (I(X;T), I(T;Y), I(T_(l−1);T_l), IB, nuisance ratio, κ at every analyzed epoch and layer),
// every chain total and the κ of every normalization site.
bool runs_bit_identical(const RunSummary& a, const RunSummary& b) {
  const Curves &x = a.curves, &y = b.curves;
  if (!same_bits(x.epoch, y.epoch) || !same_bits(x.train_loss, y.train_loss) || !same_bits(x.train_accuracy, y.train_accuracy) ||
      !same_bits(x.test_loss, y.test_loss) || !same_bits(x.test_accuracy, y.test_accuracy)) {
    return false;
  }
  const auto& ra = a.analysis.rows;
  const auto& rb = b.analysis.rows;
  if (ra.size() != rb.size()) return false;
  for (size_t k = 0; k < ra.size(); ++k) {
    if (ra[k].epoch != rb[k].epoch || ra[k].layer != rb[k].layer || ra[k].estimator != rb[k].estimator) return false;
    for (const auto field : {&analysis::AnalysisRow::i_xt, &analysis::AnalysisRow::i_ty, &analysis::AnalysisRow::i_prev,
                             &analysis::AnalysisRow::ib, &analysis::AnalysisRow::nuisance_ratio, &analysis::AnalysisRow::kappa}) {
      if (!same_bits(ra[k].*field, rb[k].*field)) return false;
    }
  }
  const auto& ta = a.analysis.totals;
  const auto& tb = b.analysis.totals;
  if (ta.size() != tb.size()) return false;
  for (size_t k = 0; k < ta.size(); ++k) {
    if (!same_bits(ta[k].i_ty, tb[k].i_ty) || !same_bits(ta[k].i_prev, tb[k].i_prev) || !same_bits(ta[k].ib, tb[k].ib)) return false;
  }
  if (a.site_kappas.size() != b.site_kappas.size()) return false;
  for (size_t k = 0; k < a.site_kappas.size(); ++k) {
    if (a.site_kappas[k].first != b.site_kappas[k].first || !same_bits(a.site_kappas[k].second, b.site_kappas[k].second)) return false;
  }
  return true;
}

// Whether a quantity is bit-identical between platforms a and b at every point: every point
// finished on both (flagged or not: identity is about the arithmetic, not the run's validity).
bool quantity_identical(const ReproQuantity& q, const Grid& grid, size_t a, size_t b) {
  for (size_t i = 0; i < grid[a].size(); ++i) {
    if (!grid[a][i] || !grid[b][i] || !same_bits(q.of(*grid[a][i]), q.of(*grid[b][i]))) return false;
  }
  return true;
}

// The platforms in groups whose quantity is bit-identical at every point (equality of bits is
// transitive, so the groups are well defined); only groups of two or more.
std::vector<std::vector<size_t>> identical_groups(const ReproQuantity& q, const Grid& grid) {
  std::vector<std::vector<size_t>> groups;
  std::vector<bool> placed(grid.size(), false);
  for (size_t a = 0; a < grid.size(); ++a) {
    if (placed[a]) continue;
    std::vector<size_t> group{a};
    for (size_t b = a + 1; b < grid.size(); ++b) {
      if (!placed[b] && quantity_identical(q, grid, a, b)) {
        group.push_back(b);
        placed[b] = true;
      }
    }
    if (group.size() > 1) groups.push_back(group);
  }
  return groups;
}

// ---- the spreads ----------------------------------------------------------------------------

struct Spread {
  double mean = kNaN;  // over every value the spreads use
  int64_t values = 0;
  int64_t non_finite = 0;  // values of used runs left out as NaN or infinite
  stats::PooledSpread platforms, seeds;
  std::vector<std::vector<size_t>> identical;  // identical_groups
};

// Platforms counted in the spreads: every one but the reruns.
bool counts_as_platform(const PlatformSweep& p) { return p.platform.rerun_of.empty(); }

Spread spread_of(const ReproQuantity& q, const std::vector<PlatformSweep>& platforms, const Grid& grid, const ReportOptions& options) {
  Spread s;
  const size_t points = platforms.front().points.size();
  std::vector<std::vector<double>> per_point(points);
  std::map<std::pair<size_t, std::string>, std::vector<double>> per_setting;  // (platform, setting) -> one value per seed
  double sum = 0;
  for (size_t p = 0; p < platforms.size(); ++p) {
    if (!counts_as_platform(platforms[p])) continue;
    for (size_t i = 0; i < points; ++i) {
      if (!used(grid[p][i], options)) continue;
      const double v = q.of(*grid[p][i]);
      if (!std::isfinite(v)) {
        ++s.non_finite;
        continue;
      }
      per_point[i].push_back(v);
      per_setting[{p, setting_label(platforms[p].points[i].run.settings)}].push_back(v);
      sum += v;
      ++s.values;
    }
  }
  if (s.values > 0) s.mean = sum / static_cast<double>(s.values);
  // Platforms that give a point the same bits (t2 = t1 for some runs) count as separate values
  // here, as the seed groups of those platforms do: both degrees of freedom are inflated alike,
  // and the ratio's interval is approximate (stated in the report).
  s.platforms = stats::pooled_spread(per_point);
  std::vector<std::vector<double>> seed_groups;
  for (auto& [key, values] : per_setting) seed_groups.push_back(std::move(values));
  s.seeds = stats::pooled_spread(seed_groups);
  s.identical = identical_groups(q, grid);
  return s;
}

// Spreads at most this fraction of the mean's magnitude are rounding: the last bits of double
// sums taken in another order (a binned I(T;Y) at H(Y) moves by 1e-16 between platforms), not
// runs that differ. Neither spread is then called the larger.
constexpr double kRoundingLevel = 1e-12;

bool at_rounding_level(const Spread& s) {
  return std::max(s.platforms.sd, s.seeds.sd) <= kRoundingLevel * std::abs(s.mean);
}

// "platforms" when the spread across platforms is larger than that across seeds beyond chance
// (the 95 % F interval of their ratio lies above 1, or the seeds agreed to the bit), "seeds"
// when it lies below 1 (or the platforms agreed to the bit), "neither" when it spans 1, "rounding" when both spreads are at
// the rounding level, "" when either is unknown.
std::string larger_spread(const Spread& s) {
  if (std::isnan(s.platforms.sd) || std::isnan(s.seeds.sd)) return "";
  if (at_rounding_level(s)) return "rounding";
  if (s.platforms.sd == 0) return "seeds";
  if (s.seeds.sd == 0) return "platforms";
  const stats::SpreadRatio r = stats::spread_ratio(s.platforms, s.seeds);
  if (r.low > 1) return "platforms";
  if (r.high < 1) return "seeds";
  return "neither";
}

// The spread across platforms as a multiple of that across seeds, with its 95 % interval; NaN
// where either is unknown, or the seeds did not spread beyond the rounding level.
stats::SpreadRatio ratio_of(const Spread& s) {
  return s.seeds.sd > 0 && !at_rounding_level(s) ? stats::spread_ratio(s.platforms, s.seeds) : stats::SpreadRatio{};
}
double spread_ratio(const Spread& s) { return ratio_of(s).ratio; }

// ---- pairs of platforms ---------------------------------------------------------------------

struct PairResult {
  size_t a = 0, b = 0;
  int64_t compared = 0, identical_runs = 0;  // points finished on both; of them, runs identical to the bit
  int64_t same_quantities = 0;               // of them, runs whose every quantity is identical (the rest may differ)
  std::vector<std::string> same_settings;    // settings whose every run has every quantity identical
  size_t identical_quantities = 0;           // quantities identical at every point
  double largest_relative = 0;               // max |x − y| / max(|x|, |y|) over quantities and points
  std::string largest_quantity;
};

// How many of threads, dtype and device two platforms set differently.
int settings_apart(const sweep::Platform& a, const sweep::Platform& b) {
  return (a.threads != b.threads) + (a.dtype != b.dtype) + (a.device != b.device);
}

// Each platform against the first; then, of the other pairs, each that differs in one setting
// alone (t2-fp64 against t1-fp64: the threads; against t2-fp32: the dtype) and each rerun
// against the platform it repeats.
std::vector<std::pair<size_t, size_t>> pairs_to_compare(const std::vector<PlatformSweep>& platforms) {
  std::vector<std::pair<size_t, size_t>> pairs;
  for (size_t p = 1; p < platforms.size(); ++p) pairs.emplace_back(0, p);
  for (size_t a = 1; a < platforms.size(); ++a) {
    for (size_t b = a + 1; b < platforms.size(); ++b) {
      const sweep::Platform &x = platforms[a].platform, &y = platforms[b].platform;
      const bool rerun = y.rerun_of == x.name || x.rerun_of == y.name;
      const bool one_apart = x.rerun_of.empty() && y.rerun_of.empty() && settings_apart(x, y) == 1;
      if (rerun || one_apart) pairs.emplace_back(a, b);
    }
  }
  return pairs;
}

PairResult compare_pair(size_t a, size_t b, const Grid& grid, const std::vector<ReproQuantity>& quantities) {
  PairResult r;
  r.a = a;
  r.b = b;
  std::vector<std::string> settings;  // in order of first appearance
  std::map<std::string, bool> all_same;
  for (size_t i = 0; i < grid[a].size(); ++i) {
    if (!grid[a][i] || !grid[b][i]) continue;
    ++r.compared;
    r.identical_runs += runs_bit_identical(*grid[a][i], *grid[b][i]);
    bool same = true;
    for (const ReproQuantity& q : quantities) {
      const double x = q.of(*grid[a][i]), y = q.of(*grid[b][i]);
      same = same && same_bits(x, y);
      const double scale = std::max(std::abs(x), std::abs(y));
      if (!std::isfinite(x) || !std::isfinite(y) || scale == 0) continue;
      const double relative = std::abs(x - y) / scale;
      if (relative > r.largest_relative) {
        r.largest_relative = relative;
        r.largest_quantity = q.label;
      }
    }
    r.same_quantities += same;
    const auto [entry, first_seen] = all_same.emplace(setting_label(grid[a][i]->settings), true);
    if (first_seen) settings.push_back(entry->first);
    entry->second = entry->second && same;
  }
  for (const std::string& setting : settings) {
    if (all_same[setting]) r.same_settings.push_back(setting);
  }
  for (const ReproQuantity& q : quantities) r.identical_quantities += quantity_identical(q, grid, a, b);
  return r;
}

// ---- formatting -----------------------------------------------------------------------------

std::string exact(double v) { return std::isnan(v) ? "nan" : fmt::format("{:.17g}", v); }

std::string short_number(double v) { return std::isnan(v) ? "—" : fmt::format("{:.4g}", v); }

// "0.0123 (1.3 %)": a spread and its share of the mean's magnitude.
std::string with_percent(double sd, double mean) {
  if (std::isnan(sd)) return "—";
  if (!(std::abs(mean) > 0)) return fmt::format("{:.3g}", sd);
  return fmt::format("{:.3g} ({:.3g} %)", sd, 100 * sd / std::abs(mean));
}

std::string percent_of(double sd, double mean) { return std::abs(mean) > 0 && !std::isnan(sd) ? exact(100 * sd / std::abs(mean)) : "nan"; }

std::string group_names(const std::vector<std::vector<size_t>>& groups, const std::vector<PlatformSweep>& platforms, const char* equals,
                        const char* between) {
  std::vector<std::string> parts;
  for (const std::vector<size_t>& group : groups) {
    std::vector<std::string> names;
    for (const size_t p : group) names.push_back(platforms[p].platform.name);
    parts.push_back(fmt::format("{}", fmt::join(names, equals)));
  }
  return fmt::format("{}", fmt::join(parts, between));
}

// The distinct values of one recorded setting over a platform's finished runs, "a | b".
std::string recorded(const std::vector<std::optional<RunSummary>>& runs, std::string RunSummary::*field) {
  std::set<std::string> values;
  for (const auto& r : runs) {
    if (r) values.insert((*r).*field);
  }
  return values.empty() ? "—" : fmt::format("{}", fmt::join(values, " | "));
}

struct Counts {
  int64_t finished = 0, missing = 0;
  int64_t flagged = 0;  // finished with a validity flag: left out of the spreads unless include-flagged keeps them
};

Counts counts_of(const std::vector<std::optional<RunSummary>>& runs) {
  Counts c;
  for (const auto& run : runs) {
    if (!run) {
      ++c.missing;
      continue;
    }
    ++c.finished;
    c.flagged += !run->flags.empty();
  }
  return c;
}

// "2 flagged" and, where include-flagged keeps them in the spreads, " (kept)".
std::string flagged_cell(int64_t flagged, const ReportOptions& options) {
  return flagged > 0 && options.include_flagged ? fmt::format("{} (kept)", flagged) : std::to_string(flagged);
}

// ---- repro.md -------------------------------------------------------------------------------

struct Context {
  std::string experiment;
  const std::vector<PlatformSweep>* platforms = nullptr;
  const Grid* grid = nullptr;
  ReportOptions options;
  std::vector<ReproQuantity> quantities;
  std::vector<Spread> spreads;
  std::vector<PairResult> pairs;
  const RunSummary* first = nullptr;
};

std::string platform_list(const Context& c, bool with_reruns) {
  std::vector<std::string> names;
  for (const PlatformSweep& p : *c.platforms) {
    if (with_reruns || counts_as_platform(p)) names.push_back(p.platform.name);
  }
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string pair_sentence(const Context& c, const PairResult& r) {
  // The rerun, when the pair has one, is the subject: "X-rerun reproduced X".
  const bool a_is_rerun = (*c.platforms)[r.a].platform.rerun_of == (*c.platforms)[r.b].platform.name;
  const std::string& a = (*c.platforms)[a_is_rerun ? r.b : r.a].platform.name;
  const std::string& b = (*c.platforms)[a_is_rerun ? r.a : r.b].platform.name;
  const bool rerun = a_is_rerun || (*c.platforms)[r.b].platform.rerun_of == a;
  if (r.compared == 0) return fmt::format("{} against {}: no point finished on both", b, a);
  if (r.identical_runs == r.compared) {
    return fmt::format("{} {} {} bit for bit: all {} runs identical (every metric at every epoch, every analysis row, every κ)", b,
                       rerun ? "reproduced" : "matched", a, r.compared);
  }
  const std::string same = r.same_quantities == 0 ? ""
                           : fmt::format(" (every quantity identical in {} of them{})", r.same_quantities,
                                         r.same_settings.empty() ? "" : fmt::format(": all runs of {}", fmt::join(r.same_settings, ", ")));
  return fmt::format("{} against {}: {} of {} runs bit-identical{}, {} of {} quantities identical at every point; the largest "
                     "relative difference is {:.2g} ({})",
                     b, a, r.identical_runs, r.compared, same, r.identical_quantities, c.quantities.size(), r.largest_relative,
                     r.largest_quantity);
}

std::string findings_section(const Context& c) {
  std::string md = "## Findings\n\n";
  std::vector<std::string> exceed;
  size_t known = 0;
  for (size_t k = 0; k < c.quantities.size(); ++k) {
    const std::string larger = larger_spread(c.spreads[k]);
    known += !larger.empty();
    if (larger == "platforms") exceed.push_back(c.quantities[k].label);
  }
  std::vector<double> ratios;
  for (const Spread& s : c.spreads) {
    if (std::isfinite(spread_ratio(s))) ratios.push_back(spread_ratio(s));
  }
  if (!ratios.empty()) {
    std::sort(ratios.begin(), ratios.end());
    const size_t n = ratios.size();
    const double median = n % 2 == 1 ? ratios[n / 2] : (ratios[n / 2 - 1] + ratios[n / 2]) / 2;
    md += fmt::format("- The spread across platforms was {:.2f} to {:.2f} times the spread across seeds (median {:.2f}), over the {} "
                      "quantities whose seeds spread beyond rounding.\n", ratios.front(), ratios.back(), median, n);
  }
  size_t seeds_larger = 0, neither = 0;
  int64_t non_finite = 0;
  for (const Spread& s : c.spreads) {
    seeds_larger += larger_spread(s) == "seeds";
    neither += larger_spread(s) == "neither";
    non_finite += s.non_finite;
  }
  const std::string test = "the 95 % interval of the ratio of the two spreads (F distribution over their pooled degrees of "
                           "freedom) above 1";
  if (exceed.empty()) {
    md += fmt::format("- **Platforms did not disagree more than seeds** for any of the {} quantities whose two spreads are known "
                      "(of {}; \"more\": {}).\n", known, c.quantities.size(), test);
  } else {
    md += fmt::format("- **Platforms disagreed more than seeds** for {} of the {} quantities whose two spreads are known (of {}; "
                      "\"more\": {}): {}.\n", exceed.size(), known, c.quantities.size(), test, fmt::join(exceed, "; "));
  }
  md += fmt::format("- Seeds spread more than platforms (the interval below 1, or platforms identical to the bit) for {}; the "
                    "interval spans 1 for {}: there the data cannot tell which spread is larger.\n", seeds_larger, neither);
  if (non_finite > 0) {
    md += fmt::format("- {} values of used runs were NaN or infinite and are left out of the spreads.\n", non_finite);
  }
  for (const PairResult& r : c.pairs) md += "- " + pair_sentence(c, r) + ".\n";
  int64_t missing = 0, flagged = 0;
  for (const auto& runs : *c.grid) {
    const Counts n = counts_of(runs);
    missing += n.missing;
    flagged += n.flagged;
  }
  const int64_t left_out = missing + (c.options.include_flagged ? 0 : flagged);
  if (left_out == 0) {
    md += fmt::format("- No run was left out: every point finished on every platform{}.\n",
                      flagged == 0 ? ", and none was flagged" : fmt::format("; {} flagged runs are kept (include-flagged)", flagged));
  } else {
    const std::string who = c.options.include_flagged ? "the runs that did not finish are" : missing > 0 && flagged > 0 ? "both are" : "they are";
    md += fmt::format("- {} runs did not finish and {} were flagged{}; {} left out of the spreads (see Runs left out).\n", missing,
                      flagged, c.options.include_flagged ? " (kept: include-flagged)" : "", who);
  }
  return md + "\n";
}

std::string platforms_section(const Context& c) {
  std::vector<std::vector<std::string>> rows;
  for (size_t p = 0; p < c.platforms->size(); ++p) {
    const PlatformSweep& s = (*c.platforms)[p];
    const auto& runs = (*c.grid)[p];
    const Counts n = counts_of(runs);
    rows.push_back({s.platform.name + (s.platform.rerun_of.empty() ? "" : " (rerun of " + s.platform.rerun_of + ")"),
                    s.platform.settings(), recorded(runs, &RunSummary::threads), recorded(runs, &RunSummary::dtype),
                    recorded(runs, &RunSummary::device), recorded(runs, &RunSummary::torch_version),
                    fmt::format("{} of {}", n.finished, runs.size()), flagged_cell(n.flagged, c.options)});
  }
  return "## Platforms\n\nEach platform ran the whole grid as a sweep of its own (`platforms/NAME/`, its experiment file "
         "`platforms/NAME.ini`). The settings asked for, and those its runs recorded (config and store):\n\n" +
         markdown_table({"platform", "asked for", "threads", "dtype", "device", "LibTorch", "runs finished", "flagged"}, rows) + "\n";
}

std::string ratio_cell(const stats::SpreadRatio& r) {
  if (std::isnan(r.ratio)) return "—";
  if (std::isnan(r.low)) return fmt::format("{:.2f}", r.ratio);
  return fmt::format("{:.2f} [{:.2f}, {:.2f}]", r.ratio, r.low, r.high);
}

std::string spread_section(const Context& c) {
  std::vector<std::vector<std::string>> rows;
  for (size_t k = 0; k < c.quantities.size(); ++k) {
    const Spread& s = c.spreads[k];
    const std::string larger = larger_spread(s);
    rows.push_back({c.quantities[k].label, short_number(s.mean), with_percent(s.platforms.sd, s.mean),
                    short_number(s.platforms.max_range), std::to_string(s.platforms.groups), with_percent(s.seeds.sd, s.mean),
                    std::to_string(s.seeds.groups), ratio_cell(ratio_of(s)),
                    larger == "platforms" ? "**platforms**" : larger.empty() ? "—" : larger,
                    s.identical.empty() ? "none" : group_names(s.identical, *c.platforms, " = ", "; ")});
  }
  return fmt::format(
      "## Spread across platforms and across seeds\n\n"
      "Per quantity, at the last analyzed epoch (epoch {}): the mean over the runs used; the standard deviation across the "
      "platforms ({}) per grid point, pooled over the points (and the largest range max − min at one point); the standard "
      "deviation across seeds per platform and setting, pooled over those groups; both also as a % of the mean's magnitude, "
      "and the first as a multiple of the second (*platforms ÷ seeds*) with its 95 % interval (F distribution with the two "
      "pooled degrees of freedom, assuming normal values within a group; approximate, since both spreads come from the same runs "
      "and platforms that agree to the bit at a point count as separate values, on both sides). *larger*: **platforms** where "
      "the interval lies above 1, *seeds* where it lies below 1, *neither* where it spans 1 (the data cannot tell the two "
      "spreads apart); spreads within {:g} of the mean are *rounding*. *bit-identical* lists "
      "the platforms whose value is the same to the bit at every point (every run finished on both).\n\n",
      c.first->final_epoch, platform_list(c, false), kRoundingLevel) +
         markdown_table({"quantity", "mean", "SD across platforms (% of mean)", "largest range", "points",
                         "SD across seeds (% of mean)", "groups", "platforms ÷ seeds", "larger", "bit-identical"},
                        rows) +
         "\nNumbers to 17 digits: `repro.csv`; every run's value: `repro_values.csv`.\n\n";
}

std::string pairs_section(const Context& c) {
  std::vector<std::vector<std::string>> rows;
  for (const PairResult& r : c.pairs) {
    rows.push_back({fmt::format("{} vs {}", (*c.platforms)[r.b].platform.name, (*c.platforms)[r.a].platform.name),
                    std::to_string(r.compared), fmt::format("{} of {}", r.identical_runs, r.compared),
                    fmt::format("{} of {}", r.same_quantities, r.compared), fmt::format("{} of {}", r.identical_quantities, c.quantities.size()),
                    r.largest_relative == 0 ? "0" : fmt::format("{:.2g} ({})", r.largest_relative, r.largest_quantity)});
  }
  return "## Bit-identical results\n\nA run is bit-identical to another when every metric at every epoch (train and test loss "
         "and accuracy), every analysis row (I(X;T), I(T;Y), I(T_(l−1);T_l), IB, nuisance ratio and κ at every analyzed epoch and "
         "layer), every chain total and the κ of every normalization site are the same doubles; a run can differ in the nuisance "
         "ratio or at an earlier epoch and still have every quantity of the tables identical. A quantity is identical when it is "
         "so at every point. The relative difference of two values is |a − b| / max(|a|, |b|).\n\n" +
         markdown_table({"platforms", "points on both", "runs bit-identical", "runs with every quantity identical",
                         "quantities identical", "largest relative difference"},
                        rows) + "\n";
}

std::string left_out_section(const Context& c) {
  std::string md = "## Runs left out\n\n";
  size_t listed = 0;
  for (size_t p = 0; p < c.platforms->size(); ++p) {
    const PlatformSweep& s = (*c.platforms)[p];
    for (size_t i = 0; i < s.points.size(); ++i) {
      const auto& run = (*c.grid)[p][i];
      std::string why;
      if (!run) why = s.points[i].missing;
      else if (!used(run, c.options)) why = fmt::format("flagged {}", fmt::join(run->flags, ", "));
      if (why.empty()) continue;
      md += fmt::format("- {} / {}: {}\n", s.platform.name, s.points[i].id, why);
      ++listed;
    }
  }
  if (listed == 0) {
    md += c.options.include_flagged ? "None: every point finished on every platform, and flagged runs are kept (include-flagged).\n"
                                    : "None: every point finished on every platform, and no run was flagged.\n";
  }
  return md + "\n";
}

std::string method_section(const Context& c) {
  const RunSummary& first = *c.first;
  std::string md = "## What was run\n\n";
  md += fmt::format("- experiment: `{}`, {} grid points per platform; data `{}`, model `{}`\n", c.experiment,
                    c.platforms->front().points.size(), first.data, first.model);
  md += fmt::format("- platforms: {}; the spreads use {} (a rerun repeats a platform to show whether it reproduces itself, "
                    "and would only add a copy of its values)\n", platform_list(c, true), platform_list(c, false));
  md += fmt::format("- estimators: {}; β = {}; {}; chain {}\n", fmt::join(first.analysis.estimators, ", "), first.analysis.beta,
                    first.analysis.units, fmt::join(first.analysis.chain, " → "));
  md += "- spread: the pooled standard deviation √(Σ_g Σ_i (x_gi − mean_g)² / Σ_g (n_g − 1)) over groups of at least two values: "
        "across platforms a group is one grid point (a setting and a seed) on every platform, across seeds one setting on one "
        "platform; *points* and *groups* count the groups that entered. Both are estimates from few values: their ratio's interval, "
        "not the ratio alone, says whether one is larger.\n";
  md += fmt::format("- validity flags (as `ibn report`): {}. Flagged runs are {} the spreads{}; failed runs are left out; both "
                    "are counted. Bit-identity is judged on every finished run.\n", flag_rules(c.options),
                    c.options.include_flagged ? "kept in" : "left out of", c.options.include_flagged ? " (include-flagged)" : "");
  if (!first.config.empty()) md += "\nTraining options of the first run of the first platform:\n\n```ini\n" + first.config + "```\n";
  return md + "\n";
}

// ---- the data files -------------------------------------------------------------------------

std::string summary_csv(const Context& c) {
  std::string csv = csv_line({"quantity", "estimator", "layer", "label", "mean", "values", "platform_sd", "platform_sd_percent",
                              "platform_max_range", "platform_points", "platform_dof", "seed_sd", "seed_sd_percent", "seed_groups",
                              "seed_dof", "ratio", "ratio_low", "ratio_high", "larger", "bit_identical"});
  for (size_t k = 0; k < c.quantities.size(); ++k) {
    const ReproQuantity& q = c.quantities[k];
    const Spread& s = c.spreads[k];
    csv += csv_line({q.symbol, q.estimator, q.layer, q.label, exact(s.mean), std::to_string(s.values), exact(s.platforms.sd),
                     percent_of(s.platforms.sd, s.mean), exact(s.platforms.max_range), std::to_string(s.platforms.groups),
                     std::to_string(s.platforms.dof), exact(s.seeds.sd), percent_of(s.seeds.sd, s.mean), std::to_string(s.seeds.groups),
                     std::to_string(s.seeds.dof), exact(spread_ratio(s)), exact(ratio_of(s).low), exact(ratio_of(s).high), larger_spread(s), group_names(s.identical, *c.platforms, "=", ";")});
  }
  return csv;
}

std::string values_csv(const Context& c) {
  std::string csv = csv_line({"quantity", "estimator", "layer", "platform", "point", "setting", "seed", "value", "flags", "used"});
  for (size_t p = 0; p < c.platforms->size(); ++p) {
    const PlatformSweep& s = (*c.platforms)[p];
    for (size_t i = 0; i < s.points.size(); ++i) {
      const auto& run = (*c.grid)[p][i];
      if (!run) continue;
      const std::string flags = fmt::format("{}", fmt::join(run->flags, " "));
      const bool in_spreads = used(run, c.options) && counts_as_platform(s);
      for (const ReproQuantity& q : c.quantities) {
        csv += csv_line({q.symbol, q.estimator, q.layer, s.platform.name, s.points[i].id, setting_label(s.points[i].run.settings),
                         std::to_string(run->seed), exact(q.of(*run)), flags, in_spreads ? "1" : "0"});
      }
    }
  }
  return csv;
}

}  // namespace

std::string write_repro_report(const std::string& out, const std::vector<PlatformSweep>& platforms, const std::string& experiment,
                               const ReportOptions& options, std::ostream& log) {
  options.check();
  if (platforms.empty() || platforms.front().points.empty()) throw UsageError(fmt::format("'{}': no platform ran any point", out));
  const Grid grid = load_grid(platforms, options);
  std::vector<const RunSummary*> finished;
  for (const auto& runs : grid) {
    for (const auto& r : runs) {
      if (r) finished.push_back(&*r);
    }
  }
  if (finished.empty()) throw DataError(fmt::format("'{}': no run finished on any platform; nothing to compare", out));
  check_analyzed_alike(finished);

  Context c;
  c.experiment = experiment;
  c.platforms = &platforms;
  c.grid = &grid;
  c.options = options;
  c.first = finished.front();
  c.quantities = quantities_of(*c.first);
  for (const ReproQuantity& q : c.quantities) c.spreads.push_back(spread_of(q, platforms, grid, options));
  for (const auto& [a, b] : pairs_to_compare(platforms)) c.pairs.push_back(compare_pair(a, b, grid, c.quantities));

  std::string md = fmt::format("# Reproducibility across platforms: {}\n\n", fs::path(experiment).filename().string());
  md += fmt::format("The grid of `{}` ({} points) on {} platforms: {}. Does a result move more between platforms than between "
                    "seeds, and which results are the same to the bit?\n\n",
                    experiment, platforms.front().points.size(), platforms.size(), platform_list(c, true));
  md += findings_section(c) + platforms_section(c) + spread_section(c) + pairs_section(c) + left_out_section(c) + method_section(c);
  fs::create_directories(out);
  io::write_files_atomically({{out + "/repro.csv", summary_csv(c)}, {out + "/repro_values.csv", values_csv(c)}, {out + "/repro.md", md}});
  size_t exceed = 0;
  for (const Spread& s : c.spreads) exceed += larger_spread(s) == "platforms";
  log << fmt::format("repro: {} platforms, {} quantities; platforms disagree more than seeds for {}\n", platforms.size(),
                     c.quantities.size(), exceed);
  for (const PairResult& r : c.pairs) log << "  " << pair_sentence(c, r) << "\n";
  return out + "/repro.md";
}

}  // namespace ibn::report
