#pragma once
// Reports (SPEC §3, §7): from a sweep directory (`ibn sweep`) or one run directory, the tables
// (mean ± 95 % interval over seeds; LaTeX booktabs, CSV, Markdown) computed here, and the
// figures drawn by scripts/plot_report.py (matplotlib; Python only plots) from the CSV files
// this writes under TARGET/report/data/.
#include <ostream>
#include <string>

namespace ibn::report {

struct ReportOptions {
  std::string python;  // interpreter; empty: /usr/bin/python3 (Debian's matplotlib), else python3
  bool figures = true;  // false: tables and report.md only
  // From an experiment's [report] section or the command line; ibn::UsageError for unknown keys.
  void set(const std::string& key, const std::string& value);
};

// Two-sided 95 % Student-t quantile for `dof` degrees of freedom (dof >= 1).
double t_quantile_95(int dof);

// Writes TARGET/report/{report.md, *.png, *.pdf, *.tex, data/*.csv}; returns report.md's path.
// Throws ibn::UsageError when TARGET is neither a sweep nor a run, or holds no analysis.
std::string write_report(const std::string& target, const ReportOptions& options, std::ostream& log);

}  // namespace ibn::report
