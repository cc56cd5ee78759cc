#include "ibn/report/report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/csv.h"
#include "ibn/io/hdf5.h"
#include "ibn/io/ini.h"
#include "ibn/io/process.h"
#include "ibn/spec_string.h"
#include "ibn/sweep/sweep.h"
#include "runs.h"
#include "tables.h"

#ifndef IBN_SOURCE_DIR
#define IBN_SOURCE_DIR "."
#endif

namespace ibn::report {
namespace {

namespace fs = std::filesystem;

std::string python_interpreter(const ReportOptions& options) {
  if (!options.python.empty()) return options.python;
  return io::python3();
}

// ---- quantities -------------------------------------------------------------------------

constexpr double kInf = std::numeric_limits<double>::infinity();

double test_accuracy(const RunSummary& r, size_t, double) { return r.test_accuracy(); }
double test_loss(const RunSummary& r, size_t, double) { return r.test_loss(); }
double accuracy_gap(const RunSummary& r, size_t, double) { return r.accuracy_gap(); }
double loss_gap(const RunSummary& r, size_t, double) { return r.loss_gap(); }
double kappa(const RunSummary& r, size_t, double) { return r.kappa; }
double nuisance(const RunSummary& r, size_t, double) { return r.nuisance; }
double chain_i_ty(const RunSummary& r, size_t k, double) { return r.final_totals[k].i_ty; }
double chain_i_prev(const RunSummary& r, size_t k, double) { return r.final_totals[k].i_prev; }
double chain_ib(const RunSummary& r, size_t k, double beta) { return r.final_totals[k].i_ty - beta * r.final_totals[k].i_prev; }

std::string short_name(const std::string& estimator) { return estimator.substr(0, estimator.find(':')); }

// ---- formatting -------------------------------------------------------------------------

std::string num(double v, int digits = 10) { return std::isnan(v) ? "nan" : fmt::format("{:.{}g}", v, digits); }

std::string fixed(double v, int decimals) { return std::isnan(v) ? "—" : fmt::format("{:.{}f}", v, decimals); }

// "0.9951 [0.9912, 0.9990]"; one run: the value alone.
std::string with_interval(const stats::Interval& i, int decimals) {
  if (std::isnan(i.mean)) return "—";
  if (std::isnan(i.low)) return fixed(i.mean, decimals);
  return fmt::format("{} [{}, {}]", fixed(i.mean, decimals), fixed(i.low, decimals), fixed(i.high, decimals));
}

std::string p_value(double p) {
  if (std::isnan(p)) return "—";
  return p < 1e-4 ? fmt::format("{:.1e}", p) : fmt::format("{:.4f}", p);
}

std::string latex_escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '_' || c == '&' || c == '%' || c == '#') out += '\\';
    out += c;
  }
  return out;
}

// ---- the report's content ---------------------------------------------------------------

struct Context {
  std::string target;
  bool is_sweep = false;
  ReportOptions options;
  std::vector<RunSummary> runs;
  std::vector<Setting> settings;
  std::vector<std::string> estimators;
  double beta = 1.0;
  size_t baseline = 0;
  const sweep::Tuning* tuning = nullptr;  // the sweep's learning-rate search; null: untuned
};

size_t excluded(const Setting& s) { return s.runs.size() - s.used.size(); }

std::string runs_cell(const Setting& s) {
  return excluded(s) == 0 ? std::to_string(s.used.size()) : fmt::format("{} ({} excluded)", s.used.size(), excluded(s));
}

std::vector<Quantity> setting_quantities() {
  return {{"test accuracy", "acc", 0, 1, test_accuracy},
          {"test loss (nats)", "loss", 0, kInf, test_loss},
          {"accuracy gap (train − test)", "gap_acc", -1, 1, accuracy_gap},
          {"loss gap (test − train, nats)", "gap_loss", -kInf, kInf, loss_gap},
          {"κ (mean over norm sites)", "kappa", 0, kInf, kappa},
          {"nuisance ratio (last hidden layer)", "nuisance", 0, 1, nuisance}};
}

std::vector<Quantity> chain_quantities(size_t k, double beta) {
  return {{"Σ_l I(T_l;Y)", "I_TY", 0, kInf, chain_i_ty, k, beta},
          {"Σ_l I(T_(l−1);T_l)", "I_prev", 0, kInf, chain_i_prev, k, beta},
          {fmt::format("Σ_l IB_l (β = {})", beta), "IB", -kInf, kInf, chain_ib, k, beta}};
}

// The learning rate(s) a setting's runs trained at: one, as a sweep runs them.
std::string rates_of(const Setting& s) {
  std::set<std::string> rates;
  for (const RunSummary* r : s.runs) rates.insert(r->lr);
  return fmt::format("{}", fmt::join(rates, " | "));
}

// A learning rate as written in a config or an experiment file; NaN when it is not a number.
double rate_value(const std::string& text) {
  return parse_number(text).value_or(kNaN);
}

// "tuned" when the setting's runs trained at the rate tuning chose for it; "untuned" without
// tuning; otherwise what differs (runs made before [tune] changed).
std::string tuning_state(const Context& c, const Setting& s) {
  if (c.tuning == nullptr) return "untuned";
  for (const sweep::TunedSetting& t : c.tuning->settings) {
    if (setting_label(t.settings) != s.label) continue;
    // Compared as numbers: the run's config writes the rate its own way (0.001 for 1e-3).
    const double chosen = rate_value(t.chosen);
    const bool at_chosen = std::all_of(s.runs.begin(), s.runs.end(), [&](const RunSummary* r) { return rate_value(r->lr) == chosen; });
    return at_chosen ? "tuned" : fmt::format("not the tuned rate {}", t.chosen);
  }
  return "not tuned";
}

