#include "ibn/train/train.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "ibn/build_info.h"
#include "ibn/data/dataset.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/ini.h"
#include "ibn/norm/registry.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/background_writer.h"
#include "ibn/io/hdf5.h"
#include "ibn/models/model.h"
#include "ibn/spec_string.h"

namespace ibn::train {
namespace {

std::string parts_directory(const std::string& run) { return run + "/activations.parts"; }
std::string part_path(const std::string& run, int64_t epoch) {
  return fmt::format("{}/epoch-{}.h5", parts_directory(run), epoch);
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return text;
}

// The resolved configuration as an .ini file whose keys are `ibn train`'s options, so
// `ibn train --config RUN/config.ini --out OTHER` repeats the run.
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
  return text;
}

at::Tensor text_as_tensor(const std::string& text) {
  return torch::tensor(std::vector<uint8_t>(text.begin(), text.end()), torch::kByte);
}
std::string tensor_as_text(const at::Tensor& bytes) {
  const at::Tensor b = bytes.contiguous();
  const auto* data = b.data_ptr<uint8_t>();
  return std::string(data, data + b.numel());
}

// config_text's "key = value" lines as a map.
std::map<std::string, std::string> config_entries(const std::string& text) { return io::ini_values(text, "config.ini"); }

// The options a run was started with, as its checkpoint recorded them ("" when it predates
// that record).
std::string checkpoint_config(torch::serialize::InputArchive& archive) {
  at::Tensor bytes;
  if (!archive.try_read("config", bytes)) return "";
  return tensor_as_text(bytes);
}

double scheduled_lr(const TrainConfig& c, int64_t epoch /* 1-based */) {
  if (epoch <= c.warmup_epochs) return c.lr * static_cast<double>(epoch) / static_cast<double>(c.warmup_epochs);
  if (c.schedule == "constant") return c.lr;
  const double span = static_cast<double>(std::max<int64_t>(1, c.epochs - c.warmup_epochs));
  const double progress = static_cast<double>(epoch - 1 - c.warmup_epochs) / span;
  return 0.5 * c.lr * (1.0 + std::cos(M_PI * progress));
}

struct Evaluation {
  double loss = 0, accuracy = 0;
};

// Per-prediction cross-entropy summed, and correct predictions counted: logits [B, C] against
// labels [B], or [B, T, C] against [B, T] (next-token prediction).
std::pair<at::Tensor, at::Tensor> loss_and_correct(const at::Tensor& logits, const at::Tensor& labels) {
  const at::Tensor flat_logits = logits.reshape({-1, logits.size(-1)});
  const at::Tensor flat_labels = labels.reshape({-1});
  return {torch::nn::functional::cross_entropy(flat_logits, flat_labels,
                                               torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)),
          flat_logits.argmax(1).eq(flat_labels).sum()};
}

Evaluation evaluate(models::ModelImpl& model, const data::Split& split, const c10::Device& device, int64_t batch) {
  torch::NoGradGuard no_grad;
  model.eval();
  double loss = 0, correct = 0;
  for (int64_t s = 0; s < split.inputs.size(0); s += batch) {
    const auto [l, c] = loss_and_correct(model.forward(split.inputs.slice(0, s, s + batch).to(device)),
                                         split.labels.slice(0, s, s + batch).to(device));
    loss += l.item<double>();
    correct += c.item<double>();
  }
  model.train();
  const double predictions = static_cast<double>(split.labels.numel());
  return {loss / predictions, correct / predictions};
}

// Counts bounded by what a run can use: beyond these a typo (an extra zero, 1e11) would make a
// run that allocates without end or never finishes, instead of an error.
constexpr int64_t kMaxEpochs = 10'000'000;
constexpr int64_t kMaxDumpedEpochs = 100'000;
constexpr int64_t kMaxRowsPerEpoch = int64_t{1} << 31;  // steps-per-epoch × batch: one index tensor

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

}  // namespace

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

std::map<std::string, std::string> read_run_config(const std::string& run) {
  std::ifstream in(run + "/config.ini");
  return config_entries(std::string(std::istreambuf_iterator<char>(in), {}));
}

