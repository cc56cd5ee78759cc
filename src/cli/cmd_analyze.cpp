// ibn analyze RUN: the information-bottleneck quantities of a run's activation store.
#include <cmath>
#include <iostream>

#include <fmt/format.h>

#include "command.h"
#include "ibn/analysis/analyze.h"
#include "ibn/error.h"

namespace ibn::cli {

AnalyzeOptions::AnalyzeOptions()
    : cmd("analyze", "ibn analyze RUN_DIR [--estimator SPEC ...] [--beta B] [options]",
          "Per saved epoch and layer of RUN_DIR/activations.h5: I(X;T), I(T;Y) and I(T_prev;T)\n"
          "(T_0 = X) with each estimator, the IB value I(T;Y) - beta*I(T_prev;T) and its sum\n"
          "over layers, the nuisance ratio tr(S_within)/tr(S_total) of T, and the variance\n"
          "contraction kappa of each normalization site. Writes RUN_DIR/analysis.csv and\n"
          "RUN_DIR/analysis.h5 (nats, with every estimator parameter). Binning reads X as the\n"
          "sample's identity (I(X;T) = H of the binned T); the other estimators read the inputs.\n\n"
          "  ibn analyze runs/t1 --estimator binning:bins=30 --estimator kde:var=0.1") {
  analysis::AnalyzeConfig& c = config;
  cmd.options.add_options()
      ("run", po::value<std::string>(&c.run)->value_name("RUN_DIR"), "the run directory (also the first argument)")
      ("estimator", po::value<std::vector<std::string>>()->composing()->value_name("SPEC"),
       "an estimator spec, repeatable (default: binning and kde, as in the info-plane literature)")
      ("beta", po::value<double>(&c.beta)->default_value(c.beta), "beta of the IB value")
      ("device", po::value<std::string>(&c.device)->default_value(c.device), "cpu, cuda, cuda:N or auto")
      ("split", po::value<std::string>(&c.split)->default_value(c.split), "samples: all, train or test")
      ("max-samples", po::value<int64_t>(&c.max_samples)->default_value(c.max_samples), "0: all; else a seeded subset")
      ("layers", po::value<std::string>(&c.layers)->default_value(c.layers), "all, or tap names: fc1,fc2")
      ("epochs", po::value<std::string>(&c.epochs)->default_value(c.epochs), "all, or dumped epochs: 0,10,100")
      ("seed", po::value<int64_t>(&seed)->default_value(seed), "seed of the subset and the neural estimators")
      ("quiet", "no progress lines");
  cmd.positional.add("run", 1);
}

analysis::AnalyzeConfig AnalyzeOptions::resolved(const po::variables_map& vm) {
  analysis::AnalyzeConfig c = config;
  c.seed = checked_seed("seed", seed);
  if (vm.count("estimator")) c.estimators = vm["estimator"].as<std::vector<std::string>>();
  c.quiet = vm.count("quiet") > 0;
  return c;
}

int run_analyze(const std::vector<std::string>& args) {
  AnalyzeOptions options;
  CommandOptions& cmd = options.cmd;
  const auto vm = cmd.parse(args);
  if (!vm) return 0;
  const analysis::AnalyzeConfig c = options.resolved(*vm);
  if (c.run.empty()) throw UsageError("give the run directory: ibn analyze RUN_DIR");
  const analysis::Analysis a = analysis::analyze(c, std::cout);

  // The last epoch, per layer and estimator, and the total IB value.
  const int64_t last = a.rows.back().epoch;
  std::cout << fmt::format("epoch {} (nats; IB with beta = {}):\n{:<16} {:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}\n", last,
                           a.beta, "layer", "estimator", "I(X;T)", "I(T;Y)", "I(Tp;T)", "IB", "nuisance", "kappa");
  for (const auto& estimator : a.estimators) {
    for (const analysis::AnalysisRow& r : a.rows) {
      if (r.epoch != last || r.estimator != estimator) continue;
      std::cout << fmt::format("{:<16} {:<30} {:>9.4f} {:>9.4f} {:>9.4f} {:>9.4f} {:>9.4f} {:>7}\n", r.layer, r.estimator,
                               r.i_xt, r.i_ty, r.i_prev, r.ib, r.nuisance_ratio,
                               std::isnan(r.kappa) ? "-" : fmt::format("{:.4f}", r.kappa));
    }
    std::cout << fmt::format("{:<16} {:<30} {:>39.4f}\n", "total IB", estimator, analysis::ib_total(a, last, estimator));
  }
  std::cout << c.run << "/analysis.csv\n";
  return 0;
}

}  // namespace ibn::cli