// The tuning's budget and, per setting, each rate's mean final validation loss and accuracy.
std::string tuning_section(const Context& c) {
  if (c.tuning == nullptr) {
    return "No learning-rate search was run: every setting trained at the rate the experiment file gives, so the comparisons are "
           "**untuned**; a rate that suits one normalizer better than another favours it (SPEC §9). An experiment's [tune] "
           "section gives every setting the same search.\n\n";
  }
  const sweep::Tuning& t = *c.tuning;
  std::string md = "Learning rates were tuned: " + t.budget() + ".\n\n";
  std::vector<std::string> header{"setting"};
  for (const std::string& rate : t.config.rates) header.push_back("lr " + rate);
  header.push_back("chosen");
  std::vector<std::vector<std::string>> rows;
  size_t edges = 0;
  double lowest = kInf, highest = -kInf;  // the ends of the list, whatever its order
  for (const std::string& rate : t.config.rates) {
    lowest = std::min(lowest, rate_value(rate));
    highest = std::max(highest, rate_value(rate));
  }
  for (const sweep::TunedSetting& s : t.settings) {
    std::vector<std::string> row{setting_label(s.settings)};
    for (const sweep::RateResult& r : s.rates) {
      std::string cell = r.finished > 0 ? fmt::format("{} / {}", fixed(r.validation_loss, 4), fixed(r.validation_accuracy, 4)) : "—";
      if (r.diverged > 0) cell += fmt::format(" ({} of {} diverged)", r.diverged, r.diverged + r.finished);
      row.push_back(cell);
    }
    const bool at_edge = t.config.rates.size() > 1 && (rate_value(s.chosen) == lowest || rate_value(s.chosen) == highest);
    row.push_back(s.chosen + (at_edge ? " (edge)" : ""));
    edges += at_edge;
    rows.push_back(row);
  }
  md += "Mean final validation loss (nats) / accuracy over the tuning seeds:\n\n" + markdown_table(header, rows) + "\n";
  if (edges > 0) {
    md += fmt::format("{} of {} settings chose a rate at an end of the list (edge): a rate beyond it may be better, so for "
                      "them the search was not conclusive.\n\n", edges, t.settings.size());
  }
  return md;
}

// Per setting: accuracy, loss, κ, nuisance; then per estimator the chain's two terms and Σ IB.
std::string settings_tables(Context& c, std::string& csv, std::string& tex) {
  std::string md;
  std::vector<std::string> header{"setting", "runs", "lr"};
  for (const Quantity& q : setting_quantities()) header.push_back(q.name);
  std::vector<std::vector<std::string>> rows;
  csv = "label,variant,lambda,kappa_target,lr,tuned,runs,excluded";
  for (const Quantity& q : setting_quantities()) csv += fmt::format(",{0}_mean,{0}_low,{0}_high", q.symbol);
  for (size_t k = 0; k < c.estimators.size(); ++k) {
    for (const Quantity& q : chain_quantities(k, c.beta)) csv += fmt::format(",{0}_{1}_mean,{0}_{1}_low,{0}_{1}_high", q.symbol, k);
  }
  csv += "\n";
  tex = "\\begin{tabular}{lr" + std::string(2 + 3 * c.estimators.size(), 'c') + "}\n\\toprule\nsetting & runs & test acc. & test loss";
  for (const std::string& e : c.estimators) tex += fmt::format(" & $\\sum I(T;Y)$ & $\\sum I(T_{{l-1}};T_l)$ & $\\sum$IB ({})", latex_escape(short_name(e)));
  tex += " \\\\\n\\midrule\n";
  for (const Setting& s : c.settings) {
    const std::string tuned = tuning_state(c, s);
    std::vector<std::string> row{s.label, runs_cell(s), fmt::format("{} ({})", rates_of(s), tuned)};
    std::vector<std::string> cells{s.label, s.variant, num(s.lambda), num(s.kappa), rates_of(s), tuned, std::to_string(s.used.size()),
                                   std::to_string(excluded(s))};
    tex += fmt::format("{} & {}", latex_escape(s.label), s.used.size());
    for (const Quantity& q : setting_quantities()) {
      const stats::Interval i = interval_of(q, s.used);
      row.push_back(with_interval(i, q.symbol == "kappa" || q.symbol == "nuisance" ? 3 : 4));
      for (const double v : {i.mean, i.low, i.high}) cells.push_back(num(v));
      if (q.symbol == "acc" || q.symbol == "loss") tex += " & " + with_interval(i, 4);
    }
    for (size_t k = 0; k < c.estimators.size(); ++k) {
      for (const Quantity& q : chain_quantities(k, c.beta)) {
        const stats::Interval i = interval_of(q, s.used);
        for (const double v : {i.mean, i.low, i.high}) cells.push_back(num(v));
        tex += " & " + with_interval(i, 2);
      }
    }
    tex += " \\\\\n";
    rows.push_back(row);
    csv += csv_line(cells);
  }
  tex += "\\bottomrule\n\\end{tabular}\n";
  md += markdown_table(header, rows) + "\n";
  for (size_t k = 0; k < c.estimators.size(); ++k) {
    std::vector<std::string> h{"setting", "runs"};
    for (const Quantity& q : chain_quantities(k, c.beta)) h.push_back(q.name + " (nats)");
    std::vector<std::vector<std::string>> ib_rows;
    for (const Setting& s : c.settings) {
      std::vector<std::string> row{s.label, runs_cell(s)};
      for (const Quantity& q : chain_quantities(k, c.beta)) row.push_back(with_interval(interval_of(q, s.used), 3));
      ib_rows.push_back(row);
    }
    md += fmt::format("Over the chain at the final analyzed epoch, `{}`:\n\n", c.estimators[k]) + markdown_table(h, ib_rows) + "\n";
  }
  return md;
}

