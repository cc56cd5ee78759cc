// ibn report SWEEP_OR_RUN: tables and figures from analyzed runs.
#include <iostream>

#include <fmt/format.h>

#include "command.h"
#include "ibn/error.h"
#include "ibn/report/report.h"

namespace ibn::cli {

int run_report(const std::vector<std::string>& args) {
  CommandOptions cmd("report", "ibn report SWEEP_OR_RUN_DIR [--baseline SETTING] [--include-flagged] [options]",
                     "Writes DIR/report/report.md: validity flags per run (chance: test accuracy not above the\n"
                     "majority rate, one-sided binomial; unconverged: training loss still moving over the last\n"
                     "10 % of epochs), per setting the mean and 95 % Student-t interval over seeds (flagged\n"
                     "runs excluded and counted), each setting against the baseline paired by seed (paired t,\n"
                     "Wilcoxon, Holm-Bonferroni), the IB terms over the representation chain and the sum\n"
                     "against beta, a resolution table, every parameter and the caveats. Also LaTeX and CSV,\n"
                     "data/report.h5 (the figures' data) and figures in PNG and PDF drawn by\n"
                     "scripts/plot_report.py: training curves, MI against epoch and information planes with\n"
                     "every seed, IB against beta, and for sweeps over lambda the quantities against lambda.\n"
                     "Prints the path of report.md.");
  std::string target;
  report::ReportOptions options;
  cmd.options.add_options()
      ("target", po::value<std::string>(&target)->value_name("DIR"), "a sweep or run directory (also the first argument)")
      ("baseline", po::value<std::string>(&options.baseline)->value_name("SETTING"),
       "the setting comparisons are made against, as the tables name it (default: layernorm, else the first)")
      ("include-flagged", "keep runs flagged chance or unconverged in the comparisons")
      ("alpha", po::value<double>(&options.alpha)->default_value(options.alpha), "level of the chance test and the findings")
      ("converged-tolerance", po::value<double>(&options.converged_tolerance)->default_value(options.converged_tolerance),
       "how far (nats) the training loss may move over the last 10 % of epochs")
      ("beta-min", po::value<double>(&options.beta_min)->default_value(options.beta_min), "the beta curve's lower end")
      ("beta-max", po::value<double>(&options.beta_max)->default_value(options.beta_max), "the beta curve's upper end")
      ("python", po::value<std::string>(&options.python), "Python interpreter for the figures (default /usr/bin/python3)")
      ("no-figures", "tables and report.md only");
  cmd.positional.add("target", 1);
  const auto vm = cmd.parse(args);
  if (!vm) return 0;
  if (target.empty()) throw UsageError("give a sweep or run directory: ibn report DIR");
  if (vm->count("no-figures")) options.figures = false;
  options.include_flagged = vm->count("include-flagged") > 0;
  std::cout << report::write_report(target, options, std::cout) << "\n";
  return 0;
}

}  // namespace ibn::cli
