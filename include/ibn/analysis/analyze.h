#pragma once
// Information-bottleneck analysis of a run's activation store (SPEC §3): per saved epoch and
// layer, I(X;T_l), I(T_l;Y), I(T_{l-1};T_l) (T_0 = X) with each chosen estimator, the IB value
// IB_l = I(T_l;Y) − β·I(T_{l−1};T_l) and its sum over layers, the nuisance ratio of T_l and the
// variance contraction κ of each normalization site.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ibn::analysis {

struct AnalyzeConfig {
  std::string run;                        // run directory (its activations.h5 must be complete)
  std::vector<std::string> estimators = {"binning", "kde"};
  double beta = 1.0;
  std::string device = "cpu";
  std::string split = "all";              // all, train or test samples of the store
  int64_t max_samples = 0;                // 0: every sample; else a seeded subset of this many
  std::string layers = "all";             // all, or tap names: fc1,fc2
  std::string epochs = "all";             // all, or a list: 0,10,100
  uint64_t seed = 0;                      // of the subset and the neural estimators
  bool quiet = false;
};

// One (epoch, layer, estimator): nats. `kappa` is NaN for layers that are not norm sites.
struct AnalysisRow {
  int64_t epoch = 0;
  std::string layer;
  std::string estimator;  // canonical spec
  double i_xt = 0, i_ty = 0, i_prev = 0, ib = 0;
  double nuisance_ratio = 0, kappa = 0;
};

struct Analysis {
  std::vector<std::string> layers;      // in forward order: the IB chain X -> T_1 -> ...
  std::vector<std::string> estimators;  // canonical specs
  std::vector<AnalysisRow> rows;        // epoch-major, then layer, then estimator
  double beta = 1.0;
};

// Σ_l IB_l, the multi-layer objective, at one epoch with one estimator (its canonical spec).
double ib_total(const Analysis& analysis, int64_t epoch, const std::string& estimator);

// Nuisance ratio tr(Σ_within-class) / tr(Σ_total) of t [N, d] under labels [N].
double nuisance_ratio(const at::Tensor& t, const at::Tensor& labels);

// Checks the options alone (estimator specs, β, split, device), with nothing read or written:
// ibn::UsageError for the first bad one.
void check_options(const AnalyzeConfig& config);
// The same, and --layers and --epochs against what a run will dump (for a sweep's points,
// checked before they train).
void check_options(const AnalyzeConfig& config, const std::vector<std::string>& dumped_layers,
                   const std::vector<int64_t>& dumped_epochs);

// Runs the analysis and writes RUN/analysis.h5 and RUN/analysis.csv (each whole or absent).
// Throws ibn::UsageError for bad options or a run that is not complete (naming how to resume
// it), ibn::DataError for unusable data.
Analysis analyze(const AnalyzeConfig& config, std::ostream& log);

// Reads RUN/analysis.csv back (for reports).
Analysis read_analysis(const std::string& run);

}  // namespace ibn::analysis