struct Comparison {
  const Setting* setting;
  stats::PairedComparison result;
  double p_wilcoxon_holm = kNaN;
};

// One table per quantity: each setting against the baseline, paired by seed, Holm across the
// table's comparisons (paired t and Wilcoxon separately).
std::vector<Comparison> comparisons_of(const Context& c, const Quantity& q) {
  std::vector<Comparison> out;
  const Setting& baseline = c.settings[c.baseline];
  for (const Setting& s : c.settings) {
    if (&s == &baseline) continue;
    out.push_back({&s, compare(q, s, baseline)});
  }
  std::vector<double> p_t, p_w;
  for (const Comparison& x : out) {
    p_t.push_back(x.result.p_t);
    p_w.push_back(x.result.p_wilcoxon);
  }
  const std::vector<double> holm_t = stats::holm(p_t), holm_w = stats::holm(p_w);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].result.p_holm = holm_t[i];
    out[i].p_wilcoxon_holm = holm_w[i];
  }
  return out;
}

std::string comparison_tables(const Context& c, std::string& csv, std::vector<std::string>& findings) {
  const std::vector<Quantity> per_setting = setting_quantities();
  std::vector<Quantity> quantities(per_setting.begin(), per_setting.begin() + 4);  // accuracy, loss, both gaps
  quantities.push_back(per_setting[5]);  // the nuisance ratio (κ is the experiment's choice, not an outcome)
  for (size_t k = 0; k < c.estimators.size(); ++k) {
    const std::vector<Quantity> chain = chain_quantities(k, c.beta);
    quantities.push_back(chain[2]);
    quantities.push_back(chain[0]);
  }
  const Setting& baseline = c.settings[c.baseline];
  size_t excluded_runs = 0;
  for (const Setting& s : c.settings) excluded_runs += excluded(s);
  std::string md;
  csv = "quantity,estimator,setting,baseline,pairs,difference_mean,difference_low,difference_high,p_t,p_t_holm,p_wilcoxon,p_wilcoxon_holm\n";
  for (const Quantity& q : quantities) {
    const bool per_estimator = q.symbol == "IB" || q.symbol == "I_TY";
    const std::string estimator = per_estimator ? c.estimators[q.estimator] : "";
    std::vector<std::vector<std::string>> rows;
    for (const Comparison& x : comparisons_of(c, q)) {
      const stats::PairedComparison& r = x.result;
      rows.push_back({x.setting->label, std::to_string(r.pairs), with_interval(r.difference, 4), p_value(r.p_t), p_value(r.p_holm),
                      p_value(r.p_wilcoxon), p_value(x.p_wilcoxon_holm)});
      csv += csv_line({q.name, estimator, x.setting->label, baseline.label, std::to_string(r.pairs), num(r.difference.mean),
                       num(r.difference.low), num(r.difference.high), num(r.p_t), num(r.p_holm), num(r.p_wilcoxon),
                       num(x.p_wilcoxon_holm)});
      if (r.p_holm < c.options.alpha) {
        findings.push_back(fmt::format("{} is {} than {} in {}{} by {} (paired t, Holm-adjusted p = {}, {} seeds)", x.setting->label,
                                       r.difference.mean > 0 ? "higher" : "lower", baseline.label, q.name,
                                       per_estimator ? fmt::format(" ({})", short_name(estimator)) : "",
                                       with_interval(r.difference, 4), p_value(r.p_holm), r.pairs));
      }
    }
    md += fmt::format("**{}{}**, setting − {} (pairs: seeds where both runs are used; {} flagged runs excluded):\n\n", q.name,
                      per_estimator ? fmt::format(", `{}`", estimator) : "", baseline.label, excluded_runs);
    md += markdown_table({"setting", "pairs", "difference [95 % CI]", "p (paired t)", "p Holm", "p (Wilcoxon)", "p Holm (W)"}, rows) + "\n";
  }
  return md;
}

std::string flags_table(const Context& c, std::string& csv) {
  std::vector<std::vector<std::string>> rows;
  csv = "setting,seed,dir,test_accuracy,majority_rate,test_predictions,chance_p,loss_moved,loss_window_start,flags\n";
  for (const Setting& s : c.settings) {
    for (const RunSummary* r : s.runs) {
      const std::string flags = fmt::format("{}", fmt::join(r->flags, " "));
      csv += csv_line({s.label, std::to_string(r->seed), r->dir, num(r->test_accuracy()), num(r->majority_rate),
                       std::to_string(r->test_predictions), num(r->chance_p), num(r->loss_moved), std::to_string(r->loss_window_start), flags});
      if (r->flags.empty()) continue;
      rows.push_back({s.label, std::to_string(r->seed), fixed(r->test_accuracy(), 4), fixed(r->majority_rate, 4), p_value(r->chance_p),
                      fixed(r->loss_moved, 4), flags});
    }
  }
  if (rows.empty()) return "No run is flagged.\n\n";
  return markdown_table({"setting", "seed", "test accuracy", "majority rate", "p (binomial, > majority)", "range of the training loss over the last 10 % of epochs", "flags"}, rows) + "\n";
}

