// ibn analyze RUN: the information-bottleneck quantities of a run's activation store.
#include <cmath>
#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "command.h"
#include "ibn/analysis/analyze.h"
#include "ibn/device.h"
#include "ibn/error.h"

namespace ibn::cli {

AnalyzeOptions::AnalyzeOptions()
    : cmd("analyze", "ibn analyze RUN_DIR [--estimator SPEC ...] [--beta B] [options]",
          "Per saved epoch and layer of RUN_DIR/activations.h5: I(X;T) and I(T;Y) with each\n"
          "estimator. Along the model's representation chain T_1..T_L (one representation per\n"
          "block, the logits last; the MLP's chain is fc1..fcK,logits) also I(T_prev;T) (T_0 = X),\n"
          "the IB value I(T;Y) - beta*I(T_prev;T) and its sum over the chain, which counts no\n"
          "block twice. Also the nuisance ratio tr(S_within)/tr(S_total) of T, the variance\n"
          "contraction kappa of each normalization site, and a resolution table (I(X;T), I(T;Y)\n"
          "of the last hidden representation under 3 bin counts and 3 KDE noise variances).\n"
          "Writes RUN_DIR/analysis.h5 (nats, beta, every estimator parameter; what reports read)\n"
          "and RUN_DIR/analysis.csv. Binning reads X as the sample's identity (I(X;T) = H of the\n"
          "binned T); the other estimators read the inputs.\n\n"
          "  ibn analyze runs/t1 --estimator binning:bins=30 --estimator kde:var=0.1") {
  analysis::AnalyzeConfig& c = config;
  cmd.options.add_options()
      ("run", po::value<std::string>(&c.run)->value_name("RUN_DIR"), "the run directory (also the first argument)")
      ("estimator", po::value<std::vector<std::string>>()->composing()->value_name("SPEC"),
       "an estimator spec, repeatable (default: binning and kde, as in the info-plane literature)")
      ("beta", po::value<double>(&c.beta)->default_value(c.beta), "beta of the IB value")
      ("device", po::value<std::string>(&c.device)->default_value(c.device), "cpu, cuda, cuda:N or auto")
      ("split", po::value<std::string>(&c.split)->default_value(c.split), "samples: all, train or test")
      ("max-samples", po::value<int64_t>(&c.max_samples)->default_value(c.max_samples), "at most this many samples, a seeded subset (KDE and KSG grow as N^2); 0: all")
      ("chain", po::value<std::string>(&c.chain)->default_value(c.chain),
       "the representation chain the IB sum runs over: model (the model's own), or taps in forward order: fc1,fc3,logits")
      ("layers", po::value<std::string>(&c.layers)->default_value(c.layers),
       "what to analyze: chain, all (every dumped tap), or more tap names: norm1,norm2 (taps off the chain get I(X;T) and "
       "I(T;Y) only)")
      ("no-sensitivity", "skip the resolution table")
      ("epochs", po::value<std::string>(&c.epochs)->default_value(c.epochs), "all, or dumped epochs: 0,10,100")
      ("seed", po::value<int64_t>(&seed)->default_value(seed), "seed of the subset and the neural estimators")
      ("threads", po::value<int>(&threads)->default_value(threads),
       "CPU threads (0: every core; the estimates do not depend on it beyond float rounding)")
      ("quiet", "no progress lines");
  cmd.positional.add("run", 1);
}

analysis::AnalyzeConfig AnalyzeOptions::resolved(const po::variables_map& vm) {
  analysis::AnalyzeConfig c = config;
  c.seed = checked_seed("seed", seed);
  if (vm.count("estimator")) c.estimators = vm["estimator"].as<std::vector<std::string>>();
  c.quiet = vm.count("quiet") > 0;
  c.sensitivity = vm.count("no-sensitivity") == 0;
  return c;
}

int run_analyze(const std::vector<std::string>& args) {
  AnalyzeOptions options;
  CommandOptions& cmd = options.cmd;
  const auto vm = cmd.parse(args);
  if (!vm) return 0;
  const analysis::AnalyzeConfig c = options.resolved(*vm);
  if (c.run.empty()) throw UsageError("give the run directory: ibn analyze RUN_DIR");
  set_compute_threads(options.threads == 0 ? every_core() : options.threads);
  const analysis::Analysis a = analysis::analyze(c, std::cout);

  // The last epoch, per layer and estimator, and the total IB value.
  const int64_t last = a.rows.back().epoch;
  std::cout << fmt::format("epoch {} (nats; IB with beta = {}; chain {}):\n{:<16} {:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
                           last, a.beta, fmt::join(a.chain, ","), "layer", "estimator", "I(X;T)", "I(T;Y)", "I(Tp;T)", "IB",
                           "nuisance", "kappa");
  for (const auto& estimator : a.estimators) {
    for (const analysis::AnalysisRow& r : a.rows) {
      if (r.epoch != last || r.estimator != estimator) continue;
      std::cout << fmt::format("{:<16} {:<30} {:>9.4f} {:>9.4f} {:>9.4f} {:>9.4f} {:>9.4f} {:>7}\n", r.layer, r.estimator,
                               r.i_xt, r.i_ty, r.i_prev, r.ib, r.nuisance_ratio,
                               std::isnan(r.kappa) ? "-" : fmt::format("{:.4f}", r.kappa));
    }
    const analysis::ChainTotal& total = analysis::chain_total(a, last, estimator);
    std::cout << fmt::format("{:<16} {:<30} {:>9} {:>9.4f} {:>9.4f} {:>9.4f}\n", "chain total", estimator, "", total.i_ty,
                             total.i_prev, total.ib);
  }
  std::cout << c.run << "/analysis.h5\n";
  return 0;
}

}  // namespace ibn::cli
