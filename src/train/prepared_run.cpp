#include "prepared_run.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/ini.h"
#include "ibn/spec_string.h"

namespace ibn::train {
namespace {

// Counts bounded by what a run can use: beyond these a typo (an extra zero, 1e11) would make a
// run that allocates without end or never finishes, instead of an error.
constexpr int64_t kMaxEpochs = 10'000'000;
constexpr int64_t kMaxDumpedEpochs = 100'000;
constexpr int64_t kMaxRowsPerEpoch = int64_t{1} << 31;  // steps-per-epoch × batch: one index tensor

// A positive count from `all` or N: -1 for all.
int64_t eval_sample_count(const std::string& value) {
  if (value == "all") return -1;
  const std::optional<int64_t> n = parse_integer(value);
  // Two at least: one sample of each split.
  if (!n || *n < 2) throw UsageError(fmt::format("--eval-samples '{}' must be all or a count N >= 2", value));
  return *n;
}

// `rows` samples of `split` drawn without replacement by `generator`, in their original order.
data::Split sample_rows(const data::Split& split, int64_t rows, at::Generator& generator) {
  if (rows >= split.labels.size(0)) return split;
  const at::Tensor chosen = std::get<0>(
      at::randperm(split.labels.size(0), generator, at::TensorOptions().dtype(at::kLong)).slice(0, 0, rows).sort());
  return {split.inputs.index_select(0, chosen), split.labels.index_select(0, chosen), split.index.index_select(0, chosen)};
}

// Evaluating and dumping every sample of a large dataset each epoch costs more than short runs
// train (70 000 Fashion-MNIST images per epoch); a fixed subset gives the same curves with a
// known sampling error. Both splits keep up to half the budget, and a split that needs less
// leaves the rest to the other.
void choose_eval_samples(PreparedRun& run) {
  const int64_t budget = eval_sample_count(run.config.eval_samples);
  const data::Split &train = run.data.train, &test = run.data.test;
  const int64_t n_train = train.labels.size(0), n_test = test.labels.size(0);
  if (budget < 0 || n_train + n_test <= budget) {
    run.eval_train = train;
    run.eval_test = test;
    return;
  }
  const int64_t test_rows = std::min(n_test, std::max(budget / 2, budget - n_train));
  auto generator = at::make_generator<at::CPUGeneratorImpl>(run.config.seed + 11);
  run.eval_train = sample_rows(train, budget - test_rows, generator);
  run.eval_test = sample_rows(test, test_rows, generator);
}

std::vector<std::string> dumped_layers(const TrainConfig& c, const models::ModelImpl& model) {
  const std::vector<std::string> available = model.tap_names();
  if (c.dump_layers == "all") return available;
  std::vector<std::string> layers;
  for (const std::string& name : split(c.dump_layers, ',')) {
    if (std::find(available.begin(), available.end(), name) == available.end()) {
      throw UsageError(fmt::format("--dump-layers: the model has no layer '{}'; it has: {}", name, fmt::join(available, ", ")));
    }
    layers.push_back(name);
  }
  return layers;
}

void choose_dump_samples(PreparedRun& run) {
  const TrainConfig& c = run.config;
  const data::Split &train = run.eval_train, &test = run.eval_test;
  run.dump_inputs = torch::cat({train.inputs, test.inputs});
  run.dump_labels = torch::cat({train.labels, test.labels});
  run.dump_index = torch::cat({train.index, test.index});
  run.dump_split = torch::cat({torch::zeros({train.labels.size(0)}, torch::kLong),
                               torch::ones({test.labels.size(0)}, torch::kLong)});
  if (c.dump_samples == "all") return;
  const std::optional<int64_t> n =
      c.dump_samples.rfind("subset:", 0) == 0 ? parse_integer(c.dump_samples.substr(7)) : std::nullopt;
  if (!n || *n < 1) throw UsageError(fmt::format("--dump-samples '{}' must be all or subset:N with N >= 1", c.dump_samples));
  auto g = at::make_generator<at::CPUGeneratorImpl>(c.seed + 7);
  const auto rows = std::get<0>(at::randperm(run.dump_inputs.size(0), g, at::TensorOptions().dtype(at::kLong))
                                    .slice(0, 0, std::min<int64_t>(*n, run.dump_inputs.size(0))).sort());
  run.dump_inputs = run.dump_inputs.index_select(0, rows);
  run.dump_labels = run.dump_labels.index_select(0, rows);
  run.dump_index = run.dump_index.index_select(0, rows);
  run.dump_split = run.dump_split.index_select(0, rows);
}

}  // namespace

void check_config(const TrainConfig& c) {
  const auto one_of = [](const std::string& flag, const std::string& value, std::initializer_list<const char*> allowed) {
    std::string list;
    for (const char* a : allowed) {
      if (value == a) return;
      list += (list.empty() ? "" : ", ") + std::string(a);
    }
    throw UsageError(fmt::format("--{} '{}' must be one of: {}", flag, value, list));
  };
  one_of("optimizer", c.optimizer, {"sgd", "adam", "adamw"});
  one_of("schedule", c.schedule, {"constant", "cosine"});
  one_of("progress", c.progress, {"auto", "lines", "quiet"});
  one_of("dump-maps", c.dump_maps, {"pool", "flatten"});
  one_of("dump-dtype", c.dump_dtype, {"float32", "float16"});
  one_of("dtype", c.dtype, {"float32", "float64"});
  // Above kMaxLearningRate the optimizers' float32 arithmetic overflows before any loss is seen.
  constexpr double kMaxLearningRate = 1e6;
  if (!(c.lr > 0 && c.lr <= kMaxLearningRate)) {
    throw UsageError(fmt::format("--lr {} must lie in (0, {:g}]", c.lr, kMaxLearningRate));
  }
  if (!(c.weight_decay >= 0) || !std::isfinite(c.weight_decay)) {
    throw UsageError(fmt::format("--weight-decay {} must be a finite number >= 0", c.weight_decay));
  }
  if (!(c.momentum >= 0 && c.momentum < 1)) throw UsageError(fmt::format("--momentum {} must lie in [0, 1)", c.momentum));
  if (c.epochs < 1 || c.epochs > kMaxEpochs) {
    throw UsageError(fmt::format("--epochs {} must lie in [1, {}]", c.epochs, kMaxEpochs));
  }
  if (c.batch < 1 || c.batch > kMaxRowsPerEpoch) {
    throw UsageError(fmt::format("--batch {} must lie in [1, {}]", c.batch, kMaxRowsPerEpoch));
  }
  if (c.steps_per_epoch < 0 || c.steps_per_epoch > kMaxRowsPerEpoch / c.batch) {
    throw UsageError(fmt::format("--steps-per-epoch {} must lie in [0, {}] at --batch {}", c.steps_per_epoch,
                                 kMaxRowsPerEpoch / c.batch, c.batch));
  }
  if (c.warmup_epochs < 0 || c.warmup_epochs > c.epochs) {
    throw UsageError(fmt::format("--warmup-epochs {} must lie in [0, --epochs]", c.warmup_epochs));
  }
  if (!(c.validation >= 0 && c.validation < 1)) {
    throw UsageError(fmt::format("--validation {} must lie in [0, 1) (0: evaluate on the test split)", c.validation));
  }
  if (c.checkpoint_every < 0) {
    throw UsageError(fmt::format("--checkpoint-every {} must be >= 0 (0: only at the end)", c.checkpoint_every));
  }
  if (c.threads < 0 || c.threads > kMaxThreads) {
    throw UsageError(fmt::format("--threads {} must lie in [0, {}] (0: LibTorch's default)", c.threads, kMaxThreads));
  }
  if (c.out.empty()) throw UsageError("--out RUN_DIR is required");
}

std::vector<int64_t> dump_schedule(const std::string& spec, int64_t epochs) {
  std::set<int64_t> chosen;
  const auto fail = [&] {
    throw UsageError(fmt::format("--dump-epochs '{}' must be none, all, every:K, log:K or list:E,E,...", spec));
  };
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const std::string arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  const auto positive = [&](const std::string& word) {
    const std::optional<int64_t> v = parse_integer(word);
    if (!v || *v < 0) fail();
    return *v;
  };
  const auto at_most = [&](int64_t count) {
    if (count > kMaxDumpedEpochs) {
      throw UsageError(fmt::format("--dump-epochs '{}' asks for {} dumps; at most {} are stored", spec, count, kMaxDumpedEpochs));
    }
  };
  if (kind == "none" && arg.empty()) return {};
  if (kind == "all" && arg.empty()) {
    at_most(epochs + 1);
    for (int64_t e = 0; e <= epochs; ++e) chosen.insert(e);
  } else if (kind == "every") {
    const int64_t k = positive(arg);
    if (k < 1) fail();
    at_most(epochs / k + 2);
    for (int64_t e = 0; e <= epochs; e += k) chosen.insert(e);
    chosen.insert(epochs);
  } else if (kind == "log") {
    // K epochs spaced evenly in log(1 + e), as info-plane studies sample training.
    const int64_t k = positive(arg);
    if (k < 2) fail();
    at_most(k);
    for (int64_t i = 0; i < k; ++i) {
      const double t = static_cast<double>(i) / static_cast<double>(k - 1);
      chosen.insert(static_cast<int64_t>(std::llround(std::exp(t * std::log(1.0 + epochs)) - 1.0)));
    }
  } else if (kind == "list") {
    const std::vector<std::string> words = split(arg, ',');
    at_most(static_cast<int64_t>(words.size()));
    for (const std::string& word : words) {
      const int64_t e = positive(word);
      if (e > epochs) throw UsageError(fmt::format("--dump-epochs lists epoch {} of a {}-epoch run", e, epochs));
      chosen.insert(e);
    }
  } else {
    fail();
  }
  return {chosen.begin(), chosen.end()};
}

PreparedRun prepare_run(const TrainConfig& options) {
  check_config(options);
  PreparedRun run;
  run.config = options;
  TrainConfig& c = run.config;
  c.norm = models::resolve_norm(c.model, c.norm);
  run.dumps = dump_schedule(c.dump_epochs, c.epochs);
  run.device = resolve_device(c.device);
  run.data = data::load_dataset(c.data, c.seed);
  if (c.validation > 0) data::hold_out_validation(run.data, c.validation, c.seed);
  torch::manual_seed(c.seed);
  models::ModelContext context(run.data.sample_shape, run.data.classes, c.norm);
  context.norm_attn = c.norm_attn;
  context.norm_mlp = c.norm_mlp;
  context.norm_final = c.norm_final;
  run.model = models::make_model(c.model, context);
  struct SiteOption {
    const char* flag;
    const std::string& value;
    bool model_has_site;
  };
  for (const SiteOption& o : {SiteOption{"--norm-attn", c.norm_attn, context.has_attn_site},
                              SiteOption{"--norm-mlp", c.norm_mlp, context.has_mlp_site},
                              SiteOption{"--norm-final", c.norm_final, context.has_final_site}}) {
    if (!o.value.empty() && !o.model_has_site) {
      throw UsageError(fmt::format("{} '{}': model '{}' has no such normalization site (transformers have them: vit, gpt, "
                                   "llama); use --norm", o.flag, o.value, c.model));
    }
  }
  run.layers = dumped_layers(c, *run.model);
  choose_eval_samples(run);
  choose_dump_samples(run);
  return run;
}

// The checks a data-parallel run adds to check_config, once the data are known: equal shares
// of every batch, and of a dump, for every rank.
void check_world(const PreparedRun& run, int world_size) {
  if (world_size == 1) return;
  const TrainConfig& c = run.config;
  if (c.batch % world_size != 0) {
    throw UsageError(fmt::format("--batch {} is not divisible by the {} processes (WORLD_SIZE): each takes an equal share of "
                                 "every batch; choose a batch that is a multiple of {}", c.batch, world_size, world_size));
  }
  // A batch-area layer in training needs two rows of its own on each rank (its plan refuses
  // one, synchronized or not); other layers need one.
  const auto& sites = run.model->normalizers();
  const bool batch_area = std::any_of(sites.begin(), sites.end(), [](const auto& site) { return site.second->spec().area == "batch"; });
  const int64_t rows_per_rank = batch_area ? 2 : 1;
  if (c.batch / world_size < rows_per_rank) {
    throw UsageError(fmt::format("--batch {} gives each of the {} processes {} sample, and a batch-area normalizer needs 2 in "
                                 "training; use --batch {} or more", c.batch, world_size, c.batch / world_size,
                                 rows_per_rank * world_size));
  }
  const int64_t last = run.data.train.labels.size(0) % c.batch;
  if (c.steps_per_epoch == 0 && last > 0 && last < rows_per_rank * world_size) {
    throw UsageError(fmt::format("the last batch of each epoch holds {} samples ({} training samples, --batch {}), fewer than {} for "
                                 "each of the {} processes{}; choose another batch size or --steps-per-epoch", last,
                                 run.data.train.labels.size(0), c.batch, rows_per_rank, world_size,
                                 batch_area ? " (a batch-area normalizer needs 2)" : ""));
  }
  if (!run.dumps.empty() && run.dump_inputs.size(0) < world_size) {
    throw UsageError(fmt::format("--dump-samples: {} dumped samples are fewer than the {} processes", run.dump_inputs.size(0),
                                 world_size));
  }
}

RunPlan check_options(const TrainConfig& config, int world_size) {
  const PreparedRun run = prepare_run(config);
  check_world(run, world_size);
  return {run.layers, run.model->chain(), run.dumps};
}

std::string config_text(const TrainConfig& c, const std::string& data_spec, const std::string& model_spec) {
  std::string text = fmt::format(
      "data = {}\nmodel = {}\nnorm = {}\noptimizer = {}\nlr = {}\nweight-decay = {}\nmomentum = {}\nschedule = {}\n"
      "warmup-epochs = {}\nepochs = {}\nsteps-per-epoch = {}\nbatch = {}\nseed = {}\ndevice = {}\nthreads = {}\n"
      "eval-samples = {}\ndump-epochs = {}\ndump-layers = {}\ndump-samples = {}\ndump-maps = {}\ndump-dtype = {}\n",
      data_spec, model_spec, c.norm, c.optimizer, c.lr, c.weight_decay, c.momentum, c.schedule, c.warmup_epochs,
      c.epochs, c.steps_per_epoch, c.batch, c.seed, c.device, c.threads, c.eval_samples, c.dump_epochs, c.dump_layers,
      c.dump_samples, c.dump_maps, c.dump_dtype);
  // Written only when set, so the config of a run that evaluates on the test split (and its
  // checkpoint's record of it) reads as before the option existed.
  if (c.validation > 0) text += fmt::format("validation = {}\n", c.validation);
  if (!c.norm_attn.empty()) text += fmt::format("norm-attn = {}\n", c.norm_attn);
  if (!c.norm_mlp.empty()) text += fmt::format("norm-mlp = {}\n", c.norm_mlp);
  if (!c.norm_final.empty()) text += fmt::format("norm-final = {}\n", c.norm_final);
  if (c.sync_bn) text += "sync-bn = true\n";
  if (c.dtype != "float32") text += fmt::format("dtype = {}\n", c.dtype);
  return text;
}

std::map<std::string, std::string> config_entries(const std::string& text) { return io::ini_values(text, "config.ini"); }

}  // namespace ibn::train