// Σ IB(β) = Σ I(T;Y) − β·Σ I(T_{l−1};T_l) per run; the settings' mean curves over a log grid.
std::vector<double> beta_grid(const ReportOptions& o) {
  std::vector<double> grid;
  constexpr int kPoints = 61;
  for (int i = 0; i < kPoints; ++i) {
    grid.push_back(std::exp(std::log(o.beta_min) + (std::log(o.beta_max) - std::log(o.beta_min)) * i / (kPoints - 1)));
  }
  return grid;
}

// Where the ordering of the settings' mean Σ IB changes within [β_min, β_max]: every β at
// which two mean lines cross, with who overtakes whom.
std::string beta_orderings(const Context& c, size_t k) {
  struct Line {
    const Setting* s;
    double a, b;  // mean Σ I(T;Y), mean Σ I(T_{l−1};T_l)
  };
  std::vector<Line> lines;
  std::vector<std::string> left_out;
  for (const Setting& s : c.settings) {
    // A mean of one run has no interval: such a setting is not ranked.
    if (s.used.size() < 2) {
      if (!s.runs.empty()) left_out.push_back(s.label);
      continue;
    }
    lines.push_back({&s, interval_of(chain_quantities(k, 1)[0], s.used).mean, interval_of(chain_quantities(k, 1)[1], s.used).mean});
  }
  if (lines.size() < 2) return "fewer than two settings with 2 or more runs to order";
  const auto ranking = [&](double beta) {
    std::vector<const Line*> order;
    for (const Line& l : lines) order.push_back(&l);
    std::stable_sort(order.begin(), order.end(), [&](const Line* x, const Line* y) { return x->a - beta * x->b > y->a - beta * y->b; });
    std::vector<std::string> names;
    for (const Line* l : order) names.push_back(l->s->label);
    return names;
  };
  struct Crossing {
    double beta;
    std::string text;
  };
  std::vector<Crossing> crossings;
  for (size_t i = 0; i < lines.size(); ++i) {
    for (size_t j = i + 1; j < lines.size(); ++j) {
      const double db = lines[i].b - lines[j].b;
      if (db == 0) continue;
      const double beta = (lines[i].a - lines[j].a) / db;
      if (!(beta > c.options.beta_min && beta < c.options.beta_max)) continue;
      // Below the crossing the one with more I(T;Y) leads; above it the one that compresses more.
      const Line& leads_after = lines[i].b < lines[j].b ? lines[i] : lines[j];
      const Line& leads_before = &leads_after == &lines[i] ? lines[j] : lines[i];
      crossings.push_back({beta, fmt::format("β = {:.3g}: {} overtakes {}", beta, leads_after.s->label, leads_before.s->label)});
    }
  }
  std::sort(crossings.begin(), crossings.end(), [](const Crossing& x, const Crossing& y) { return x.beta < y.beta; });
  std::string text = fmt::format("order of the mean Σ IB at β = {}: {}; at β = {}: {}. ", c.options.beta_min,
                                 fmt::join(ranking(c.options.beta_min), " > "), c.options.beta_max,
                                 fmt::join(ranking(c.options.beta_max), " > "));
  if (!left_out.empty()) text += fmt::format("Not ranked (fewer than 2 runs used): {}. ", fmt::join(left_out, ", "));
  if (crossings.empty()) return text + "The order does not change in between.";
  text += fmt::format("The order changes {} times:", crossings.size());
  for (const Crossing& x : crossings) text += "\n  - " + x.text;
  return text;
}

std::string sensitivity_table(const Context& c) {
  const RunSummary& first = c.runs.front();
  if (first.analysis.sensitivity.empty()) return "Not computed (the runs were analyzed with --no-sensitivity).\n\n";
  std::vector<std::string> header{"setting", "runs"};
  for (const analysis::SensitivityRow& row : first.analysis.sensitivity) header.push_back("`" + row.estimator + "`");
  std::vector<std::vector<std::string>> rows;
  for (const Setting& s : c.settings) {
    if (s.used.empty()) continue;
    std::vector<std::string> row{s.label, std::to_string(s.used.size())};
    for (size_t i = 0; i < first.analysis.sensitivity.size(); ++i) {
      std::vector<double> xt, ty;
      for (const RunSummary* r : s.used) {
        if (i < r->analysis.sensitivity.size()) {
          xt.push_back(r->analysis.sensitivity[i].i_xt);
          ty.push_back(r->analysis.sensitivity[i].i_ty);
        }
      }
      row.push_back(fmt::format("{} / {}", fixed(stats::mean_interval(xt).mean, 2), fixed(stats::mean_interval(ty).mean, 3)));
    }
    rows.push_back(row);
  }
  return fmt::format("I(X;T) / I(T;Y) in nats, mean over the runs, of the last hidden representation `{}` at epoch {}:\n\n",
                     first.analysis.sensitivity_layer, first.analysis.sensitivity_epoch) +
         markdown_table(header, rows) + "\n";
}

// ---- the figures' data: one HDF5 file -----------------------------------------------------

