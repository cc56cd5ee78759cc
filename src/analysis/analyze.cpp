#include "ibn/analysis/analyze.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/csv.h"
#include "ibn/io/hdf5.h"
#include "ibn/mi/estimator.h"
#include "ibn/spec_string.h"
#include "ibn/train/train.h"

namespace ibn::analysis {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* const kColumns = "epoch,layer,estimator,I_XT_nats,I_TY_nats,I_prev_nats,IB_nats,nuisance_ratio,kappa";

std::string number(double v) { return std::isnan(v) ? "nan" : fmt::format("{:.8g}", v); }

// Only binning reads X as the sample's identity (every sample its own bin: I(X;T) = H(T')).
// The others take the inputs themselves; kde's channel mode then gives H(T + noise) − H(noise).
bool takes_x_as_identity(const std::string& spec) { return spec.rfind("binning", 0) == 0; }

}  // namespace

double nuisance_ratio(const at::Tensor& t_in, const at::Tensor& labels) {
  const at::Tensor t = t_in.reshape({t_in.size(0), -1}).to(at::kDouble);
  const at::Tensor y = labels.reshape({-1}).to(at::kLong);
  const int64_t classes = y.max().item<int64_t>() + 1;
  const at::Tensor sums = at::zeros({classes, t.size(1)}, t.options()).index_add_(0, y, t);
  const at::Tensor counts = at::bincount(y, {}, classes).to(at::kDouble).clamp_min(1).unsqueeze(1);
  const at::Tensor within = (t - (sums / counts).index_select(0, y)).pow(2).sum();
  const at::Tensor total = (t - t.mean(0, true)).pow(2).sum();
  const double total_value = total.item<double>();
  return total_value > 0 ? within.item<double>() / total_value : kNaN;
}

double ib_total(const Analysis& analysis, int64_t epoch, const std::string& estimator) {
  double total = 0;
  for (const AnalysisRow& row : analysis.rows) {
    if (row.epoch == epoch && row.estimator == estimator) total += row.ib;
  }
  return total;
}

