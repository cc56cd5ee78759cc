#include "ibn/analysis/analyze.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <variant>

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
#include "ibn/train/run_directory.h"
#include "ibn/train/train.h"

namespace ibn::analysis {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* const kColumns = "epoch,layer,estimator,in_chain,I_XT_nats,I_TY_nats,I_prev_nats,IB_nats,nuisance_ratio,kappa";

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
  return chain_total(analysis, epoch, estimator).ib;
}

const ChainTotal& chain_total(const Analysis& analysis, int64_t epoch, const std::string& estimator) {
  for (const ChainTotal& total : analysis.totals) {
    if (total.epoch == epoch && total.estimator == estimator) return total;
  }
  throw DataError(fmt::format("the analysis has no chain total for epoch {} with '{}'", epoch, estimator));
}

std::vector<std::string> sensitivity_estimators() {
  return {"binning:bins=10", "binning:bins=30", "binning:bins=100", "kde:var=0.01", "kde:var=0.1", "kde:var=1"};
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

// Position of `name` among `available`, or UsageError naming the option and what there is.
size_t position_of(const std::string& name, const std::vector<std::string>& available, const std::string& option,
                   const std::string& source) {
  const auto found = std::find(available.begin(), available.end(), name);
  if (found == available.end()) {
    throw UsageError(fmt::format("{}: {} has no layer '{}'; it has: {}", option, source, name, fmt::join(available, ", ")));
  }
  return static_cast<size_t>(found - available.begin());
}

struct LayerPlan {
  std::vector<std::string> chain;   // the IB chain, forward order
  std::vector<std::string> layers;  // the chain and the other taps asked for, forward order
};

// --chain ("model": the chain the model declared, recorded in the store) and --layers
// ("chain", "all", or more taps) against the taps `available` in forward order.
LayerPlan plan_layers(const AnalyzeConfig& c, const std::vector<std::string>& available,
                      const std::vector<std::string>& model_chain, const std::string& source) {
  LayerPlan plan;
  if (c.chain == "model") {
    if (model_chain.empty()) {
      throw UsageError(fmt::format("{} records no representation chain (it predates them): give --chain TAP,TAP,...", source));
    }
    for (const std::string& name : model_chain) {
      if (std::find(available.begin(), available.end(), name) == available.end()) {
        throw UsageError(fmt::format("the model's chain ({}) needs layer '{}', which {} does not hold (see --dump-layers); "
                                     "dump it or give --chain", fmt::join(model_chain, ","), name, source));
      }
    }
    plan.chain = model_chain;
  } else {
    plan.chain = split(c.chain, ',');
    size_t previous = 0;
    for (size_t i = 0; i < plan.chain.size(); ++i) {
      const size_t at = position_of(plan.chain[i], available, "--chain", source);
      if (i > 0 && at <= previous) {
        throw UsageError(fmt::format("--chain '{}' must list layers in forward order, each once ({})", c.chain,
                                     fmt::join(available, ", ")));
      }
      previous = at;
    }
  }
  std::vector<std::string> wanted = plan.chain;
  if (c.layers == "all") {
    wanted = available;
  } else if (c.layers != "chain") {
    for (const std::string& name : split(c.layers, ',')) {
      position_of(name, available, "--layers", source);
      wanted.push_back(name);
    }
  }
  for (const std::string& name : available) {
    if (std::find(wanted.begin(), wanted.end(), name) != wanted.end()) plan.layers.push_back(name);
  }
  return plan;
}

// --epochs: "all", or epochs among `dumped`, sorted.
std::vector<int64_t> chosen_epochs(const std::string& spec, const std::vector<int64_t>& dumped, const std::string& source) {
  if (spec == "all") return dumped;
  std::vector<int64_t> chosen;
  for (const std::string& word : split(spec, ',')) {
    const std::optional<int64_t> e = parse_integer(word);
    if (!e || std::find(dumped.begin(), dumped.end(), *e) == dumped.end()) {
      throw UsageError(fmt::format("--epochs: epoch '{}' was not dumped; {} has epochs {}", word, source, fmt::join(dumped, ",")));
    }
    chosen.push_back(*e);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace

void check_options(const AnalyzeConfig& config) { checked_estimators(config); }

void check_options(const AnalyzeConfig& config, const std::vector<std::string>& dumped_layers,
                   const std::vector<std::string>& model_chain, const std::vector<int64_t>& dumped_epochs) {
  checked_estimators(config);
  plan_layers(config, dumped_layers, model_chain, "the run");
  if (chosen_epochs(config.epochs, dumped_epochs, "the run").empty()) {
    throw UsageError("the run dumps no epochs (--dump-epochs none), so there is nothing to analyze");
  }
}

namespace {

// The analyzed samples of a store: a split, then a seeded subset, as X (values and identity)
// and Y; `take` reads any per-sample array of the store at those rows.
struct Samples {
  std::string store;
  at::Tensor rows;
  int64_t count = 0;  // rows of the store's /data/split
  int64_t stored = 0; // rows of the chosen split, before --max-samples
  c10::Device device = c10::Device(c10::kCPU);
  mi::Variable y, x_values, x_identity;

  at::Tensor take(const std::string& name) const {
    const at::Tensor t = io::read_dataset(store, name);
    // Every array of the store has one row per sample of /data/split; a store edited or
    // written by another tool may not, and index_select would fail with "index out of range".
    if (t.dim() == 0 || t.size(0) != count) {
      throw DataError(fmt::format("'{}' in '{}' has {} rows, but /data/split has {} samples", name, store,
                                  t.dim() == 0 ? 0 : t.size(0), count));
    }
    return t.index_select(0, rows).to(device);
  }
};

Samples load_samples(const AnalyzeConfig& c, const std::string& store, c10::Device device) {
  Samples s;
  s.store = store;
  s.device = device;
  const at::Tensor split_of_sample = io::read_dataset(store, "/data/split");
  s.count = split_of_sample.size(0);
  s.rows = c.split == "all" ? at::arange(s.count, at::kLong)
                            : split_of_sample.eq(c.split == "train" ? 0 : 1).nonzero().squeeze(1);
  s.stored = s.rows.size(0);
  if (c.max_samples > 0 && c.max_samples < s.rows.size(0)) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(c.seed + 11);
    s.rows = std::get<0>(s.rows.index_select(0, at::randperm(s.rows.size(0), g, at::TensorOptions().dtype(at::kLong))
                                                    .slice(0, 0, c.max_samples)).sort());
  }
  at::Tensor labels = s.take("/data/labels");
  if (labels.dim() > 1) labels = labels.select(1, labels.size(1) - 1);  // text: the byte after the window
  if (labels.numel() > 0 && labels.min().item<int64_t>() < 0) {
    throw DataError(fmt::format("'/data/labels' in '{}' holds negative labels; labels are classes 0, 1, ...", store));
  }
  s.y = {labels, true};
  const at::Tensor inputs = s.take("/data/inputs");
  s.x_values = {inputs.reshape({inputs.size(0), -1}).to(at::kFloat), false};
  s.x_identity = {at::arange(inputs.size(0), at::TensorOptions().dtype(at::kLong).device(device)), true};
  return s;
}

// I(X;T): binning reads X as the sample's identity, the others read the inputs.
double information_from_x(const mi::Estimator& estimator, const Samples& s, const mi::Variable& t) {
  return estimator.nats(takes_x_as_identity(estimator.spec()) ? s.x_identity : s.x_values, t);
}

// The rows of one epoch: every analyzed layer with every estimator, the chain's I(T_{l−1};T_l)
// and IB_l; then the chain's totals.
void analyze_epoch(const AnalyzeConfig& c, const Samples& s, const LayerPlan& plan,
                   const std::vector<std::unique_ptr<mi::Estimator>>& estimators, int64_t epoch,
                   const std::vector<std::string>& datasets, Analysis& out) {
  const auto has = [&](const std::string& name) { return std::binary_search(datasets.begin(), datasets.end(), name); };
  std::vector<ChainTotal> totals(estimators.size());
  mi::Variable previous = s.x_values;
  bool first_in_chain = true;
  for (const std::string& layer : plan.layers) {
    const mi::Variable t{s.take(fmt::format("/epochs/{}/{}", epoch, layer)), false};
    const std::string kappa_path = fmt::format("/contraction/{}/{}", epoch, layer);
    const double kappa = has(kappa_path) ? io::read_dataset(s.store, kappa_path)[0].item<double>() : kNaN;
    const double nuisance = nuisance_ratio(t.values, s.y.values);
    const bool in_chain = std::find(plan.chain.begin(), plan.chain.end(), layer) != plan.chain.end();
    for (size_t k = 0; k < estimators.size(); ++k) {
      const mi::Estimator& estimator = *estimators[k];
      AnalysisRow row;
      row.epoch = epoch;
      row.layer = layer;
      row.estimator = out.estimators[k];
      row.in_chain = in_chain;
      row.i_xt = information_from_x(estimator, s, t);
      row.i_ty = estimator.nats(t, s.y);
      row.i_prev = row.ib = kNaN;
      if (in_chain) {
        // T_1's predecessor is X itself; a channel estimator reads only T_l (T_l = f(T_{l−1})),
        // so its I(T_{l−1};T_l) is its I(X;T_l).
        row.i_prev = first_in_chain || estimator.channel_only() ? row.i_xt : estimator.nats(previous, t);
        row.ib = row.i_ty - c.beta * row.i_prev;
        totals[k].i_ty += row.i_ty;
        totals[k].i_prev += row.i_prev;
        totals[k].ib += row.ib;
      }
      row.nuisance_ratio = nuisance;
      row.kappa = kappa;
      out.rows.push_back(row);
    }
    if (in_chain) {
      previous = t;
      first_in_chain = false;
    }
  }
  for (size_t k = 0; k < estimators.size(); ++k) {
    totals[k].epoch = epoch;
    totals[k].estimator = out.estimators[k];
    out.totals.push_back(totals[k]);
  }
}

// The resolution table: I(X;T) and I(T;Y) of the last hidden representation of the chain at
// the last analyzed epoch, under each of sensitivity_estimators().
void analyze_sensitivity(const Samples& s, const LayerPlan& plan, int64_t epoch, Analysis& out) {
  out.sensitivity_layer = plan.chain.size() > 1 ? plan.chain[plan.chain.size() - 2] : plan.chain.back();
  out.sensitivity_epoch = epoch;
  const mi::Variable t{s.take(fmt::format("/epochs/{}/{}", epoch, out.sensitivity_layer)), false};
  for (const std::string& spec : sensitivity_estimators()) {
    const std::unique_ptr<mi::Estimator> estimator = mi::make_estimator(spec);
    out.sensitivity.push_back({estimator->spec(), information_from_x(*estimator, s, t), estimator->nats(t, s.y)});
  }
}

template <typename T, typename Get>
at::Tensor column(const std::vector<T>& items, Get get, at::ScalarType type) {
  std::vector<double> values;
  for (const T& item : items) values.push_back(static_cast<double>(get(item)));
  return at::tensor(values, at::kDouble).to(type);
}

size_t index_in(const std::vector<std::string>& names, const std::string& name) {
  return static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin());
}

// RUN/analysis.h5 (read by reports and notebooks) and, for the eye, RUN/analysis.csv and
// RUN/analysis_totals.csv: all three or none, so no reader pairs new with old.
void write_analysis(const AnalyzeConfig& c, const Analysis& a, const std::string& store, c10::Device device) {
  std::string csv = std::string(kColumns) + "\n";
  for (const AnalysisRow& r : a.rows) {
    csv += fmt::format("{},{},{},{},{},{},{},{},{},{}\n", r.epoch, io::csv_field(r.layer), io::csv_field(r.estimator),
                       r.in_chain ? 1 : 0, number(r.i_xt), number(r.i_ty), number(r.i_prev), number(r.ib),
                       number(r.nuisance_ratio), number(r.kappa));
  }
  std::string totals_csv = "epoch,estimator,I_TY_chain_nats,I_prev_chain_nats,IB_total_nats\n";
  for (const ChainTotal& t : a.totals) {
    totals_csv += fmt::format("{},{},{},{},{}\n", t.epoch, io::csv_field(t.estimator), number(t.i_ty), number(t.i_prev), number(t.ib));
  }
  using R = AnalysisRow;
  using T = ChainTotal;
  using S = SensitivityRow;
  std::vector<io::DatasetToWrite> h5 = {
      {"/rows/epoch", column(a.rows, [](const R& r) { return r.epoch; }, at::kLong), {}},
      {"/rows/layer_index", column(a.rows, [&](const R& r) { return index_in(a.layers, r.layer); }, at::kLong), {}},
      {"/rows/estimator_index", column(a.rows, [&](const R& r) { return index_in(a.estimators, r.estimator); }, at::kLong), {}},
      {"/rows/in_chain", column(a.rows, [](const R& r) { return r.in_chain ? 1 : 0; }, at::kLong), {}},
      {"/rows/I_XT", column(a.rows, [](const R& r) { return r.i_xt; }, at::kDouble), {}},
      {"/rows/I_TY", column(a.rows, [](const R& r) { return r.i_ty; }, at::kDouble), {}},
      {"/rows/I_prev", column(a.rows, [](const R& r) { return r.i_prev; }, at::kDouble), {}},
      {"/rows/IB", column(a.rows, [](const R& r) { return r.ib; }, at::kDouble), {}},
      {"/rows/nuisance_ratio", column(a.rows, [](const R& r) { return r.nuisance_ratio; }, at::kDouble), {}},
      {"/rows/kappa", column(a.rows, [](const R& r) { return r.kappa; }, at::kDouble), {}},
      {"/totals/epoch", column(a.totals, [](const T& t) { return t.epoch; }, at::kLong), {}},
      {"/totals/estimator_index", column(a.totals, [&](const T& t) { return index_in(a.estimators, t.estimator); }, at::kLong), {}},
      {"/totals/I_TY", column(a.totals, [](const T& t) { return t.i_ty; }, at::kDouble), {}},
      {"/totals/I_prev", column(a.totals, [](const T& t) { return t.i_prev; }, at::kDouble), {}},
      {"/totals/IB", column(a.totals, [](const T& t) { return t.ib; }, at::kDouble), {}},
  };
  if (!a.sensitivity.empty()) {
    std::string specs;
    for (const S& row : a.sensitivity) specs += (specs.empty() ? "" : "\n") + row.estimator;
    const std::vector<io::Attribute> where = {{"layer", a.sensitivity_layer}, {"epoch", a.sensitivity_epoch}, {"estimators", specs}};
    h5.push_back({"/sensitivity/I_XT", column(a.sensitivity, [](const S& r) { return r.i_xt; }, at::kDouble), where});
    h5.push_back({"/sensitivity/I_TY", column(a.sensitivity, [](const S& r) { return r.i_ty; }, at::kDouble), where});
  }
  const std::string h5_path = c.run + "/analysis.h5";
  std::string image = io::hdf5_image(
      h5_path, h5,
      {{"format", int64_t{2}},
       {"layers", fmt::format("{}", fmt::join(a.layers, ","))},
       {"chain", fmt::format("{}", fmt::join(a.chain, ","))},
       {"estimators", fmt::format("{}", fmt::join(a.estimators, "\n"))},
       {"beta", a.beta}, {"units", a.units}, {"split", a.split},
       {"samples", a.samples}, {"stored_samples", a.stored_samples}, {"max_samples", c.max_samples},
       {"seed", static_cast<int64_t>(c.seed)},
       {"store", store}, {"device", device.str()},
       {"definitions", std::string("chain: T_1..T_L, one representation per block and the logits; I_prev = I(T_{l-1};T_l) "
                                   "with T_0 = X on the chain, NaN off it; IB = I_TY - beta * I_prev; totals sum the chain; "
                                   "nuisance_ratio = tr(S_within)/tr(S_total); kappa: NaN off norm sites")}});
  io::write_files_atomically({{h5_path, std::move(image)}, {c.run + "/analysis_totals.csv", totals_csv}, {c.run + "/analysis.csv", csv}});
}

}  // namespace

Analysis analyze(const AnalyzeConfig& c, std::ostream& log) {
  const std::vector<std::unique_ptr<mi::Estimator>> estimators = checked_estimators(c);
  Analysis out;
  out.beta = c.beta;
  out.split = c.split;
  for (const auto& estimator : estimators) out.estimators.push_back(estimator->spec());
  const c10::Device device = resolve_device(c.device);
  const train::RunStatus status = train::run_status(c.run);
  if (status.state == train::RunStatus::State::damaged) throw DataError(status.summary);
  if (status.state != train::RunStatus::State::complete) throw UsageError(status.summary);
  const std::string store = train::RunDirectory{c.run}.store();

  const std::vector<std::string> all_layers = split(io::read_text_attribute(store, "/", "layers"), ',');
  std::vector<std::string> model_chain;
  try {
    model_chain = split(io::read_text_attribute(store, "/", "chain"), ',');
  } catch (const DataError&) {
    // a store from before chains: --chain must name one
  }
  const LayerPlan plan = plan_layers(c, all_layers, model_chain, fmt::format("'{}'", store));
  out.layers = plan.layers;
  out.chain = plan.chain;
  const at::Tensor dumped_tensor = io::read_dataset(store, "/meta/dumped_epochs");
  std::vector<int64_t> dumped;
  for (int64_t i = 0; i < dumped_tensor.numel(); ++i) dumped.push_back(dumped_tensor[i].item<int64_t>());
  const std::vector<int64_t> epochs = chosen_epochs(c.epochs, dumped, "the store");
  if (epochs.empty()) throw UsageError(fmt::format("'{}' holds no dumped epochs (the run used --dump-epochs none)", store));

  const Samples samples = load_samples(c, store, device);
  out.samples = samples.rows.size(0);
  out.stored_samples = samples.stored;
  const std::vector<std::string> datasets = io::list_datasets(store);
  if (!c.quiet) {
    const std::string subset = out.samples == out.stored_samples
                                   ? "every sample"
                                   : fmt::format("a seeded subset of the {} stored (--max-samples {}, seed {}; 0: all)",
                                                 out.stored_samples, c.max_samples, c.seed);
    log << fmt::format("analyzing {}: {} epochs x {} layers (chain {}) x {} estimators on {} samples, {} ({})\n", store,
                       epochs.size(), out.layers.size(), fmt::join(out.chain, ","), estimators.size(), out.samples,
                       subset, device.str())
        << std::flush;
  }
  const auto start = std::chrono::steady_clock::now();
  for (size_t e = 0; e < epochs.size(); ++e) {
    analyze_epoch(c, samples, plan, estimators, epochs[e], datasets, out);
    if (c.quiet) continue;
    // Epochs cost about the same (same layers, samples and estimators): the mean so far is the ETA's rate.
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double left = elapsed / static_cast<double>(e + 1) * static_cast<double>(epochs.size() - e - 1);
    log << fmt::format("  epoch {} done ({}/{}, {} layers x {} estimators), {:.1f} s so far, ETA {:.0f} s\n", epochs[e],
                       e + 1, epochs.size(), out.layers.size(), estimators.size(), elapsed, left)
        << std::flush;
  }
  if (c.sensitivity) analyze_sensitivity(samples, plan, epochs.back(), out);
  write_analysis(c, out, store, device);
  return out;
}

namespace {

double number_attribute(const std::string& file, const std::string& name) {
  const io::AttributeValue value = io::read_attribute(file, "/", name);
  if (const auto* d = std::get_if<double>(&value)) return *d;
  if (const auto* i = std::get_if<int64_t>(&value)) return static_cast<double>(*i);
  throw DataError(fmt::format("'{}': attribute '{}' is not a number", file, name));
}

// names[index], or DataError: an index out of range means a damaged file.
const std::string& name_at(const std::vector<std::string>& names, double index, const std::string& file, const std::string& what) {
  if (!(index >= 0 && index < static_cast<double>(names.size()))) {
    throw DataError(fmt::format("'{}': {} index {} is out of range (0..{})", file, what, index, names.size()));
  }
  return names[static_cast<size_t>(index)];
}

}  // namespace

Analysis read_analysis(const std::string& run) {
  const std::string path = run + "/analysis.h5";
  if (!std::filesystem::exists(path)) throw UsageError(fmt::format("no analysis in '{}' (run: ibn analyze {})", run, run));
  Analysis out;
  int64_t format = 0;
  try {
    format = static_cast<int64_t>(number_attribute(path, "format"));
  } catch (const DataError&) {
    format = 1;
  }
  if (format < 2) throw UsageError(fmt::format("'{}' predates representation chains; analyze the run again (ibn analyze {})", path, run));
  out.layers = split(io::read_text_attribute(path, "/", "layers"), ',');
  out.chain = split(io::read_text_attribute(path, "/", "chain"), ',');
  out.estimators = split(io::read_text_attribute(path, "/", "estimators"), '\n');
  out.beta = number_attribute(path, "beta");
  out.units = io::read_text_attribute(path, "/", "units");
  out.split = io::read_text_attribute(path, "/", "split");
  out.samples = static_cast<int64_t>(number_attribute(path, "samples"));
  try {
    out.stored_samples = static_cast<int64_t>(number_attribute(path, "stored_samples"));
  } catch (const std::exception&) {
    out.stored_samples = out.samples;  // written before the cap was recorded
  }

  const std::vector<double> epoch = io::read_doubles(path, "/rows/epoch"), layer = io::read_doubles(path, "/rows/layer_index"),
                            estimator = io::read_doubles(path, "/rows/estimator_index"), in_chain = io::read_doubles(path, "/rows/in_chain"),
                            i_xt = io::read_doubles(path, "/rows/I_XT"), i_ty = io::read_doubles(path, "/rows/I_TY"),
                            i_prev = io::read_doubles(path, "/rows/I_prev"), ib = io::read_doubles(path, "/rows/IB"),
                            nuisance = io::read_doubles(path, "/rows/nuisance_ratio"), kappa = io::read_doubles(path, "/rows/kappa");
  for (const std::vector<double>* v : {&layer, &estimator, &in_chain, &i_xt, &i_ty, &i_prev, &ib, &nuisance, &kappa}) {
    if (v->size() != epoch.size()) throw DataError(fmt::format("'{}': the /rows arrays differ in length", path));
  }
  for (size_t i = 0; i < epoch.size(); ++i) {
    out.rows.push_back({static_cast<int64_t>(epoch[i]), name_at(out.layers, layer[i], path, "layer"),
                        name_at(out.estimators, estimator[i], path, "estimator"), in_chain[i] != 0, i_xt[i], i_ty[i],
                        i_prev[i], ib[i], nuisance[i], kappa[i]});
  }
  const std::vector<double> t_epoch = io::read_doubles(path, "/totals/epoch"), t_estimator = io::read_doubles(path, "/totals/estimator_index"),
                            t_ty = io::read_doubles(path, "/totals/I_TY"), t_prev = io::read_doubles(path, "/totals/I_prev"),
                            t_ib = io::read_doubles(path, "/totals/IB");
  for (const std::vector<double>* v : {&t_estimator, &t_ty, &t_prev, &t_ib}) {
    if (v->size() != t_epoch.size()) throw DataError(fmt::format("'{}': the /totals arrays differ in length", path));
  }
  for (size_t i = 0; i < t_epoch.size(); ++i) {
    out.totals.push_back({static_cast<int64_t>(t_epoch[i]), name_at(out.estimators, t_estimator[i], path, "estimator"), t_ty[i],
                          t_prev[i], t_ib[i]});
  }
  const std::vector<std::string> datasets = io::list_datasets(path);
  if (std::binary_search(datasets.begin(), datasets.end(), std::string("/sensitivity/I_XT"))) {
    const std::vector<std::string> specs = split(io::read_text_attribute(path, "/sensitivity/I_XT", "estimators"), '\n');
    const std::vector<double> s_xt = io::read_doubles(path, "/sensitivity/I_XT"), s_ty = io::read_doubles(path, "/sensitivity/I_TY");
    if (s_xt.size() != specs.size() || s_ty.size() != specs.size()) throw DataError(fmt::format("'{}': /sensitivity is malformed", path));
    out.sensitivity_layer = io::read_text_attribute(path, "/sensitivity/I_XT", "layer");
    const io::AttributeValue at_epoch = io::read_attribute(path, "/sensitivity/I_XT", "epoch");
    out.sensitivity_epoch = std::holds_alternative<int64_t>(at_epoch) ? std::get<int64_t>(at_epoch) : 0;
    for (size_t i = 0; i < specs.size(); ++i) out.sensitivity.push_back({specs[i], s_xt[i], s_ty[i]});
  }
  return out;
}

}  // namespace ibn::analysis