at::Tensor doubles_tensor(const std::vector<double>& v) { return at::tensor(v, at::kDouble); }
at::Tensor longs_tensor(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }

void write_figure_data(const Context& c, const std::string& path) {
  std::vector<io::DatasetToWrite> out;
  std::vector<int64_t> setting_of_run, seed, used;
  std::vector<double> accuracy, loss, kappas, nuisances;
  std::vector<int64_t> curve_run;
  std::vector<double> curve_epoch, train_loss, test_loss, train_accuracy, test_accuracy;
  std::vector<int64_t> mi_run, mi_estimator, mi_layer;
  std::vector<double> mi_epoch, mi_xt, mi_ty;
  std::vector<const RunSummary*> order;
  for (size_t si = 0; si < c.settings.size(); ++si) {
    for (const RunSummary* r : c.settings[si].runs) {
      const auto run = static_cast<int64_t>(order.size());
      order.push_back(r);
      setting_of_run.push_back(static_cast<int64_t>(si));
      seed.push_back(r->seed);
      used.push_back(std::find(c.settings[si].used.begin(), c.settings[si].used.end(), r) != c.settings[si].used.end());
      accuracy.push_back(r->test_accuracy());
      loss.push_back(r->test_loss());
      kappas.push_back(r->kappa);
      nuisances.push_back(r->nuisance);
      for (size_t e = 0; e < r->curves.epoch.size(); ++e) {
        curve_run.push_back(run);
        curve_epoch.push_back(r->curves.epoch[e]);
        train_loss.push_back(r->curves.train_loss[e]);
        test_loss.push_back(r->curves.test_loss[e]);
        train_accuracy.push_back(r->curves.train_accuracy[e]);
        test_accuracy.push_back(r->curves.test_accuracy[e]);
      }
      const std::vector<std::string>& chain = r->analysis.chain;
      for (const analysis::AnalysisRow& row : r->analysis.rows) {
        if (!row.in_chain) continue;
        mi_run.push_back(run);
        mi_estimator.push_back(std::find(c.estimators.begin(), c.estimators.end(), row.estimator) - c.estimators.begin());
        mi_layer.push_back(std::find(chain.begin(), chain.end(), row.layer) - chain.begin());
        mi_epoch.push_back(static_cast<double>(row.epoch));
        mi_xt.push_back(row.i_xt);
        mi_ty.push_back(row.i_ty);
      }
    }
  }
  out.push_back({"/runs/setting", longs_tensor(setting_of_run), {}});
  out.push_back({"/runs/seed", longs_tensor(seed), {}});
  out.push_back({"/runs/used", longs_tensor(used), {}});
  out.push_back({"/runs/test_accuracy", doubles_tensor(accuracy), {}});
  out.push_back({"/runs/test_loss", doubles_tensor(loss), {}});
  out.push_back({"/runs/kappa", doubles_tensor(kappas), {}});
  out.push_back({"/runs/nuisance_ratio", doubles_tensor(nuisances), {}});
  out.push_back({"/curves/run", longs_tensor(curve_run), {}});
  out.push_back({"/curves/epoch", doubles_tensor(curve_epoch), {}});
  out.push_back({"/curves/train_loss", doubles_tensor(train_loss), {}});
  out.push_back({"/curves/test_loss", doubles_tensor(test_loss), {}});
  out.push_back({"/curves/train_accuracy", doubles_tensor(train_accuracy), {}});
  out.push_back({"/curves/test_accuracy", doubles_tensor(test_accuracy), {}});
  out.push_back({"/mi/run", longs_tensor(mi_run), {}});
  out.push_back({"/mi/estimator", longs_tensor(mi_estimator), {}});
  out.push_back({"/mi/layer", longs_tensor(mi_layer), {}});
  out.push_back({"/mi/epoch", doubles_tensor(mi_epoch), {}});
  out.push_back({"/mi/I_XT", doubles_tensor(mi_xt), {}});
  out.push_back({"/mi/I_TY", doubles_tensor(mi_ty), {}});

  // Per setting: λ or target κ, runs used, and the statistics the λ/κ and β figures draw (used runs only).
  std::vector<double> lambdas, kappa_targets;
  std::vector<int64_t> used_runs, all_runs;
  for (const Setting& s : c.settings) {
    lambdas.push_back(s.lambda);
    kappa_targets.push_back(s.kappa);
    used_runs.push_back(static_cast<int64_t>(s.used.size()));
    all_runs.push_back(static_cast<int64_t>(s.runs.size()));
  }
  out.push_back({"/settings/lambda", doubles_tensor(lambdas), {}});
  out.push_back({"/settings/kappa_target", doubles_tensor(kappa_targets), {}});
  out.push_back({"/settings/used_runs", longs_tensor(used_runs), {}});
  out.push_back({"/settings/runs", longs_tensor(all_runs), {}});
  const auto statistics = [&](const Quantity& q, const std::string& name) {
    std::vector<double> mean, low, high;
    for (const Setting& s : c.settings) {
      const stats::Interval i = interval_of(q, s.used);
      mean.push_back(i.mean);
      low.push_back(i.low);
      high.push_back(i.high);
    }
    out.push_back({name + "/mean", doubles_tensor(mean), {}});
    out.push_back({name + "/low", doubles_tensor(low), {}});
    out.push_back({name + "/high", doubles_tensor(high), {}});
  };
  for (const Quantity& q : setting_quantities()) statistics(q, "/settings/" + q.symbol);
  const std::vector<double> grid = beta_grid(c.options);
  out.push_back({"/beta/grid", doubles_tensor(grid), {}});
  for (size_t k = 0; k < c.estimators.size(); ++k) {
    for (const Quantity& q : chain_quantities(k, c.beta)) statistics(q, fmt::format("/settings/{}_{}", q.symbol, k));
    std::vector<double> mean, low, high;
    for (const Setting& s : c.settings) {
      for (const double beta : grid) {
        const stats::Interval i = interval_of(chain_quantities(k, beta)[2], s.used);
        mean.push_back(i.mean);
        low.push_back(i.low);
        high.push_back(i.high);
      }
    }
    const auto shaped = [&](const std::vector<double>& v) {
      return doubles_tensor(v).reshape({static_cast<int64_t>(c.settings.size()), static_cast<int64_t>(grid.size())});
    };
    out.push_back({fmt::format("/beta/{}/mean", k), shaped(mean), {}});
    out.push_back({fmt::format("/beta/{}/low", k), shaped(low), {}});
    out.push_back({fmt::format("/beta/{}/high", k), shaped(high), {}});
  }
  std::vector<std::string> labels, variants;
  for (const Setting& s : c.settings) {
    labels.push_back(s.label);
    variants.push_back(s.variant);
  }
  std::vector<std::string> flags;
  for (const RunSummary* r : order) flags.push_back(fmt::format("{}", fmt::join(r->flags, " ")));
  const RunSummary& first = c.runs.front();
  io::write_datasets(path, out,
                     {{"labels", fmt::format("{}", fmt::join(labels, "\n"))},
                      {"variants", fmt::format("{}", fmt::join(variants, "\n"))},
                      {"run_flags", fmt::format("{}", fmt::join(flags, "\n"))},
                      {"baseline", c.settings[c.baseline].label},
                      {"estimators", fmt::format("{}", fmt::join(c.estimators, "\n"))},
                      {"chain", fmt::format("{}", fmt::join(first.analysis.chain, ","))},
                      {"beta", c.beta}, {"units", first.analysis.units}, {"split", first.analysis.split},
                      {"data", first.data}, {"model", first.model}, {"source", c.target},
                      {"include_flagged", int64_t{c.options.include_flagged}},
                      {"interval", std::string(stats::kIntervalMethod)}});
}