RunStatus run_status(const std::string& run) {
  RunStatus status;
  if (!std::filesystem::exists(run + "/config.ini")) {
    status.summary = fmt::format("'{}' is not a run directory (no config.ini)", run);
    return status;
  }
  const auto config = read_run_config(run);
  if (config.count("epochs")) status.epochs = std::atoll(config.at("epochs").c_str());
  const std::string checkpoint = run + "/checkpoint.pt";
  if (std::filesystem::exists(checkpoint)) {
    try {
      torch::serialize::InputArchive archive;
      archive.load_from(checkpoint);
      at::Tensor epoch;
      archive.read("epoch", epoch);
      status.checkpoint_epoch = epoch.item<int64_t>();
      // The run's planned length is the one it was started with, whatever config.ini says now.
      const auto started_with = config_entries(checkpoint_config(archive));
      if (started_with.count("epochs")) status.epochs = std::atoll(started_with.at("epochs").c_str());
    } catch (const std::exception&) {
      status.checkpoint_epoch = -1;  // unreadable: reported as no checkpoint
    }
  }
  const std::string store = run + "/activations.h5";
  bool complete = false;
  std::string unreadable;  // why a store that should be complete cannot be read
  if (std::filesystem::exists(store) && !std::filesystem::exists(parts_directory(run))) {
    try {
      complete = std::get<int64_t>(io::read_attribute(store, "/", "complete")) == 1;
    } catch (const std::exception& e) {
      unreadable = e.what();
    }
  }
  if (!unreadable.empty()) {
    // The store is there and nothing is pending, yet it does not read: a damaged file. Resuming
    // cannot rebuild it (the parts were removed once gathered into it).
    status.state = RunStatus::State::damaged;
    status.summary = fmt::format("{}: its activations.h5 cannot be read ({}); train the run again", run, unreadable);
  } else if (complete) {
    status.state = RunStatus::State::complete;
    status.summary = fmt::format("{}: complete ({} epochs)", run, status.epochs);
  } else {
    status.state = RunStatus::State::incomplete;
    status.summary =
        status.checkpoint_epoch >= 0
            ? fmt::format("{}: incomplete, trained to epoch {} of {}; resume with: ibn train --resume {}", run,
                          status.checkpoint_epoch, status.epochs, run)
            : fmt::format("{}: incomplete, no checkpoint yet (killed early, or still running); start it again", run);
  }
  return status;
}

namespace {

// A resumed run continues the checkpointed one only with the same options. What may differ:
// threads (the arithmetic is the same; the last bits of CPU sums may not be), and epochs, when
// the run so far is unchanged by it: a constant schedule and the same dumps up to the checkpoint.
void check_resumable(const TrainConfig& c, const std::string& config, torch::serialize::InputArchive& archive) {
  const std::string recorded = checkpoint_config(archive);
  if (recorded.empty()) {
    throw UsageError(fmt::format("cannot resume '{}': its checkpoint does not record the run's options (made by an older ibn); "
                                 "start the run again", c.out));
  }
  at::Tensor epoch_tensor;
  archive.read("epoch", epoch_tensor);
  const int64_t checkpoint_epoch = epoch_tensor.item<int64_t>();
  const auto before = config_entries(recorded), now = config_entries(config);
  std::vector<std::string> differences;
  std::set<std::string> keys;
  for (const auto& [key, value] : before) keys.insert(key);
  for (const auto& [key, value] : now) keys.insert(key);
  for (const std::string& key : keys) {
    // Runs from before --eval-samples evaluated every sample.
    const std::string absent = key == "eval-samples" ? "all" : "(none)";
    const std::string old_value = before.count(key) ? before.at(key) : absent;
    const std::string new_value = now.count(key) ? now.at(key) : "(none)";
    if (old_value == new_value || key == "threads") continue;
    if (key == "epochs") {
      const int64_t old_epochs = std::stoll(old_value);
      const auto dumps_until_checkpoint = [&](int64_t epochs) {
        std::vector<int64_t> dumps = dump_schedule(c.dump_epochs, epochs);
        dumps.erase(std::upper_bound(dumps.begin(), dumps.end(), checkpoint_epoch), dumps.end());
        return dumps;
      };
      if (c.epochs >= checkpoint_epoch && c.schedule == "constant" &&
          dumps_until_checkpoint(old_epochs) == dumps_until_checkpoint(c.epochs)) {
        continue;
      }
      differences.push_back(fmt::format("epochs {} -> {} (allowed only with a constant schedule, the same dumps up to "
                                        "the checkpoint and not below its epoch {})", old_value, new_value, checkpoint_epoch));
      continue;
    }
    differences.push_back(fmt::format("{} {} -> {}", key, old_value, new_value));
  }
  if (!differences.empty()) {
    throw UsageError(fmt::format("cannot resume '{}': its config.ini differs from the options its checkpoint (epoch {}) was "
                                 "made with: {}; restore them, or train a new run with --out", c.out, checkpoint_epoch,
                                 fmt::join(differences, "; ")));
  }
}

}  // namespace

