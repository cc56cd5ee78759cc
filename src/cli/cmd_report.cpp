// ibn report SWEEP_OR_RUN: tables and figures from analyzed runs.
#include <iostream>

#include <fmt/format.h>

#include "command.h"
#include "ibn/error.h"
#include "ibn/report/report.h"

namespace ibn::cli {

int run_report(const std::vector<std::string>& args) {
  CommandOptions cmd("report", "ibn report SWEEP_OR_RUN_DIR [--no-figures] [--python PATH]",
                     "Writes DIR/report/report.md with a comparison table (mean ± 95 % interval over seeds;\n"
                     "also LaTeX booktabs and CSV) and figures in PNG and PDF: information planes per layer\n"
                     "coloured by epoch (a panel per setting), MI against epoch, and for sweeps over λ the\n"
                     "IB value, test accuracy and loss, κ and the nuisance ratio against λ. Figures are\n"
                     "drawn by scripts/plot_report.py with matplotlib; every one names its data, model and\n"
                     "estimator. Prints the path of report.md.");
  std::string target;
  report::ReportOptions options;
  cmd.options.add_options()
      ("target", po::value<std::string>(&target)->value_name("DIR"), "a sweep or run directory (also the first argument)")
      ("python", po::value<std::string>(&options.python), "Python interpreter for the figures (default /usr/bin/python3)")
      ("no-figures", "tables and report.md only");
  cmd.positional.add("target", 1);
  const auto vm = cmd.parse(args);
  if (!vm) return 0;
  if (target.empty()) throw UsageError("give a sweep or run directory: ibn report DIR");
  if (vm->count("no-figures")) options.figures = false;
  std::cout << report::write_report(target, options, std::cout) << "\n";
  return 0;
}

}  // namespace ibn::cli
