#include "runs.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <variant>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/error.h"
#include "ibn/io/csv.h"
#include "ibn/io/hdf5.h"
#include "ibn/io/ini.h"
#include "ibn/train/run_directory.h"
#include "ibn/train/train.h"

namespace ibn::report {
namespace {

std::string text_or(const std::string& store, const std::string& name, const std::string& fallback) {
  try {
    return io::read_text_attribute(store, "/", name);
  } catch (const DataError&) {
    return fallback;  // absent or not text: written by an older ibn or another tool
  }
}

// The test split's size and majority-class rate: recorded by training; for stores from
// before that, from the store's own labels (every test sample is dumped by default).
void read_test_split(const std::string& store, RunSummary& r) {
  try {
    r.test_predictions = std::get<int64_t>(io::read_attribute(store, "/", "test_predictions"));
    r.majority_rate = std::get<double>(io::read_attribute(store, "/", "test_majority_rate"));
    return;
  } catch (const DataError&) {
  } catch (const std::bad_variant_access&) {
  }
  const at::Tensor split = io::read_dataset(store, "/data/split");
  const at::Tensor labels = io::read_dataset(store, "/data/labels").index_select(0, split.eq(1).nonzero().squeeze(1)).reshape({-1});
  r.test_predictions = labels.numel();
  r.majority_rate = train::majority_rate(labels);
}

void set_flags(RunSummary& r, const ReportOptions& options) {
  // A run whose test cannot be computed (no test split, a NaN accuracy) is flagged too: its
  // learning is not shown.
  const double accuracy = r.test_accuracy();
  if (r.test_predictions > 0 && std::isfinite(accuracy) && std::isfinite(r.majority_rate)) {
    const auto correct = static_cast<int64_t>(std::llround(accuracy * static_cast<double>(r.test_predictions)));
    r.chance_p = stats::binomial_upper_p(correct, r.test_predictions, r.majority_rate);
  }
  if (!(r.chance_p < options.alpha)) r.flags.push_back("chance");
  const std::vector<double>& loss = r.curves.train_loss;
  if (loss.size() >= 2) {
    // The last 10 % of the epochs (at least one epoch back): how far the loss ranged in that
    // window, so a spike inside it counts as movement too.
    const size_t last = loss.size() - 1;
    const size_t back = std::max<size_t>(1, static_cast<size_t>(std::ceil(0.1 * static_cast<double>(last))));
    r.loss_window_start = static_cast<int64_t>(r.curves.epoch[last - back]);
    const auto [low, high] = std::minmax_element(loss.begin() + static_cast<std::ptrdiff_t>(last - back), loss.end());
    r.loss_moved = *high - *low;
  }
  if (!(r.loss_moved <= options.converged_tolerance)) r.flags.push_back("unconverged");
}

std::string setting_value(const std::vector<std::pair<std::string, std::string>>& settings, const std::string& key) {
  for (const auto& [k, v] : settings) {
    if (k == key) return v;
  }
  return "";
}

std::string setting_value(const RunSummary& r, const std::string& key) { return setting_value(r.settings, key); }

}  // namespace

std::string flag_rules(const ReportOptions& options) {
  return fmt::format("`chance` when the test accuracy is not above the majority-class rate (one-sided binomial, α = {}; also when "
                     "the test cannot be computed); `unconverged` when the training loss ranged over more than {} nats in the last "
                     "10 % of epochs", options.alpha, options.converged_tolerance);
}

RunSummary load_run(const ReportRun& run, const ReportOptions& options) {
  RunSummary r;
  r.dir = run.dir;
  r.settings = run.settings;
  const train::RunStatus status = train::run_status(run.dir);
  if (status.state != train::RunStatus::State::complete) throw UsageError(status.summary);
  const std::string store = train::RunDirectory{run.dir}.store();
  r.data = text_or(store, "data", "?");
  r.model = text_or(store, "model", "?");
  r.config = text_or(store, "config", "");
  const std::map<std::string, std::string> config = io::ini_values(r.config, store + " (config)");
  r.lr = config.count("lr") ? config.at("lr") : "?";
  r.threads = config.count("threads") ? config.at("threads") : "?";
  r.dtype = config.count("dtype") ? config.at("dtype") : "float32";  // written only when not the default
  r.device = text_or(store, "device", "?");
  r.torch_version = text_or(store, "torch_version", "?");
  r.norm_spec = text_or(store, "norm_spec", text_or(store, "norm", "?"));
  r.norm_description = text_or(store, "norm_description", "(not recorded by this run's version of ibn)");
  r.seed = std::get<int64_t>(io::read_attribute(store, "/", "seed"));
  if (r.settings.empty()) {
    std::string norms = r.norm_spec;  // one line per distinct normalizer
    std::replace(norms.begin(), norms.end(), '\n', '+');
    r.settings = {{"norm", norms}, {"seed", std::to_string(r.seed)}};
  }
  r.curves.epoch = io::read_doubles(store, "/metrics/epoch");
  r.curves.train_loss = io::read_doubles(store, "/metrics/train_loss");
  r.curves.train_accuracy = io::read_doubles(store, "/metrics/train_accuracy");
  r.curves.test_loss = io::read_doubles(store, "/metrics/test_loss");
  r.curves.test_accuracy = io::read_doubles(store, "/metrics/test_accuracy");
  for (const auto* v : {&r.curves.train_loss, &r.curves.train_accuracy, &r.curves.test_loss, &r.curves.test_accuracy}) {
    if (v->size() != r.curves.epoch.size()) throw DataError(fmt::format("'{}': the /metrics arrays differ in length", store));
  }
  read_test_split(store, r);

  r.analysis = analysis::read_analysis(run.dir);
  if (r.analysis.rows.empty()) throw UsageError(fmt::format("'{}/analysis.h5' has no rows", run.dir));
  r.final_epoch = r.analysis.rows.back().epoch;
  for (const std::string& estimator : r.analysis.estimators) {
    r.final_totals.push_back(analysis::chain_total(r.analysis, r.final_epoch, estimator));
  }
  // κ and the nuisance ratio do not depend on the estimator: the first one's rows hold them.
  const std::string top = r.analysis.chain.size() > 1 ? r.analysis.chain[r.analysis.chain.size() - 2] : r.analysis.chain.back();
  for (const analysis::AnalysisRow& row : r.analysis.rows) {
    if (row.epoch == r.final_epoch && row.estimator == r.analysis.estimators.front() && row.layer == top) r.nuisance = row.nuisance_ratio;
  }
  // κ of every normalization site, whichever layers were analyzed: the store holds them.
  std::vector<double> kappas;
  const std::string prefix = fmt::format("/contraction/{}/", r.final_epoch);
  for (const std::string& name : io::list_datasets(store)) {
    if (name.rfind(prefix, 0) != 0) continue;
    kappas.push_back(io::read_dataset(store, name)[0].item<double>());
    r.site_kappas.emplace_back(name.substr(prefix.size()), kappas.back());
  }
  r.kappa = stats::mean_interval(kappas).mean;
  set_flags(r, options);
  return r;
}

void check_analyzed_alike(const std::vector<const RunSummary*>& runs) {
  if (runs.empty()) return;
  const RunSummary& first = *runs.front();
  for (const RunSummary* r : runs) {
    if (r->analysis.estimators != first.analysis.estimators) {
      throw DataError(fmt::format("'{}' was analyzed with other estimators than '{}'; analyze them alike", r->dir, first.dir));
    }
    const analysis::Analysis& a = r->analysis;
    if (a.chain != first.analysis.chain || a.split != first.analysis.split || a.samples != first.analysis.samples) {
      throw DataError(fmt::format("'{}' was analyzed over chain {} on {} '{}' samples, '{}' over chain {} on {} '{}' samples; "
                                  "analyze them alike", r->dir, fmt::join(a.chain, ","), a.samples, a.split, first.dir,
                                  fmt::join(first.analysis.chain, ","), first.analysis.samples, first.analysis.split));
    }
    if (a.beta != first.analysis.beta) {
      throw DataError(fmt::format("'{}' was analyzed with β = {}, '{}' with β = {}; analyze them alike", r->dir, a.beta, first.dir,
                                  first.analysis.beta));
    }
  }
}

std::string setting_label(const std::vector<std::pair<std::string, std::string>>& settings) {
  std::string label = setting_value(settings, "norm");
  const std::string lambda = setting_value(settings, "lambda"), kappa = setting_value(settings, "kappa");
  if (!lambda.empty()) label += " λ=" + lambda;
  if (!kappa.empty()) label += " κ=" + kappa;
  for (const auto& [key, value] : settings) {
    if (key != "norm" && key != "lambda" && key != "kappa" && key != "seed") label += fmt::format(" {}={}", key, value);
  }
  return label.empty() ? "run" : label;
}

std::vector<Setting> group_settings(const std::vector<RunSummary>& runs, bool include_flagged) {
  std::vector<Setting> settings;
  for (const RunSummary& r : runs) {
    const std::string label = setting_label(r.settings);
    const std::string lambda = setting_value(r, "lambda"), kappa = setting_value(r, "kappa");
    auto found = std::find_if(settings.begin(), settings.end(), [&](const Setting& s) { return s.label == label; });
    if (found == settings.end()) {
      Setting s;
      s.label = label;
      s.variant = setting_value(r, "norm");
      s.lambda = lambda.empty() ? kNaN : io::csv_number(lambda, fmt::format("the sweep's lambda of '{}'", r.dir));
      s.kappa = kappa.empty() ? kNaN : io::csv_number(kappa, fmt::format("the sweep's kappa of '{}'", r.dir));
      settings.push_back(s);
      found = settings.end() - 1;
    }
    found->runs.push_back(&r);
    if (include_flagged || r.flags.empty()) found->used.push_back(&r);
  }
  return settings;
}

stats::Interval interval_of(const Quantity& q, const std::vector<const RunSummary*>& runs) {
  std::vector<double> values;
  for (const RunSummary* r : runs) values.push_back(q.of(*r, q.estimator, q.beta));
  return stats::mean_interval(values, q.lo, q.hi);
}

stats::PairedComparison compare(const Quantity& q, const Setting& setting, const Setting& baseline) {
  std::vector<double> a, b;
  for (const RunSummary* r : setting.used) {
    for (const RunSummary* base : baseline.used) {
      if (base->seed == r->seed) {
        a.push_back(q.of(*r, q.estimator, q.beta));
        b.push_back(q.of(*base, q.estimator, q.beta));
      }
    }
  }
  return stats::compare_paired(a, b);
}

}  // namespace ibn::report