namespace {

// The files a run writes through io::write_file_atomically; a killed run can leave their
// temporaries (and only theirs are removed: a user's own files in the directory stay).
void remove_temporaries_of_killed_run(const std::string& run) {
  const auto is_ours = [](const std::string& name, std::initializer_list<const char*> targets) {
    for (const char* target : targets) {
      if (io::is_temporary_of(name, target)) return true;
    }
    return false;
  };
  for (const auto& entry : std::filesystem::directory_iterator(run)) {
    const std::string name = entry.path().filename().string();
    if (is_ours(name, {"config.ini", "metrics.csv", "checkpoint.pt", "activations.h5"})) std::filesystem::remove(entry.path());
  }
  for (const auto& entry : std::filesystem::directory_iterator(parts_directory(run))) {
    const std::string name = entry.path().filename().string();
    // ".epoch-E.h5.ibn-tmp-XXXXXX": the temporary of part E.
    const size_t marker = name.find(".h5.");
    if (name.rfind(".epoch-", 0) == 0 && marker != std::string::npos && io::is_temporary_of(name, name.substr(1, marker + 2))) {
      std::filesystem::remove(entry.path());
    }
  }
}

}  // namespace

namespace {

// Everything a run needs before it writes anything: options checked, data loaded, the model
// built, the stored layers and samples chosen. Bad options throw here, with nothing written.
struct PreparedRun {
  TrainConfig config;  // the norm resolved to the model's default where none was given
  std::vector<int64_t> dumps;
  c10::Device device{c10::kCPU};
  data::ClassificationData data;
  std::shared_ptr<models::ModelImpl> model;
  std::vector<std::string> layers;
  // The evaluation samples of each split: all of them, or a fixed seeded subset.
  data::Split eval_train, eval_test;
  // The dumped samples: the evaluation samples, train then test rows (split 0/1), or a seeded
  // subset of them.
  at::Tensor dump_inputs, dump_labels, dump_index, dump_split;
};

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

// The dump's forward pass over many samples, in chunks: one pass over 10 000 ViT or text
// samples holds gigabytes of attention maps, and the page faults of such allocations cost more
// than the arithmetic. Eval mode makes each sample's outputs independent of its chunk. κ is
// measured per chunk and averaged, weighted by rows: for per-sample normalizers (layer, RMS,
// group) that is the whole pass's κ; for batch-area ones each chunk's own statistics enter.
struct ForwardPass {
  at::Tensor logits;
  models::Taps taps;
  models::Contractions contractions;
};

ForwardPass forward_in_chunks(models::ModelImpl& model, const at::Tensor& inputs, const c10::Device& device) {
  constexpr int64_t kMaxChunkRows = 4096;
  const int64_t n = inputs.size(0);
  // Equal chunks (4097 rows: two of 2049 and 2048, not 4096 and 1): each κ rests on many rows.
  const int64_t chunks = std::max<int64_t>(1, (n + kMaxChunkRows - 1) / kMaxChunkRows);
  const int64_t kChunkRows = std::max<int64_t>(1, (n + chunks - 1) / chunks);
  std::vector<at::Tensor> logits;
  std::map<std::string, std::vector<at::Tensor>> taps;
  ForwardPass pass;
  for (int64_t start = 0; start < n; start += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, n - start);
    models::Taps chunk_taps;
    models::Contractions chunk_kappa;
    {
      const models::RecordContractions record(chunk_kappa);
      logits.push_back(model.forward(inputs.slice(0, start, start + rows).to(device), &chunk_taps));
    }
    for (auto& [name, t] : chunk_taps) taps[name].push_back(t.detach());
    for (const auto& [site, kappa] : chunk_kappa) pass.contractions[site] += kappa * static_cast<double>(rows) / static_cast<double>(n);
  }
  pass.logits = logits.size() == 1 ? logits.front() : at::cat(logits);
  for (auto& [name, parts] : taps) pass.taps[name] = parts.size() == 1 ? parts.front() : at::cat(parts);
  return pass;
}