// ---- figures ---------------------------------------------------------------------------

std::vector<std::string> draw_figures(const std::string& out, const ReportOptions& options) {
  const char* override_script = std::getenv("IBN_PLOT_SCRIPT");
  const std::string script = override_script != nullptr ? override_script : std::string(IBN_SOURCE_DIR) + "/scripts/plot_report.py";
  if (!fs::exists(script)) throw std::runtime_error(fmt::format("the plotting script '{}' is missing (set IBN_PLOT_SCRIPT)", script));
  const int status = io::run_program({python_interpreter(options), script, out}, out + "/data/plot.log");
  if (status != 0) {
    const std::string last = io::last_line(out + "/data/plot.log");
    throw std::runtime_error(fmt::format("drawing the figures failed ({}); is python3-matplotlib installed? "
                                         "(report option figures=false skips them)", last.empty() ? "no output" : last));
  }
  std::vector<std::string> figures;
  std::ifstream listed(out + "/data/figures.txt");
  for (std::string line; std::getline(listed, line);) {
    if (!line.empty()) figures.push_back(line);
  }
  return figures;
}

// ---- report.md ---------------------------------------------------------------------------

std::string parameters_section(const Context& c) {
  const RunSummary& first = c.runs.front();
  std::string md = "## What was run\n\n";
  md += fmt::format("- source: `{}` ({}); data `{}`; model `{}`\n", c.target, c.is_sweep ? "sweep" : "run", first.data, first.model);
  std::set<int64_t> seeds;
  for (const RunSummary& r : c.runs) seeds.insert(r.seed);
  md += fmt::format("- runs: {} ({} settings; seeds {})\n", c.runs.size(), c.settings.size(), fmt::join(seeds, ", "));
  md += "- normalizers, exactly as each run's store records them (ψ is the compression of IBNorm, SPEC §1–2):\n";
  for (const Setting& s : c.settings) {
    md += fmt::format("  - **{}**: `{}` — {}\n", s.label, s.runs.front()->norm_spec, s.runs.front()->norm_description);
  }
  md += fmt::format("- estimators: {}; β = {}; {} on the `{}` samples ({} of them); I(X;T) with binning reads X as the sample's identity\n",
                    fmt::join(c.estimators.begin(), c.estimators.end(), ", "), c.beta, first.analysis.units, first.analysis.split,
                    first.analysis.samples);
  md += fmt::format("- representation chain (the IB sum's layers, one per block and the logits): {}\n", fmt::join(first.analysis.chain, " → "));
  md += fmt::format("- statistics: {}; intervals clipped to each quantity's range; comparisons paired by seed against **{}**, "
                    "paired t and Wilcoxon signed-rank (exact for ≤ 50 pairs and no zero difference), Holm–Bonferroni across each table "
                    "(each quantity its own family: the findings are not corrected across quantities, and the gap tables are "
                    "secondary); "
                    "with n pairs the exact Wilcoxon test cannot go below p = 2/2^n ({} here)\n",
                    stats::kIntervalMethod, c.settings[c.baseline].label, p_value(stats::wilcoxon_min_p(static_cast<int64_t>(seeds.size()))));
  md += fmt::format("- validity flags: {}. Flagged runs are {} comparisons{}.\n", flag_rules(c.options),
                    c.options.include_flagged ? "kept in" : "excluded from", c.options.include_flagged ? " (--include-flagged)" : "");
  md += c.tuning != nullptr ? "- tuning ([tune]): " + c.tuning->budget() + "; see Tuning\n"
                            : "- tuning: every setting trained with the same options (below); no per-setting learning-rate search "
                              "was run, so the comparisons are **untuned** (SPEC §9)\n";
  md += "- generalization gap at the last epoch: train − test accuracy and test − train loss, both positive when the model fits "
        "its training samples better; the train side is evaluated after the epoch, in evaluation mode, on the evaluation subset\n";
  if (!first.config.empty()) md += "\nTraining options of the first run (the settings vary only the grid's keys):\n\n```ini\n" + first.config + "```\n";
  return md + "\n";
}

