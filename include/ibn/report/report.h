#pragma once
// Reports (SPEC §3, §7, §9): from a sweep directory (`ibn sweep`) or one run directory, the
// tables computed here (per setting a mean and 95 % interval over seeds; per comparison with
// the baseline setting the paired difference by seed, paired-t and Wilcoxon p-values and
// Holm–Bonferroni; validity flags; the β curve; the resolution table) and the figures drawn
// by scripts/plot_report.py (matplotlib; Python only plots) from the one file this writes for
// it, TARGET/report/data/report.h5.
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace ibn::sweep {
struct Tuning;
}

namespace ibn::report {

struct ReportOptions {
  std::string python;           // interpreter; empty: /usr/bin/python3 (Debian's matplotlib), else python3
  bool figures = true;          // false: tables and report.md only
  std::string baseline;         // the setting comparisons are made against; empty: layernorm, else the first
  bool include_flagged = false;  // keep flagged runs in the comparisons
  double alpha = 0.05;          // of the chance flag's binomial test and of the findings
  double converged_tolerance = 0.01;  // training loss may move this much over the last 10 % of epochs
  double beta_min = 1e-3, beta_max = 1.0;  // the β curve's log grid
  // From an experiment's [report] section or the command line; ibn::UsageError for unknown
  // keys and bad values.
  void set(const std::string& key, const std::string& value);
  void check() const;
};

// One run of a report with its settings (grid key -> value, seed included), as the sweep
// holds them in memory or its points.csv lists them.
struct ReportRun {
  std::string dir;
  std::vector<std::pair<std::string, std::string>> settings;
};

// Writes TARGET/report/{report.md, *.png, *.pdf, *.tex, data/*.csv, data/report.h5}; returns
// report.md's path. Throws ibn::UsageError when a run is not analyzed. `tuning`: the sweep's
// learning-rate search, when it had one (the report states its budget and choices); without
// it the comparisons are marked untuned.
std::string write_report(const std::string& target, const std::vector<ReportRun>& runs, const ReportOptions& options,
                         std::ostream& log, const sweep::Tuning* tuning = nullptr);

// The same, finding the runs: a sweep's points (its points.csv) and tuning (its sweep.ini's
// [tune] and tune/ runs), or the one run.
// ibn::UsageError when TARGET is neither.
std::string write_report(const std::string& target, const ReportOptions& options, std::ostream& log);

}  // namespace ibn::report