// Says which samples evaluation uses when they are not all of them.
std::string eval_subset_line(const PreparedRun& run) {
  const int64_t train = run.eval_train.labels.size(0), test = run.eval_test.labels.size(0);
  const int64_t all_train = run.data.train.labels.size(0), all_test = run.data.test.labels.size(0);
  if (train == all_train && test == all_test) return "";
  return fmt::format("evaluation and dumps: a fixed subset of {} of {} train and {} of {} test samples (drawn from --seed), "
                     "the same every epoch; --eval-samples all for every sample\n", train, all_train, test, all_test);
}

}  // namespace

RunPlan check_options(const TrainConfig& config) {
  const PreparedRun run = prepare_run(config);
  return {run.layers, run.model->chain(), run.dumps};
}

double majority_rate(const at::Tensor& labels) {
  if (labels.numel() == 0) return std::numeric_limits<double>::quiet_NaN();
  const at::Tensor flat = labels.reshape({-1}).to(at::kLong);
  return at::bincount(flat).max().item<double>() / static_cast<double>(flat.numel());
}

namespace {

// The distinct normalizers of a model's sites, canonical specs one per line ("none" without).
std::vector<norm::NormSpec> distinct_normalizers(const models::ModelImpl& model) {
  std::vector<norm::NormSpec> specs;
  for (const auto& [site, normalizer] : model.normalizers()) {
    const norm::NormSpec spec = normalizer->spec();
    if (std::find(specs.begin(), specs.end(), spec) == specs.end()) specs.push_back(spec);
  }
  return specs;
}

std::string normalizer_specs(const models::ModelImpl& model) {
  std::string out;
  for (const norm::NormSpec& spec : distinct_normalizers(model)) out += (out.empty() ? "" : "\n") + spec.str();
  return out.empty() ? "none" : out;
}

std::string normalizer_descriptions(const models::ModelImpl& model) {
  std::string out;
  for (const norm::NormSpec& spec : distinct_normalizers(model)) out += (out.empty() ? "" : "\n") + norm::describe(spec);
  return out.empty() ? "no normalization" : out;
}

}  // namespace