std::string caveats_section(const Context& c) {
  return "## What the numbers mean\n\n"
         "For a deterministic network with continuous activations, the true I(X;T) is infinite, and a strictly monotone ψ (every "
         "IBNorm variant) leaves it unchanged: IBNorm cannot change the true I(X;T). The figures and tables measure compression at "
         "the estimator's resolution (bin width, KDE noise variance), not information in the strict sense. The resolution table "
         "shows how much the numbers move with that resolution; an ordering of settings that changes across it is not a finding. "
         "I(T;Y) is bounded by H(Y), while Σ_l I(T_(l−1);T_l) grows with the number of layers and the resolution, so for β near 1 "
         "Σ IB mostly measures compression: see the β curve for where the ordering of settings changes.\n\n" +
         sensitivity_table(c);
}

size_t choose_baseline(const std::vector<Setting>& settings, const std::string& wanted) {
  for (size_t i = 0; i < settings.size(); ++i) {
    if (!wanted.empty() ? settings[i].label == wanted : settings[i].variant == "layernorm") return i;
  }
  if (!wanted.empty()) {
    std::vector<std::string> labels;
    for (const Setting& s : settings) labels.push_back("'" + s.label + "'");
    throw UsageError(fmt::format("--baseline '{}' is none of the settings: {}", wanted, fmt::join(labels, ", ")));
  }
  return 0;
}

bool declares_tuning(const std::string& experiment) {
  const std::vector<io::IniEntry> entries = io::read_ini_file(experiment);
  return std::any_of(entries.begin(), entries.end(), [](const io::IniEntry& e) { return e.section == "tune"; });
}

}  // namespace

void ReportOptions::set(const std::string& key, const std::string& value) {
  const auto number = [&] { return io::csv_number(value, fmt::format("report option {}", key)); };
  if (key == "python") {
    python = value;
  } else if (key == "figures" || key == "include-flagged") {
    if (value != "true" && value != "false") throw UsageError(fmt::format("report {} = '{}' must be true or false", key, value));
    (key == "figures" ? figures : include_flagged) = value == "true";
  } else if (key == "baseline") {
    baseline = value;
  } else if (key == "alpha") {
    alpha = number();
  } else if (key == "converged-tolerance") {
    converged_tolerance = number();
  } else if (key == "beta-min") {
    beta_min = number();
  } else if (key == "beta-max") {
    beta_max = number();
  } else {
    throw UsageError(fmt::format("unknown report option '{}' (python, figures, baseline, include-flagged, alpha, "
                                 "converged-tolerance, beta-min, beta-max)", key));
  }
  check();
}

void ReportOptions::check() const {
  if (!(alpha > 0 && alpha < 1)) throw UsageError(fmt::format("report alpha = {} must be in (0, 1)", alpha));
  if (!(converged_tolerance >= 0) || !std::isfinite(converged_tolerance)) {
    throw UsageError(fmt::format("report converged-tolerance = {} must be a finite number >= 0", converged_tolerance));
  }
  if (!(beta_min > 0 && beta_max > beta_min && std::isfinite(beta_max))) {
    throw UsageError(fmt::format("report beta-min = {} and beta-max = {} must satisfy 0 < beta-min < beta-max < inf", beta_min, beta_max));
  }
}

