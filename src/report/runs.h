#pragma once
// What a report knows about its runs (internal to src/report/): each run's metrics and
// parameters from its activation store, its analysis (analysis.h5), its validity flags; the
// settings the runs group into; the statistics of a quantity over a setting's runs.
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "ibn/analysis/analyze.h"
#include "ibn/report/report.h"
#include "ibn/stats/stats.h"

namespace ibn::report {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Curves {
  std::vector<double> epoch, train_loss, train_accuracy, test_loss, test_accuracy;
};

struct RunSummary {
  std::string dir;
  std::vector<std::pair<std::string, std::string>> settings;  // grid key -> value (seed included)
  int64_t seed = 0;
  // From the store's attributes: what was run, exactly.
  std::string data, model, norm_spec, norm_description, config;
  std::string lr;  // the learning rate it trained at, from its config
  std::string threads, dtype;          // the CPU threads and dtype it trained with, from its config
  std::string device, torch_version;   // where it trained and under which LibTorch, from the store's attributes
  int64_t test_predictions = 0;
  double majority_rate = kNaN;
  Curves curves;
  analysis::Analysis analysis;
  int64_t final_epoch = 0;                        // the last analyzed epoch
  std::vector<analysis::ChainTotal> final_totals;  // per estimator, at final_epoch
  double kappa = kNaN, nuisance = kNaN;            // mean κ over norm sites; nuisance of the last hidden layer
  std::vector<std::pair<std::string, double>> site_kappas;  // κ of each normalization site at final_epoch
  // Validity (SPEC §3): `chance` when the test accuracy is not significantly above the
  // majority rate (one-sided binomial), `unconverged` when the training loss moved more than
  // the tolerance over the last 10 % of epochs.
  double chance_p = kNaN, loss_moved = kNaN;
  int64_t loss_window_start = 0;
  std::vector<std::string> flags;
  double test_accuracy() const { return curves.test_accuracy.empty() ? kNaN : curves.test_accuracy.back(); }
  double test_loss() const { return curves.test_loss.empty() ? kNaN : curves.test_loss.back(); }
  // The generalization gap at the last epoch, both positive when the model fits its training
  // samples better than the test samples (train accuracy and loss are evaluated after the epoch,
  // in evaluation mode, on the same fixed subset every epoch).
  double accuracy_gap() const { return curves.train_accuracy.empty() ? kNaN : curves.train_accuracy.back() - test_accuracy(); }
  double loss_gap() const { return curves.train_loss.empty() ? kNaN : test_loss() - curves.train_loss.back(); }
};

// The validity flags' rules at these options, for the reports to state: "`chance` when ...;
// `unconverged` when ...".
std::string flag_rules(const ReportOptions& options);

// Reads a run (its activations.h5 and analysis.h5) and sets its flags.
RunSummary load_run(const ReportRun& run, const ReportOptions& options);

// ibn::DataError unless every run was analyzed alike (estimators, chain, split, samples, β):
// their numbers could not be compared otherwise.
void check_analyzed_alike(const std::vector<const RunSummary*>& runs);

struct Setting {
  std::string label;       // "ibnorm-s λ=0.5" or "ibnorm-s κ=0.5", plus other grid keys than norm, λ, κ and seed
  std::string variant;     // the grid's norm (a single run: its norm spec)
  double lambda = kNaN;    // the grid's λ; NaN where λ does not apply
  double kappa = kNaN;     // the grid's target κ (λ chosen to reach it); NaN where not given
  std::vector<const RunSummary*> runs;  // every seed
  std::vector<const RunSummary*> used;  // those the comparisons use (unflagged, unless included)
};

// A setting's name in the tables: "ibnorm-s λ=0.5", "ibnorm-t κ=0.4 model=mlp"; ignores the seed.
std::string setting_label(const std::vector<std::pair<std::string, std::string>>& settings);

// The runs grouped by their settings except the seed, in order of first appearance.
std::vector<Setting> group_settings(const std::vector<RunSummary>& runs, bool include_flagged);

// A quantity of a run, with its range (for clipping intervals).
struct Quantity {
  std::string name, symbol;
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  double (*of)(const RunSummary&, size_t estimator, double beta);
  size_t estimator = 0;  // for per-estimator quantities
  double beta = 1.0;     // for Σ IB
};

stats::Interval interval_of(const Quantity& q, const std::vector<const RunSummary*>& runs);
// The baseline's and the setting's runs paired by seed.
stats::PairedComparison compare(const Quantity& q, const Setting& setting, const Setting& baseline);

}  // namespace ibn::report