namespace {

std::vector<std::unique_ptr<mi::Estimator>> checked_estimators(const AnalyzeConfig& c) {
  if (!(c.beta >= 0) || !std::isfinite(c.beta)) throw UsageError(fmt::format("--beta {} must be a finite number >= 0", c.beta));
  if (c.split != "all" && c.split != "train" && c.split != "test") {
    throw UsageError(fmt::format("--split '{}' must be one of: all, train, test", c.split));
  }
  if (c.max_samples < 0) throw UsageError(fmt::format("--max-samples {} must be >= 0", c.max_samples));
  if (c.estimators.empty()) throw UsageError("give at least one --estimator");
  std::vector<std::unique_ptr<mi::Estimator>> estimators;
  for (const std::string& spec : c.estimators) estimators.push_back(mi::make_estimator(spec));
  resolve_device(c.device);
  return estimators;
}

// --layers: "all", or names among `available`, returned in forward order (the IB chain's).
std::vector<std::string> chosen_layers(const std::string& spec, const std::vector<std::string>& available,
                                       const std::string& source) {
  if (spec == "all") return available;
  std::vector<std::string> layers;
  for (const std::string& name : split(spec, ',')) {
    if (std::find(available.begin(), available.end(), name) == available.end()) {
      throw UsageError(fmt::format("--layers: {} has no layer '{}'; it has: {}", source, name, fmt::join(available, ", ")));
    }
    layers.push_back(name);
  }
  std::sort(layers.begin(), layers.end(), [&](const std::string& a, const std::string& b) {
    return std::find(available.begin(), available.end(), a) < std::find(available.begin(), available.end(), b);
  });
  return layers;
}

// --epochs: "all", or epochs among `dumped`, sorted.
std::vector<int64_t> chosen_epochs(const std::string& spec, const std::vector<int64_t>& dumped, const std::string& source) {
  if (spec == "all") return dumped;
  std::vector<int64_t> chosen;
  for (const std::string& word : split(spec, ',')) {
    char* end = nullptr;
    const long long e = std::strtoll(word.c_str(), &end, 10);
    if (word.empty() || *end != '\0' || std::find(dumped.begin(), dumped.end(), e) == dumped.end()) {
      throw UsageError(fmt::format("--epochs: epoch '{}' was not dumped; {} has epochs {}", word, source, fmt::join(dumped, ",")));
    }
    chosen.push_back(e);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace

void check_options(const AnalyzeConfig& config) { checked_estimators(config); }

void check_options(const AnalyzeConfig& config, const std::vector<std::string>& dumped_layers,
                   const std::vector<int64_t>& dumped_epochs) {
  checked_estimators(config);
  chosen_layers(config.layers, dumped_layers, "the run");
  if (chosen_epochs(config.epochs, dumped_epochs, "the run").empty()) {
    throw UsageError("the run dumps no epochs (--dump-epochs none), so there is nothing to analyze");
  }
}

Analysis analyze(const AnalyzeConfig& c, std::ostream& log) {
  const std::vector<std::unique_ptr<mi::Estimator>> estimators = checked_estimators(c);
  Analysis out;
  out.beta = c.beta;
  for (const auto& estimator : estimators) out.estimators.push_back(estimator->spec());
  const c10::Device device = resolve_device(c.device);
  const train::RunStatus status = train::run_status(c.run);
  if (status.state == train::RunStatus::State::damaged) throw DataError(status.summary);
  if (status.state != train::RunStatus::State::complete) throw UsageError(status.summary);
  const std::string store = c.run + "/activations.h5";

  const std::vector<std::string> all_layers = split(std::get<std::string>(io::read_attribute(store, "/", "layers")), ',');
  out.layers = chosen_layers(c.layers, all_layers, "the store");
  const at::Tensor dumped_tensor = io::read_dataset(store, "/meta/dumped_epochs");
  std::vector<int64_t> dumped;
  for (int64_t i = 0; i < dumped_tensor.numel(); ++i) dumped.push_back(dumped_tensor[i].item<int64_t>());
  const std::vector<int64_t> epochs = chosen_epochs(c.epochs, dumped, "the store");
  if (epochs.empty()) throw UsageError(fmt::format("'{}' holds no dumped epochs (the run used --dump-epochs none)", store));

  // The samples: a split, then a seeded subset.
  const at::Tensor split_of_sample = io::read_dataset(store, "/data/split");
  at::Tensor rows = c.split == "all" ? at::arange(split_of_sample.size(0), at::kLong)
                                     : split_of_sample.eq(c.split == "train" ? 0 : 1).nonzero().squeeze(1);
  if (c.max_samples > 0 && c.max_samples < rows.size(0)) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(c.seed + 11);
    rows = std::get<0>(rows.index_select(0, at::randperm(rows.size(0), g, at::TensorOptions().dtype(at::kLong))
                                                  .slice(0, 0, c.max_samples)).sort());
  }
  // Every array of the store has one row per sample of /data/split; a store edited or written
  // by another tool may not, and index_select would fail with LibTorch's "index out of range".
  const int64_t samples = split_of_sample.size(0);
  const auto take_from = [&](const std::string& name) {
    const at::Tensor t = io::read_dataset(store, name);
    if (t.dim() == 0 || t.size(0) != samples) {
      throw DataError(fmt::format("'{}' in '{}' has {} rows, but /data/split has {} samples", name, store,
                                  t.dim() == 0 ? 0 : t.size(0), samples));
    }
    return t.index_select(0, rows).to(device);
  };
  at::Tensor labels = take_from("/data/labels");
  if (labels.dim() > 1) labels = labels.select(1, labels.size(1) - 1);  // text: the byte after the window
  if (labels.numel() > 0 && labels.min().item<int64_t>() < 0) {
    throw DataError(fmt::format("'/data/labels' in '{}' holds negative labels; labels are classes 0, 1, ...", store));
  }
  const mi::Variable y{labels, true};
  const at::Tensor inputs = take_from("/data/inputs");
  const mi::Variable x_values{inputs.reshape({inputs.size(0), -1}).to(at::kFloat), false};
  const mi::Variable x_identity{at::arange(inputs.size(0), at::TensorOptions().dtype(at::kLong).device(device)), true};
  const std::vector<std::string> datasets = io::list_datasets(store);
  const auto has = [&](const std::string& name) { return std::binary_search(datasets.begin(), datasets.end(), name); };

  if (!c.quiet) {
    log << fmt::format("analyzing {}: {} epochs x {} layers x {} estimators on {} samples ({})\n", store, epochs.size(),
                       out.layers.size(), estimators.size(), rows.size(0), device.str())
        << std::flush;
  }
  for (const int64_t epoch : epochs) {
    mi::Variable previous = x_values;
    for (const std::string& layer : out.layers) {
      const mi::Variable t{take_from(fmt::format("/epochs/{}/{}", epoch, layer)), false};
      const std::string kappa_path = fmt::format("/contraction/{}/{}", epoch, layer);
      const double kappa = has(kappa_path) ? io::read_dataset(store, kappa_path)[0].item<double>() : kNaN;
      const double nuisance = nuisance_ratio(t.values, y.values);
      const bool first = &layer == &out.layers.front();
      for (size_t k = 0; k < estimators.size(); ++k) {
        const mi::Estimator& estimator = *estimators[k];
        const bool identity = takes_x_as_identity(out.estimators[k]);
        AnalysisRow row;
        row.epoch = epoch;
        row.layer = layer;
        row.estimator = out.estimators[k];
        row.i_xt = estimator.estimate(identity ? x_identity : x_values, t).nats;
        row.i_ty = estimator.estimate(t, y).nats;
        row.i_prev = first ? row.i_xt : estimator.estimate(previous, t).nats;
        row.ib = row.i_ty - c.beta * row.i_prev;
        row.nuisance_ratio = nuisance;
        row.kappa = kappa;
        out.rows.push_back(row);
      }
      previous = t;
    }
    if (!c.quiet) log << fmt::format("  epoch {} done\n", epoch) << std::flush;
  }

  // analysis.csv (long format) and analysis.h5 (the same columns, with the parameters).
  std::string csv = std::string(kColumns) + "\n";
  std::vector<double> columns[7];
  std::vector<int64_t> layer_index, estimator_index;
  for (const AnalysisRow& r : out.rows) {
    csv += fmt::format("{},{},{},{},{},{},{},{},{}\n", r.epoch, io::csv_field(r.layer), io::csv_field(r.estimator), number(r.i_xt),
                       number(r.i_ty), number(r.i_prev), number(r.ib), number(r.nuisance_ratio), number(r.kappa));
    const double values[7] = {static_cast<double>(r.epoch), r.i_xt, r.i_ty, r.i_prev, r.ib, r.nuisance_ratio, r.kappa};
    for (int i = 0; i < 7; ++i) columns[i].push_back(values[i]);
    layer_index.push_back(std::find(out.layers.begin(), out.layers.end(), r.layer) - out.layers.begin());
    estimator_index.push_back(std::find(out.estimators.begin(), out.estimators.end(), r.estimator) - out.estimators.begin());
  }
  const char* names[7] = {"epoch", "I_XT", "I_TY", "I_prev", "IB", "nuisance_ratio", "kappa"};
  std::vector<io::DatasetToWrite> h5;
  for (int i = 0; i < 7; ++i) h5.push_back({std::string("/rows/") + names[i], at::tensor(columns[i], at::kDouble), {}});
  h5.push_back({"/rows/layer_index", at::tensor(layer_index, at::kLong), {}});
  std::string totals_csv = "epoch,estimator,IB_total_nats\n";
  std::vector<int64_t> total_epoch, total_estimator;
  std::vector<double> total_ib;
  for (const int64_t epoch : epochs) {
    for (size_t k = 0; k < out.estimators.size(); ++k) {
      const double ib = ib_total(out, epoch, out.estimators[k]);
      totals_csv += fmt::format("{},{},{}\n", epoch, io::csv_field(out.estimators[k]), number(ib));
      total_epoch.push_back(epoch);
      total_estimator.push_back(static_cast<int64_t>(k));
      total_ib.push_back(ib);
    }
  }
  h5.push_back({"/totals/epoch", at::tensor(total_epoch, at::kLong), {}});
  h5.push_back({"/totals/estimator_index", at::tensor(total_estimator, at::kLong), {}});
  h5.push_back({"/totals/IB", at::tensor(total_ib, at::kDouble), {}});
  h5.push_back({"/rows/estimator_index", at::tensor(estimator_index, at::kLong), {}});
  // All three files or none: a report must not pair a new analysis.h5 with an old analysis.csv.
  const std::string h5_path = c.run + "/analysis.h5";
  std::string image = io::hdf5_image(h5_path, h5,
                     {{"layers", fmt::format("{}", fmt::join(out.layers, ","))},
                      {"estimators", fmt::format("{}", fmt::join(out.estimators, "\n"))},
                      {"beta", c.beta}, {"units", std::string("nats")}, {"split", c.split},
                      {"samples", static_cast<int64_t>(rows.size(0))}, {"seed", static_cast<int64_t>(c.seed)},
                      {"store", store}, {"device", device.str()},
                      {"definitions", std::string("I_prev = I(T_{l-1};T_l) with T_0 = X; IB = I_TY - beta * I_prev; "
                                                  "nuisance_ratio = tr(S_within)/tr(S_total); kappa: NaN off norm sites")}});
  io::write_files_atomically({{h5_path, std::move(image)}, {c.run + "/analysis_totals.csv", totals_csv}, {c.run + "/analysis.csv", csv}});
  return out;
}

Analysis read_analysis(const std::string& run) {
  const std::string path = run + "/analysis.csv";
  std::ifstream in(path);
  if (!in) throw UsageError(fmt::format("no analysis in '{}' (run: ibn analyze {})", run, run));
  std::string line;
  std::getline(in, line);
  if (line != kColumns) throw DataError(fmt::format("'{}' does not start with the columns {}", path, kColumns));
  Analysis out;
  std::set<std::string> seen_layers, seen_estimators;
  for (int64_t number_of_line = 2; std::getline(in, line); ++number_of_line) {
    const std::vector<std::string> f = io::csv_fields(line);
    if (f.size() != 9) throw DataError(fmt::format("{}:{}: expected 9 fields, found {}", path, number_of_line, f.size()));
    AnalysisRow r;
    const std::string where = fmt::format("{}:{}", path, number_of_line);
    r.epoch = io::csv_integer(f[0], where);
    r.layer = f[1];
    r.estimator = f[2];
    double* targets[6] = {&r.i_xt, &r.i_ty, &r.i_prev, &r.ib, &r.nuisance_ratio, &r.kappa};
    for (int i = 0; i < 6; ++i) *targets[i] = f[3 + i] == "nan" ? kNaN : io::csv_number(f[3 + i], where);
    if (seen_layers.insert(r.layer).second) out.layers.push_back(r.layer);
    if (seen_estimators.insert(r.estimator).second) out.estimators.push_back(r.estimator);
    out.rows.push_back(r);
  }
  return out;
}

}  // namespace ibn::analysis