std::string write_report(const std::string& target, const std::vector<ReportRun>& inputs, const ReportOptions& options, std::ostream& log,
                         const sweep::Tuning* tuning) {
  options.check();
  if (inputs.empty()) throw UsageError(fmt::format("'{}' has no runs to report", target));
  Context c;
  c.target = target;
  c.is_sweep = fs::exists(target + "/points.csv");
  c.options = options;
  c.tuning = tuning;
  for (const ReportRun& run : inputs) c.runs.push_back(load_run(run, options));
  std::vector<const RunSummary*> loaded;
  for (const RunSummary& r : c.runs) loaded.push_back(&r);
  check_analyzed_alike(loaded);
  c.estimators = c.runs.front().analysis.estimators;
  c.beta = c.runs.front().analysis.beta;
  c.settings = group_settings(c.runs, options.include_flagged);
  c.baseline = choose_baseline(c.settings, options.baseline);

  const std::string out = target + "/report";
  fs::create_directories(out + "/data");
  std::string settings_csv, settings_tex, comparisons_csv, flags_csv;
  std::vector<std::string> findings;
  const std::string settings_md = settings_tables(c, settings_csv, settings_tex);
  const std::string comparisons_md = comparison_tables(c, comparisons_csv, findings);
  const std::string flags_md = flags_table(c, flags_csv);
  std::string runs_csv = "label,seed,dir,lr,test_accuracy,test_loss,accuracy_gap,loss_gap,kappa,nuisance_ratio,flags";
  for (size_t k = 0; k < c.estimators.size(); ++k) runs_csv += fmt::format(",I_TY_chain_{0},I_prev_chain_{0},IB_total_{0}", k);
  runs_csv += "\n";
  for (const Setting& s : c.settings) {
    for (const RunSummary* r : s.runs) {
      std::vector<std::string> cells{s.label, std::to_string(r->seed), r->dir, r->lr, num(r->test_accuracy()), num(r->test_loss()),
                                     num(r->accuracy_gap()), num(r->loss_gap()), num(r->kappa), num(r->nuisance), fmt::format("{}", fmt::join(r->flags, " "))};
      for (const analysis::ChainTotal& t : r->final_totals) {
        for (const double v : {t.i_ty, t.i_prev, t.i_ty - c.beta * t.i_prev}) cells.push_back(num(v));
      }
      runs_csv += csv_line(cells);
    }
  }
  write_figure_data(c, out + "/data/report.h5");
  io::write_files_atomically({{out + "/data/runs.csv", runs_csv},
                              {out + "/data/table_comparison.csv", settings_csv},
                              {out + "/data/comparisons.csv", comparisons_csv},
                              {out + "/data/flags.csv", flags_csv},
                              {out + "/table_comparison.tex", settings_tex}});
  const std::vector<std::string> figures = options.figures ? draw_figures(out, options) : std::vector<std::string>{};

  size_t flagged = 0;
  for (const RunSummary& r : c.runs) flagged += !r.flags.empty();
  std::string report = fmt::format("# Report: {}\n\n", fs::path(target).filename().string().empty() ? target : fs::path(target).filename().string());
  report += fmt::format("{} runs in {} settings; {} flagged ({}); baseline **{}**; β = {}.\n\n", c.runs.size(), c.settings.size(), flagged,
                        options.include_flagged ? "kept in the comparisons (--include-flagged)" : "excluded from every statistic, comparison, β curve and λ figure; the MI figures still draw them, dotted",
                        c.settings[c.baseline].label, c.beta);
  report += "## Findings\n\n";
  if (findings.empty()) {
    report += fmt::format("No difference from {} is significant after Holm–Bonferroni (α = {}).\n\n", c.settings[c.baseline].label, options.alpha);
  } else {
    for (const std::string& f : findings) report += "- " + f + "\n";
    report += "\n";
  }
  report += "## Validity flags\n\n" + flags_md;
  report += "## Settings (mean [95 % interval] over the runs used)\n\n" + settings_md +
            "LaTeX (booktabs): `table_comparison.tex`; numbers: `data/table_comparison.csv`, per run `data/runs.csv`.\n\n";
  report += "## Tuning\n\n" + tuning_section(c);
  report += "## Comparisons with the baseline\n\n" + comparisons_md + "Numbers: `data/comparisons.csv`.\n\n";
  report += "## Σ IB against β\n\n";
  for (size_t k = 0; k < c.estimators.size(); ++k) report += fmt::format("- `{}`: {}\n", c.estimators[k], beta_orderings(c, k));
  report += "\n" + parameters_section(c) + caveats_section(c);
  if (!figures.empty()) report += "## Figures\n\n";
  for (const std::string& line : figures) {
    const size_t tab = line.find('\t');
    const std::string file = line.substr(0, tab), caption = tab == std::string::npos ? "" : line.substr(tab + 1);
    report += fmt::format("### {}\n\n![{}]({}.png)\n\n(PDF: `{}.pdf`)\n\n", caption, caption, file, file);
  }
  io::write_file_atomically(out + "/report.md", report);
  log << fmt::format("report: {} settings, {} runs ({} flagged), {} figures\n", c.settings.size(), c.runs.size(), flagged, figures.size());
  return out + "/report.md";
}

std::string write_report(const std::string& target, const ReportOptions& options, std::ostream& log) {
  std::vector<ReportRun> runs;
  if (fs::exists(target + "/points.csv")) {
    for (const sweep::Point& p : sweep::read_points(target)) {
      const std::string dir = target + "/points/" + p.id;
      if (!fs::exists(dir + "/done")) {
        throw UsageError(fmt::format("sweep point '{}' is not finished; run the sweep to the end first (ibn sweep ... --status)", p.id));
      }
      runs.push_back({dir, p.settings});
    }
    if (runs.empty()) throw UsageError(fmt::format("sweep '{}' has no points", target));
    // The tuning is read from where the sweep left it: its experiment file's [tune] and the tuning runs.
    // Only a file that declares [tune] is loaded as a sweep: an untuned sweep's report must not
    // depend on its sweep.ini still passing this version's checks.
    if (fs::exists(target + "/sweep.ini") && declares_tuning(target + "/sweep.ini")) {
      const sweep::Sweep s = sweep::load_sweep(target + "/sweep.ini", target);
      if (s.tune) {
        const sweep::Tuning tuning = sweep::choose_rates(s);
        return write_report(target, runs, options, log, &tuning);
      }
    }
  } else if (fs::exists(target + "/config.ini")) {
    runs.push_back({target, {}});
  } else {
    throw UsageError(fmt::format("'{}' is neither a sweep directory (points.csv) nor a run directory (config.ini)", target));
  }
  return write_report(target, runs, options, log);
}

}  // namespace ibn::report