TrainResult train(const TrainConfig& options, std::ostream& log) {
  // Threads first: the data are generated with them (ibsgd12's labels come from a matrix
  // product, whose last bits depend on OpenBLAS's thread count), and a run must be the same
  // run for the same options.
  check_config(options);
  set_compute_threads(options.threads);
  PreparedRun run = prepare_run(options);
  const TrainConfig& c = run.config;
  const std::vector<int64_t>& dumps = run.dumps;
  const c10::Device device = run.device;
  const data::ClassificationData& data = run.data;
  std::shared_ptr<models::ModelImpl> model = run.model;
  const std::vector<std::string>& layers = run.layers;
  const at::Tensor &dump_inputs = run.dump_inputs, &dump_labels = run.dump_labels, &dump_index = run.dump_index,
                   &dump_split = run.dump_split;
  model->to(device);

  std::error_code error;
  std::filesystem::create_directories(c.out, error);
  if (error || !std::filesystem::is_directory(c.out)) {
    throw std::runtime_error(fmt::format("cannot create the run directory '{}': {}", c.out,
                                         error ? error.message() : "a file of that name exists"));
  }
  const std::string config = config_text(c, data.spec, model->spec());
  const std::string checkpoint_path = c.out + "/checkpoint.pt";
  const bool resuming = c.resume && std::filesystem::exists(checkpoint_path);
  if (!resuming) io::write_file_atomically(c.out + "/config.ini", config);
  const std::string started = now_utc();
  if (c.progress != "quiet") log << eval_subset_line(run) << std::flush;

  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (c.optimizer == "sgd") {
    optimizer = std::make_unique<torch::optim::SGD>(model->parameters(),
                                                    torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
  } else if (c.optimizer == "adam") {
    optimizer = std::make_unique<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(c.lr).weight_decay(c.weight_decay));
  } else {
    optimizer = std::make_unique<torch::optim::AdamW>(model->parameters(), torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  }
  const auto set_lr = [&](double lr) {
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
  };

  TrainResult result;
  result.run_dir = c.out;
  result.sequence = data.sequence;
  // Each dumped epoch goes to its own file RUN/activations.parts/epoch-E.h5, written atomically
  // by a background thread; the end of the run gathers them into RUN/activations.h5.
  const std::string parts = parts_directory(c.out);
  io::BackgroundWriter writer(2);
  // One forward pass over the dumped samples: the taps to store, and the logits (which give the
  // epoch's metrics when the dump holds every sample: one pass instead of two).
  struct Activations {
    std::vector<io::DatasetToWrite> datasets;
    at::Tensor logits;
  };
  const auto activations_at = [&](int64_t epoch) {
    torch::NoGradGuard no_grad;
    model->eval();
    const ForwardPass pass = forward_in_chunks(*model, dump_inputs, device);
    model->train();
    Activations out;
    out.logits = pass.logits;
    for (const auto& [site, kappa] : pass.contractions) {
      out.datasets.push_back({fmt::format("/contraction/{}/{}", epoch, site), at::full({1}, kappa, at::kDouble), {}});
    }
    for (const std::string& layer : layers) {
      at::Tensor t = pass.taps.at(layer).detach().to(torch::kFloat);
      // Feature maps [N, C, H, W] and tokens [N, T, D] become [N, C] / [N, D] by their mean
      // (dump_maps=pool) or [N, C·H·W] / [N, T·D] (flatten).
      if (c.dump_maps == "pool" && t.dim() == 4) t = t.mean({2, 3});
      if (c.dump_maps == "pool" && t.dim() == 3) t = t.mean(1);
      out.datasets.push_back({fmt::format("/epochs/{}/{}", epoch, layer), t.reshape({t.size(0), -1}).cpu(), {},
                              c.dump_dtype == "float16"});
    }
    return out;
  };
  // Queues the part file; the epoch counts as dumped once queued (a failed write is reported
  // by a later call, and the part files on disk say what was written).
  const auto queue_dump = [&](int64_t epoch, Activations& activations) {
    writer.write(part_path(c.out, epoch), std::move(activations.datasets));
    result.dumped_epochs.push_back(epoch);
  };

  const bool terminal = c.progress == "auto" && ::isatty(::fileno(stdout));
  const bool quiet = c.progress == "quiet";
  const int64_t n_train_rows = run.eval_train.labels.size(0);
  const auto record = [&](int64_t epoch, double lr, double seconds, const at::Tensor& all_logits) {
    Evaluation tr, te;
    if (all_logits.defined()) {
      const auto of = [&](int64_t begin, int64_t end) {
        const auto [loss, correct] = loss_and_correct(all_logits.slice(0, begin, end), dump_labels.slice(0, begin, end).to(device));
        const double predictions = static_cast<double>(dump_labels.slice(0, begin, end).numel());
        return Evaluation{loss.item<double>() / predictions, correct.item<double>() / predictions};
      };
      tr = of(0, n_train_rows);
      te = of(n_train_rows, dump_labels.size(0));
    } else {
      tr = evaluate(*model, run.eval_train, device, c.batch);
      te = evaluate(*model, run.eval_test, device, c.batch);
    }
    result.metrics.push_back({epoch, tr.loss, tr.accuracy, te.loss, te.accuracy, lr, seconds});
  };
  // Records the epoch's metrics and, when it is scheduled, dumps its activations.
  const auto record_and_dump = [&](int64_t epoch, double lr, double seconds) {
    if (!std::binary_search(dumps.begin(), dumps.end(), epoch)) {
      record(epoch, lr, seconds, at::Tensor());
      return;
    }
    Activations activations = activations_at(epoch);
    record(epoch, lr, seconds, c.dump_samples == "all" ? activations.logits : at::Tensor());
    queue_dump(epoch, activations);
  };
  auto shuffle = at::make_generator<at::CPUGeneratorImpl>(c.seed + 1);
  // Everything a later epoch depends on: weights, optimizer moments, the batch order's RNG and
  // the metrics so far. The dumped epochs are those whose part files are on disk.
  int64_t checkpoint_epoch = -1;
  const auto save_checkpoint = [&](int64_t epoch, const std::vector<int64_t>& dumped) {
    torch::serialize::OutputArchive archive;
    model->save(archive);
    torch::serialize::OutputArchive optimizer_archive;
    optimizer->save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
    archive.write("epoch", torch::tensor(epoch));
    archive.write("shuffle_rng", shuffle.get_state());
    std::vector<double> rows;
    for (const EpochMetrics& m : result.metrics) {
      rows.insert(rows.end(), {static_cast<double>(m.epoch), m.train_loss, m.train_accuracy, m.test_loss, m.test_accuracy, m.lr, m.seconds});
    }
    archive.write("metrics", torch::tensor(rows, torch::kDouble).reshape({-1, 7}));
    archive.write("dumped_epochs", torch::tensor(dumped, torch::kLong));
    archive.write("config", text_as_tensor(config));
    // Serialized in memory, then written atomically: LibTorch's file writer aborts the process
    // when a write fails (it throws from a destructor), and a full disk must be an error.
    std::ostringstream bytes;
    archive.save_to(bytes);
    io::write_file_atomically(checkpoint_path, bytes.str());
    checkpoint_epoch = epoch;
  };
  const auto parts_on_disk = [&] {
    std::vector<int64_t> on_disk;
    for (int64_t e : result.dumped_epochs) {
      if (std::filesystem::exists(part_path(c.out, e))) on_disk.push_back(e);
    }
    return on_disk;
  };

  int64_t first_epoch = 1;
  double elapsed_before = 0;
  if (resuming) {
    torch::serialize::InputArchive archive;
    archive.load_from(checkpoint_path);
    // The options are checked before any state is loaded: another optimizer's state would
    // trip LibTorch's internal asserts, and another seed or schedule would make a run that
    // is neither the old one nor a new one.
    check_resumable(c, config, archive);
    io::write_file_atomically(c.out + "/config.ini", config);  // epochs or threads may have grown
    model->load(archive);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer->load(optimizer_archive);
    // InputArchive::read fills the tensor it is given, so each value gets its own.
    const auto read = [&archive](const std::string& key) {
      at::Tensor value;
      archive.read(key, value);
      return value;
    };
    checkpoint_epoch = read("epoch").item<int64_t>();
    first_epoch = checkpoint_epoch + 1;
    shuffle.set_state(read("shuffle_rng"));
    const at::Tensor metrics = read("metrics");
    for (int64_t r = 0; r < metrics.size(0); ++r) {
      const auto m = metrics[r];
      result.metrics.push_back({static_cast<int64_t>(m[0].item<double>()), m[1].item<double>(), m[2].item<double>(),
                                m[3].item<double>(), m[4].item<double>(), m[5].item<double>(), m[6].item<double>()});
    }
    elapsed_before = result.metrics.back().seconds;
    const at::Tensor dumped = read("dumped_epochs");
    for (int64_t i = 0; i < dumped.size(0); ++i) {
      const int64_t epoch = dumped[i].item<int64_t>();
      if (!std::filesystem::exists(part_path(c.out, epoch))) {
        throw DataError(fmt::format("cannot resume '{}': '{}' is missing; start the run again without --resume", c.out,
                                    part_path(c.out, epoch)));
      }
      result.dumped_epochs.push_back(epoch);
    }
    if (!quiet) log << fmt::format("resuming {} after epoch {}\n", c.out, checkpoint_epoch) << std::flush;
  } else {
    // A fresh run: parts left by an earlier run in this directory are not ours. A complete
    // activations.h5 of an earlier run stays until this run's replaces it.
    std::filesystem::remove_all(parts);
    std::filesystem::remove(checkpoint_path);
  }
  std::filesystem::create_directories(parts);
  remove_temporaries_of_killed_run(c.out);

  // A failed write (disk full, directory gone) stops training with the state checkpointed
  // where a resumed run can still produce every dump: at this epoch if only its own dump is
  // missing, else at the last checkpoint, whose dumps were all on disk when it was taken.
  const auto stop_for_failed_write = [&](int64_t epoch, const std::exception& error) {
    const std::vector<int64_t> on_disk = parts_on_disk();
    const bool only_this_epoch_missing =
        std::all_of(result.dumped_epochs.begin(), result.dumped_epochs.end(), [&](int64_t e) {
          return e == epoch || std::find(on_disk.begin(), on_disk.end(), e) != on_disk.end();
        });
    std::string state;
    if (only_this_epoch_missing) {
      try {
        save_checkpoint(epoch, on_disk);
        state = fmt::format("training state checkpointed at epoch {}", epoch);
      } catch (const std::exception& e) {
        state = std::string(e.what()) + "; ";
      }
    }
    if (checkpoint_epoch < 0) {
      throw std::runtime_error(fmt::format("{}; {}no checkpoint to resume from: start the run again", error.what(), state));
    }
    if (checkpoint_epoch != epoch) state += fmt::format("the last checkpoint (epoch {}) is kept", checkpoint_epoch);
    throw std::runtime_error(fmt::format("{}; {}; resume with: ibn train --resume {}", error.what(), state, c.out));
  };

  if (!resuming) {
    try {
      record_and_dump(0, 0.0, 0.0);
      writer.drain();  // the first write also tells early whether the directory takes files
    } catch (const std::exception& e) {
      stop_for_failed_write(0, e);
    }
  } else if (std::binary_search(dumps.begin(), dumps.end(), checkpoint_epoch) &&
             std::find(result.dumped_epochs.begin(), result.dumped_epochs.end(), checkpoint_epoch) ==
                 result.dumped_epochs.end()) {
    // A failed write stopped the run after this epoch's training and metrics.
    Activations activations = activations_at(checkpoint_epoch);
    queue_dump(checkpoint_epoch, activations);
  }
  const int64_t n_train = data.train.inputs.size(0);
  const auto train_inputs = data.train.inputs.to(device), train_labels = data.train.labels.to(device);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t epoch = first_epoch; epoch <= c.epochs; ++epoch) {
    const double lr = scheduled_lr(c, epoch);
    set_lr(lr);
    // One pass over a shuffled training set, or steps_per_epoch batches drawn at random.
    const auto order = c.steps_per_epoch > 0
                           ? at::randint(n_train, {c.steps_per_epoch * c.batch}, shuffle, at::TensorOptions().dtype(at::kLong)).to(device)
                           : at::randperm(n_train, shuffle, at::TensorOptions().dtype(at::kLong)).to(device);
    at::Tensor nonfinite_loss;  // CUDA: whether any step of this epoch had a non-finite loss
    for (int64_t s = 0; s < order.size(0); s += c.batch) {
      const auto rows = order.slice(0, s, std::min(order.size(0), s + c.batch));
      const auto logits = model->forward(train_inputs.index_select(0, rows));
      const auto labels = train_labels.index_select(0, rows);
      const auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}));
      // Stopped at the first non-finite loss: every later step would only spread NaN weights.
      // On the CPU each step's loss is read (free); on a GPU that would sync every step, so
      // the steps are flagged on the device and the flag is read once per epoch.
      if (device.is_cuda()) {
        nonfinite_loss = nonfinite_loss.defined() ? nonfinite_loss.logical_or(loss.detach().isfinite().logical_not())
                                                  : loss.detach().isfinite().logical_not();
      } else if (const double value = loss.item<double>(); !std::isfinite(value)) {
        throw DataError(fmt::format(
            "the training loss became {} at epoch {}, step {} (lr {}): the learning rate is too high for this model, a "
            "normalizer divides by zero (eps=0 on a constant group), or the data holds NaN/Inf; {}",
            std::isnan(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf", epoch, s / c.batch + 1, lr,
            checkpoint_epoch >= 0 ? fmt::format("'{}' keeps its checkpoint of epoch {}", c.out, checkpoint_epoch)
                                  : "no checkpoint was taken"));
      }
      optimizer->zero_grad();
      loss.backward();
      optimizer->step();
    }
    if (nonfinite_loss.defined() && nonfinite_loss.item<bool>()) {
      throw DataError(fmt::format(
          "the training loss became NaN or infinite during epoch {} (lr {}; on a GPU the step is not tracked): the learning "
          "rate is too high for this model, a normalizer divides by zero (eps=0 on a constant group), or the data holds "
          "NaN/Inf; {}", epoch, lr,
          checkpoint_epoch >= 0 ? fmt::format("'{}' keeps its checkpoint of epoch {}", c.out, checkpoint_epoch)
                                : "no checkpoint was taken"));
    }
    const double elapsed = elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    try {
      record_and_dump(epoch, lr, elapsed);
      if (epoch == c.epochs || (c.checkpoint_every > 0 && epoch % c.checkpoint_every == 0)) {
        writer.drain();
        save_checkpoint(epoch, result.dumped_epochs);
      }
    } catch (const std::exception& e) {
      stop_for_failed_write(epoch, e);
    }
    const EpochMetrics& m = result.metrics.back();
    const double eta = elapsed / static_cast<double>(epoch) * static_cast<double>(c.epochs - epoch);
    const char* evaluated = c.validation > 0 ? "val" : "test";
    const std::string line = fmt::format("epoch {}/{}  loss {:.4f}  train acc {:.3f}  {} acc {:.3f}{}  {:.1f} epochs/s  ETA {:.0f}s",
                                         epoch, c.epochs, m.train_loss, m.train_accuracy, evaluated, m.test_accuracy,
                                         data.sequence ? fmt::format("  {} {:.3f} bits/byte", evaluated, m.test_loss / std::log(2.0)) : "",
                                         static_cast<double>(epoch) / std::max(elapsed, 1e-9), eta);
    if (terminal) {
      log << "\r" << line << "\033[K" << (epoch == c.epochs ? "\n" : "") << std::flush;
    } else if (!quiet && (epoch == c.epochs || epoch % std::max<int64_t>(1, c.epochs / 10) == 0)) {
      log << line << "\n" << std::flush;
    }
  }
  try {
    writer.drain();  // a run resumed after its last epoch may have queued that epoch's dump
  } catch (const std::exception& e) {
    stop_for_failed_write(c.epochs, e);
  }

  // Metrics as CSV and as /metrics columns of the store.
  std::string csv = "epoch,train_loss,train_accuracy,test_loss,test_accuracy,lr,seconds\n";
  std::vector<double> columns[7];
  std::vector<io::DatasetToWrite> store;
  for (const EpochMetrics& m : result.metrics) {
    csv += fmt::format("{},{:.8g},{:.8g},{:.8g},{:.8g},{:.8g},{:.4f}\n", m.epoch, m.train_loss, m.train_accuracy,
                       m.test_loss, m.test_accuracy, m.lr, m.seconds);
    const double row[7] = {static_cast<double>(m.epoch), m.train_loss, m.train_accuracy, m.test_loss, m.test_accuracy, m.lr, m.seconds};
    for (int i = 0; i < 7; ++i) columns[i].push_back(row[i]);
  }
  io::write_file_atomically(c.out + "/metrics.csv", csv);
  const char* names[7] = {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"};
  for (int i = 0; i < 7; ++i) store.push_back({std::string("/metrics/") + names[i], torch::tensor(columns[i], torch::kDouble), {}});
  store.push_back({"/data/inputs", dump_inputs, {}});
  store.push_back({"/data/labels", dump_labels, {}});
  store.push_back({"/data/index", dump_index, {}});
  store.push_back({"/data/split", dump_split, {{"meaning", std::string(c.validation > 0 ? "0 = train, 1 = validation (held out of train)" : "0 = train, 1 = test")}}});
  store.push_back({"/meta/dumped_epochs", torch::tensor(result.dumped_epochs, torch::kLong), {}});
  const BuildInfo& info = build_info();
  std::vector<std::string> part_files;
  for (int64_t e : result.dumped_epochs) part_files.push_back(part_path(c.out, e));
  io::write_datasets(c.out + "/activations.h5", store,
                     {{"config", config}, {"seed", static_cast<int64_t>(c.seed)}, {"git_commit", info.git_commit},
                      {"ibn_version", info.version}, {"torch_version", info.torch_version}, {"device", device.str()},
                      {"data", data.spec}, {"data_description", data.description}, {"model", model->spec()},
                      {"norm", c.norm}, {"layers", fmt::format("{}", fmt::join(layers, ","))},
                      {"chain", fmt::format("{}", fmt::join(model->chain(), ","))},
                      {"norm_spec", normalizer_specs(*model)}, {"norm_description", normalizer_descriptions(*model)},
                      {"test_predictions", static_cast<int64_t>(run.eval_test.labels.numel())}, {"test_majority_rate", majority_rate(run.eval_test.labels)},
                      {"start_time", started}, {"end_time", now_utc()}, {"complete", int64_t{1}}},
                     part_files);
  std::filesystem::remove_all(parts);
  return result;
}

}  // namespace ibn::train
