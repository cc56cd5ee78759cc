#pragma once
// Information-bottleneck analysis of a run's activation store (SPEC §3): per saved epoch and
// layer, I(X;T_l), I(T_l;Y), I(T_{l-1};T_l) with each chosen estimator, the IB value
// IB_l = I(T_l;Y) − β·I(T_{l−1};T_l) and its sum over the model's representation chain, the
// nuisance ratio of T_l and the variance contraction κ of each normalization site.
//
// The chain (T_1, ..., T_L) is one representation per block and the logits last, as the model
// declares it (models::ModelImpl::chain, recorded in the store) or as --chain gives it; T_0 = X.
// Other taps can be analyzed too (--layers), with I(X;T) and I(T;Y) only: they are not part
// of Σ_l, so no block is counted twice.
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
  // At most this many samples (a seeded subset, the same for every epoch and layer); 0: every
  // one. KDE and KSG grow as N²: the cap keeps a default analysis near a minute.
  int64_t max_samples = 10000;
  std::string chain = "model";            // model (the store's chain), or tap names in forward order
  std::string layers = "chain";           // chain, all, or tap names analyzed besides the chain
  bool sensitivity = true;                // the resolution table (sensitivity_estimators())
  std::string epochs = "all";             // all, or a list: 0,10,100
  uint64_t seed = 0;                      // of the subset and the neural estimators
  bool quiet = false;
};

// One (epoch, layer, estimator): nats. `kappa` is NaN for layers that are not norm sites;
// `i_prev` and `ib` are NaN for layers off the chain.
struct AnalysisRow {
  int64_t epoch = 0;
  std::string layer;
  std::string estimator;  // canonical spec
  bool in_chain = false;
  double i_xt = 0, i_ty = 0, i_prev = 0, ib = 0;
  double nuisance_ratio = 0, kappa = 0;
};

// Σ over the chain at one (epoch, estimator): IB(β) = i_ty − β·i_prev for any β.
struct ChainTotal {
  int64_t epoch = 0;
  std::string estimator;
  double i_ty = 0, i_prev = 0, ib = 0;
};

// I(X;T) and I(T;Y) of one layer at one epoch under one estimator setting: how the numbers
// move with the estimator's resolution (bins, noise variance).
struct SensitivityRow {
  std::string estimator;
  double i_xt = 0, i_ty = 0;
};

struct Analysis {
  std::vector<std::string> layers;      // every analyzed layer, in forward order
  std::vector<std::string> chain;       // the representation chain X -> T_1 -> ... -> logits
  std::vector<std::string> estimators;  // canonical specs
  std::vector<AnalysisRow> rows;        // epoch-major, then layer, then estimator
  std::vector<ChainTotal> totals;       // epoch-major, then estimator
  double beta = 1.0;
  std::string units = "nats", split = "all";
  int64_t samples = 0;        // analyzed (after the cap)
  int64_t stored_samples = 0; // in the store's chosen split, before the cap
  // The resolution table: `sensitivity_layer` (the last hidden representation of the chain)
  // at `sensitivity_epoch` (the last analyzed). Empty when not computed.
  std::string sensitivity_layer;
  int64_t sensitivity_epoch = 0;
  std::vector<SensitivityRow> sensitivity;
};

// The estimator settings of the resolution table: binning with 10, 30 and 100 bins, KDE with
// noise variance 0.01, 0.1 and 1.
std::vector<std::string> sensitivity_estimators();

// Σ_l IB_l over the chain, the multi-layer objective, at one epoch with one estimator.
double ib_total(const Analysis& analysis, int64_t epoch, const std::string& estimator);
// The chain totals at one epoch with one estimator; ibn::DataError when there are none.
const ChainTotal& chain_total(const Analysis& analysis, int64_t epoch, const std::string& estimator);

// Nuisance ratio tr(Σ_within-class) / tr(Σ_total) of t [N, d] under labels [N].
double nuisance_ratio(const at::Tensor& t, const at::Tensor& labels);

// Checks the options alone (estimator specs, β, split, device), with nothing read or written:
// ibn::UsageError for the first bad one.
void check_options(const AnalyzeConfig& config);
// The same, and --chain, --layers and --epochs against what a run will dump and its model's
// chain (for a sweep's points, checked before they train).
void check_options(const AnalyzeConfig& config, const std::vector<std::string>& dumped_layers,
                   const std::vector<std::string>& model_chain, const std::vector<int64_t>& dumped_epochs);

// Runs the analysis and writes RUN/analysis.h5 (what reports and notebooks read) and
// RUN/analysis.csv (the same rows for a reader's eye; all whole or absent).
// Throws ibn::UsageError for bad options or a run that is not complete (naming how to resume
// it), ibn::DataError for unusable data.
Analysis analyze(const AnalyzeConfig& config, std::ostream& log);

// Reads RUN/analysis.h5 back, with β, units, split and the estimators' parameters (for
// reports). ibn::UsageError when the run has no analysis, ibn::DataError for a damaged one.
Analysis read_analysis(const std::string& run);

}  // namespace ibn::analysis
