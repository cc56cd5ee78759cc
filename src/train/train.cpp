#include "ibn/train/train.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "activation_parts.h"
#include "checkpoint.h"
#include "ibn/build_info.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/hdf5.h"
#include "ibn/norm/registry.h"
#include "ibn/train/run_directory.h"
#include "prepared_run.h"

namespace ibn::train {

double majority_rate(const at::Tensor& labels) {
  if (labels.numel() == 0) return std::numeric_limits<double>::quiet_NaN();
  const at::Tensor flat = labels.reshape({-1}).to(at::kLong);
  return at::bincount(flat).max().item<double>() / static_cast<double>(flat.numel());
}

namespace {

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return text;
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

// A resumed run continues the checkpointed one only with the same options. What may differ:
// threads (the arithmetic is the same; the last bits of CPU sums may not be), and epochs, when
// the run so far is unchanged by it: a constant schedule and the same dumps up to the checkpoint.
void check_resumable(const TrainConfig& c, const std::string& config, CheckpointReader& checkpoint) {
  const std::string recorded = checkpoint.config();
  if (recorded.empty()) {
    throw UsageError(fmt::format("cannot resume '{}': its checkpoint does not record the run's options (made by an older ibn); "
                                 "start the run again", c.out));
  }
  const int64_t checkpoint_epoch = checkpoint.epoch();
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

// The files a run writes through io::write_file_atomically; a killed run can leave their
// temporaries (and only theirs are removed: a user's own files in the directory stay).
void remove_temporaries_of_killed_run(const RunDirectory& run) {
  for (const auto& entry : std::filesystem::directory_iterator(run.root)) {
    const std::string name = entry.path().filename().string();
    for (const char* target : RunDirectory::kAtomicFiles) {
      if (io::is_temporary_of(name, target)) {
        std::filesystem::remove(entry.path());
        break;
      }
    }
  }
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainConfig& c, const std::vector<at::Tensor>& parameters) {
  if (c.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(parameters,
                                               torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
  }
  if (c.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(parameters, torch::optim::AdamOptions(c.lr).weight_decay(c.weight_decay));
  }
  return std::make_unique<torch::optim::AdamW>(parameters, torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

// `ibn sweep` tells a diverged run from a failed one by "the training loss became"
// (sweep::is_divergence): keep the words.
DataError diverged(const std::string& how, const std::string& checkpoint_note) {
  return DataError(fmt::format("the training loss became {}: the learning rate is too high for this model, a normalizer "
                               "divides by zero (eps=0 on a constant group), or the data holds NaN/Inf; {}",
                               how, checkpoint_note));
}

// One run of `ibn train` once its options are prepared: the epoch loop, and the metrics,
// activation dumps and checkpoints it leaves in the run directory.
class Trainer {
 public:
  Trainer(PreparedRun prepared, std::ostream& log);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
  TrainResult run();

 private:
  // One forward pass over the dumped samples: the taps to store, and the logits (which give the
  // epoch's metrics when the dump holds every sample: one pass instead of two).
  struct Activations {
    std::vector<io::DatasetToWrite> datasets;
    at::Tensor logits;
  };

  void create_run_directory() const;
  void start_fresh();
  void resume();
  Activations activations_at(int64_t epoch);
  void record(int64_t epoch, double lr, double seconds, const at::Tensor& dumped_logits);
  void record_and_dump(int64_t epoch, double lr, double seconds);
  void save_checkpoint(int64_t epoch, const std::vector<int64_t>& dumped);
  [[noreturn]] void stop_for_failed_write(int64_t epoch, const std::exception& error);
  void train_epoch(int64_t epoch, double lr);
  void finish_epoch(int64_t epoch, double lr, double elapsed);
  void print_progress(int64_t epoch, double elapsed) const;
  void write_outputs();
  std::string checkpoint_note() const;

  PreparedRun prepared_;
  const TrainConfig& c_;  // prepared_.config
  models::ModelImpl& model_;
  std::ostream& log_;
  const std::string config_;  // config.ini's text
  const RunDirectory files_;
  const bool resuming_;
  const bool quiet_, terminal_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  ActivationParts parts_;
  at::Generator shuffle_;  // the batch order
  std::vector<EpochMetrics> metrics_;
  int64_t checkpoint_epoch_ = -1;  // the last checkpoint taken or resumed from; -1: none
  int64_t first_epoch_ = 1;
  double seconds_before_ = 0;  // training time of the epochs before a resume
  std::string started_;
};

Trainer::Trainer(PreparedRun prepared, std::ostream& log)
    : prepared_(std::move(prepared)),
      c_(prepared_.config),
      model_(*prepared_.model),
      log_(log),
      config_(config_text(c_, prepared_.data.spec, model_.spec())),
      files_{c_.out},
      resuming_(c_.resume && std::filesystem::exists(files_.checkpoint())),
      quiet_(c_.progress == "quiet"),
      terminal_(c_.progress == "auto" && ::isatty(::fileno(stdout))),
      parts_(files_),
      shuffle_(at::make_generator<at::CPUGeneratorImpl>(c_.seed + 1)) {
  model_.to(prepared_.device);
  // After the move to the device: the optimizer holds the parameters it will update.
  optimizer_ = make_optimizer(c_, model_.parameters());
}

void Trainer::create_run_directory() const {
  std::error_code error;
  std::filesystem::create_directories(c_.out, error);
  if (error || !std::filesystem::is_directory(c_.out)) {
    throw std::runtime_error(fmt::format("cannot create the run directory '{}': {}", c_.out,
                                         error ? error.message() : "a file of that name exists"));
  }
}

// Parts and a checkpoint left by an earlier run in this directory are not ours. A complete
// activations.h5 of an earlier run stays until this run's replaces it.
void Trainer::start_fresh() {
  io::write_file_atomically(files_.config(), config_);
  parts_.start_fresh();
  std::filesystem::remove(files_.checkpoint());
}

void Trainer::resume() {
  CheckpointReader checkpoint(files_.checkpoint());
  // The options are checked before any state is loaded: another optimizer's state would trip
  // LibTorch's internal asserts, and another seed or schedule would make a run that is neither
  // the old one nor a new one.
  check_resumable(c_, config_, checkpoint);
  io::write_file_atomically(files_.config(), config_);  // epochs or threads may have grown
  TrainingProgress progress = checkpoint.restore(model_, *optimizer_);
  checkpoint_epoch_ = progress.epoch;
  first_epoch_ = progress.epoch + 1;
  shuffle_.set_state(progress.shuffle_rng);
  metrics_ = std::move(progress.metrics);
  seconds_before_ = metrics_.back().seconds;
  parts_.resume(progress.dumped_epochs);
  if (!quiet_) log_ << fmt::format("resuming {} after epoch {}\n", c_.out, checkpoint_epoch_) << std::flush;
}

Trainer::Activations Trainer::activations_at(int64_t epoch) {
  torch::NoGradGuard no_grad;
  model_.eval();
  const ForwardPass pass = forward_in_chunks(model_, prepared_.dump_inputs, prepared_.device);
  model_.train();
  Activations out;
  out.logits = pass.logits;
  for (const auto& [site, kappa] : pass.contractions) {
    out.datasets.push_back({fmt::format("/contraction/{}/{}", epoch, site), at::full({1}, kappa, at::kDouble), {}});
  }
  for (const std::string& layer : prepared_.layers) {
    at::Tensor t = pass.taps.at(layer).detach().to(torch::kFloat);
    // Feature maps [N, C, H, W] and tokens [N, T, D] become [N, C] / [N, D] by their mean
    // (dump_maps=pool) or [N, C·H·W] / [N, T·D] (flatten).
    if (c_.dump_maps == "pool" && t.dim() == 4) t = t.mean({2, 3});
    if (c_.dump_maps == "pool" && t.dim() == 3) t = t.mean(1);
    out.datasets.push_back({fmt::format("/epochs/{}/{}", epoch, layer), t.reshape({t.size(0), -1}).cpu(), {},
                            c_.dump_dtype == "float16"});
  }
  return out;
}

// `dumped_logits`: the dump's logits when it holds every evaluation sample (train rows first),
// else undefined and the splits are evaluated here.
void Trainer::record(int64_t epoch, double lr, double seconds, const at::Tensor& dumped_logits) {
  Evaluation train, test;
  if (dumped_logits.defined()) {
    const at::Tensor& labels = prepared_.dump_labels;
    const auto of = [&](int64_t begin, int64_t end) {
      const auto [loss, correct] = loss_and_correct(dumped_logits.slice(0, begin, end), labels.slice(0, begin, end).to(prepared_.device));
      const double predictions = static_cast<double>(labels.slice(0, begin, end).numel());
      return Evaluation{loss.item<double>() / predictions, correct.item<double>() / predictions};
    };
    const int64_t train_rows = prepared_.eval_train.labels.size(0);
    train = of(0, train_rows);
    test = of(train_rows, labels.size(0));
  } else {
    train = evaluate(model_, prepared_.eval_train, prepared_.device, c_.batch);
    test = evaluate(model_, prepared_.eval_test, prepared_.device, c_.batch);
  }
  metrics_.push_back({epoch, train.loss, train.accuracy, test.loss, test.accuracy, lr, seconds});
}

// Records the epoch's metrics and, when it is scheduled, queues its activations.
void Trainer::record_and_dump(int64_t epoch, double lr, double seconds) {
  if (!std::binary_search(prepared_.dumps.begin(), prepared_.dumps.end(), epoch)) {
    record(epoch, lr, seconds, at::Tensor());
    return;
  }
  Activations activations = activations_at(epoch);
  record(epoch, lr, seconds, c_.dump_samples == "all" ? activations.logits : at::Tensor());
  parts_.queue(epoch, std::move(activations.datasets));
}

// `dumped`: the dumped epochs whose part files are on disk.
void Trainer::save_checkpoint(int64_t epoch, const std::vector<int64_t>& dumped) {
  const TrainingProgress progress{epoch, metrics_, dumped, shuffle_.get_state()};
  io::write_file_atomically(files_.checkpoint(), encode_checkpoint(model_, *optimizer_, progress, config_));
  checkpoint_epoch_ = epoch;
}

std::string Trainer::checkpoint_note() const {
  return checkpoint_epoch_ >= 0 ? fmt::format("'{}' keeps its checkpoint of epoch {}", c_.out, checkpoint_epoch_)
                                : "no checkpoint was taken";
}

// A failed write (disk full, directory gone) stops training with the state checkpointed where
// a resumed run can still produce every dump: at this epoch if only its own dump is missing,
// else at the last checkpoint, whose dumps were all on disk when it was taken.
void Trainer::stop_for_failed_write(int64_t epoch, const std::exception& error) {
  const std::vector<int64_t> on_disk = parts_.on_disk();
  const std::vector<int64_t>& dumped = parts_.dumped_epochs();
  const bool only_this_epoch_missing = std::all_of(dumped.begin(), dumped.end(), [&](int64_t e) {
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
  if (checkpoint_epoch_ < 0) {
    throw std::runtime_error(fmt::format("{}; {}no checkpoint to resume from: start the run again", error.what(), state));
  }
  if (checkpoint_epoch_ != epoch) state += fmt::format("the last checkpoint (epoch {}) is kept", checkpoint_epoch_);
  throw std::runtime_error(fmt::format("{}; {}; resume with: ibn train --resume {}", error.what(), state, c_.out));
}

// One pass over a shuffled training set, or steps_per_epoch batches drawn at random. Stops at
// the first non-finite loss: every later step would only spread NaN weights.
void Trainer::train_epoch(int64_t epoch, double lr) {
  const at::Tensor& inputs = prepared_.data.train.inputs;  // on the device (run())
  const at::Tensor& labels = prepared_.data.train.labels;
  const c10::Device device = prepared_.device;
  const int64_t n_train = inputs.size(0);
  const auto index_options = at::TensorOptions().dtype(at::kLong);
  const at::Tensor order = c_.steps_per_epoch > 0 ? at::randint(n_train, {c_.steps_per_epoch * c_.batch}, shuffle_, index_options)
                                                  : at::randperm(n_train, shuffle_, index_options);
  const at::Tensor rows_in_order = order.to(device);
  at::Tensor nonfinite_loss;  // CUDA: whether any step of this epoch had a non-finite loss
  for (int64_t s = 0; s < rows_in_order.size(0); s += c_.batch) {
    const auto rows = rows_in_order.slice(0, s, std::min(rows_in_order.size(0), s + c_.batch));
    const auto logits = model_.forward(inputs.index_select(0, rows));
    const auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                           labels.index_select(0, rows).reshape({-1}));
    // On the CPU each step's loss is read (free); on a GPU that would sync every step, so the
    // steps are flagged on the device and the flag is read once per epoch.
    if (device.is_cuda()) {
      const at::Tensor bad = loss.detach().isfinite().logical_not();
      nonfinite_loss = nonfinite_loss.defined() ? nonfinite_loss.logical_or(bad) : bad;
    } else if (const double value = loss.item<double>(); !std::isfinite(value)) {
      throw diverged(fmt::format("{} at epoch {}, step {} (lr {})", std::isnan(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf",
                                 epoch, s / c_.batch + 1, lr),
                     checkpoint_note());
    }
    optimizer_->zero_grad();
    loss.backward();
    optimizer_->step();
  }
  if (nonfinite_loss.defined() && nonfinite_loss.item<bool>()) {
    throw diverged(fmt::format("NaN or infinite during epoch {} (lr {}; on a GPU the step is not tracked)", epoch, lr),
                   checkpoint_note());
  }
}

// The epoch's metrics, its dump when one is scheduled, and a checkpoint when one is due.
void Trainer::finish_epoch(int64_t epoch, double lr, double elapsed) {
  try {
    record_and_dump(epoch, lr, elapsed);
    if (epoch == c_.epochs || (c_.checkpoint_every > 0 && epoch % c_.checkpoint_every == 0)) {
      parts_.drain();
      save_checkpoint(epoch, parts_.dumped_epochs());
    }
  } catch (const std::exception& e) {
    stop_for_failed_write(epoch, e);
  }
}

void Trainer::print_progress(int64_t epoch, double elapsed) const {
  const EpochMetrics& m = metrics_.back();
  const double eta = elapsed / static_cast<double>(epoch) * static_cast<double>(c_.epochs - epoch);
  const char* evaluated = c_.validation > 0 ? "val" : "test";
  const std::string line = fmt::format(
      "epoch {}/{}  loss {:.4f}  train acc {:.3f}  {} acc {:.3f}{}  {:.1f} epochs/s  ETA {:.0f}s", epoch, c_.epochs,
      m.train_loss, m.train_accuracy, evaluated, m.test_accuracy,
      prepared_.data.sequence ? fmt::format("  {} {:.3f} bits/byte", evaluated, m.test_loss / std::log(2.0)) : "",
      static_cast<double>(epoch) / std::max(elapsed, 1e-9), eta);
  if (terminal_) {
    log_ << "\r" << line << "\033[K" << (epoch == c_.epochs ? "\n" : "") << std::flush;
  } else if (!quiet_ && (epoch == c_.epochs || epoch % std::max<int64_t>(1, c_.epochs / 10) == 0)) {
    log_ << line << "\n" << std::flush;
  }
}

// RUN/metrics.csv, and RUN/activations.h5: the metrics as /metrics columns, the dumped samples,
// every dumped epoch, and the run's provenance.
void Trainer::write_outputs() {
  const char* names[7] = {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"};
  std::string csv = fmt::format("{}\n", fmt::join(names, ","));
  std::vector<double> columns[7];
  for (const EpochMetrics& m : metrics_) {
    csv += fmt::format("{},{:.8g},{:.8g},{:.8g},{:.8g},{:.8g},{:.4f}\n", m.epoch, m.train_loss, m.train_accuracy,
                       m.test_loss, m.test_accuracy, m.lr, m.seconds);
    const double row[7] = {static_cast<double>(m.epoch), m.train_loss, m.train_accuracy, m.test_loss, m.test_accuracy, m.lr, m.seconds};
    for (int i = 0; i < 7; ++i) columns[i].push_back(row[i]);
  }
  io::write_file_atomically(files_.metrics(), csv);
  std::vector<io::DatasetToWrite> store;
  for (int i = 0; i < 7; ++i) store.push_back({std::string("/metrics/") + names[i], torch::tensor(columns[i], torch::kDouble), {}});
  store.push_back({"/data/inputs", prepared_.dump_inputs, {}});
  store.push_back({"/data/labels", prepared_.dump_labels, {}});
  store.push_back({"/data/index", prepared_.dump_index, {}});
  store.push_back({"/data/split", prepared_.dump_split,
                   {{"meaning", std::string(c_.validation > 0 ? "0 = train, 1 = validation (held out of train)" : "0 = train, 1 = test")}}});
  store.push_back({"/meta/dumped_epochs", torch::tensor(parts_.dumped_epochs(), torch::kLong), {}});
  const BuildInfo& info = build_info();
  const data::ClassificationData& data = prepared_.data;
  parts_.gather(store, {{"config", config_}, {"seed", static_cast<int64_t>(c_.seed)}, {"git_commit", info.git_commit},
                        {"ibn_version", info.version}, {"torch_version", info.torch_version}, {"device", prepared_.device.str()},
                        {"data", data.spec}, {"data_description", data.description}, {"model", model_.spec()},
                        {"norm", c_.norm}, {"layers", fmt::format("{}", fmt::join(prepared_.layers, ","))},
                        {"chain", fmt::format("{}", fmt::join(model_.chain(), ","))},
                        {"norm_spec", normalizer_specs(model_)}, {"norm_description", normalizer_descriptions(model_)},
                        {"test_predictions", static_cast<int64_t>(prepared_.eval_test.labels.numel())},
                        {"test_majority_rate", majority_rate(prepared_.eval_test.labels)},
                        {"start_time", started_}, {"end_time", now_utc()}, {"complete", int64_t{1}}});
}

TrainResult Trainer::run() {
  create_run_directory();
  started_ = now_utc();
  if (!quiet_) log_ << eval_subset_line(prepared_) << std::flush;
  if (resuming_) {
    resume();
  } else {
    start_fresh();
  }
  remove_temporaries_of_killed_run(files_);

  if (!resuming_) {
    try {
      record_and_dump(0, 0.0, 0.0);
      parts_.drain();  // the first write also tells early whether the directory takes files
    } catch (const std::exception& e) {
      stop_for_failed_write(0, e);
    }
  } else if (std::binary_search(prepared_.dumps.begin(), prepared_.dumps.end(), checkpoint_epoch_) &&
             !parts_.dumped(checkpoint_epoch_)) {
    // A failed write stopped the run after this epoch's training and metrics.
    parts_.queue(checkpoint_epoch_, activations_at(checkpoint_epoch_).datasets);
  }
  data::Split& train = prepared_.data.train;
  train.inputs = train.inputs.to(prepared_.device);
  train.labels = train.labels.to(prepared_.device);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t epoch = first_epoch_; epoch <= c_.epochs; ++epoch) {
    const double lr = scheduled_lr(c_, epoch);
    set_learning_rate(*optimizer_, lr);
    train_epoch(epoch, lr);
    const double elapsed = seconds_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    finish_epoch(epoch, lr, elapsed);
    print_progress(epoch, elapsed);
  }
  try {
    parts_.drain();  // a run resumed after its last epoch may have queued that epoch's dump
  } catch (const std::exception& e) {
    stop_for_failed_write(c_.epochs, e);
  }
  try {
    write_outputs();
  } catch (const std::exception& e) {
    // The parts and the last epoch's checkpoint are on disk: a resume only gathers again.
    throw std::runtime_error(fmt::format("{}; every epoch is trained and dumped: once the cause is fixed (room on the disk), finish the run with: "
                                         "ibn train --resume {}", e.what(), c_.out));
  }
  return {c_.out, metrics_, parts_.dumped_epochs(), prepared_.data.sequence};
}

}  // namespace

TrainResult train(const TrainConfig& options, std::ostream& log) {
  // Threads first: the data are generated with them (ibsgd12's labels come from a matrix
  // product, whose last bits depend on OpenBLAS's thread count), and a run must be the same
  // run for the same options.
  check_config(options);
  set_compute_threads(options.threads);
  Trainer trainer(prepare_run(options), log);
  return trainer.run();
}

}  // namespace ibn::train
