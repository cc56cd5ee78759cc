#include "ibn/train/train.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>

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

// A model's inputs in the run's dtype (--dtype); token ids stay integers.
at::Tensor as_input(const at::Tensor& inputs, const c10::Device& device, at::ScalarType dtype) {
  return inputs.is_floating_point() ? inputs.to(device, dtype) : inputs.to(device);
}

// The summed loss and the correct predictions over rows [begin, end) of a split (this
// process's share of it), in chunks of `batch` rows.
Evaluation evaluation_sums(models::ModelImpl& model, const data::Split& split, std::pair<int64_t, int64_t> rows,
                           const c10::Device& device, at::ScalarType dtype, int64_t batch) {
  torch::NoGradGuard no_grad;
  model.eval();
  double loss = 0, correct = 0;
  for (int64_t s = rows.first; s < rows.second; s += batch) {
    const int64_t end = std::min(rows.second, s + batch);
    const auto [l, c] = loss_and_correct(model.forward(as_input(split.inputs.slice(0, s, end), device, dtype)),
                                         split.labels.slice(0, s, end).to(device));
    loss += l.item<double>();
    correct += c.item<double>();
  }
  model.train();
  return {loss, correct};
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

// `weight`: this pass's share of the samples whose κ is averaged (its rows over all ranks' rows).
ForwardPass forward_in_chunks(models::ModelImpl& model, const at::Tensor& inputs, const c10::Device& device,
                              at::ScalarType dtype, double weight) {
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
      logits.push_back(model.forward(as_input(inputs.slice(0, start, start + rows), device, dtype), &chunk_taps));
    }
    for (auto& [name, t] : chunk_taps) taps[name].push_back(t.detach());
    for (const auto& [site, kappa] : chunk_kappa) {
      pass.contractions[site] += kappa * weight * static_cast<double>(rows) / static_cast<double>(n);
    }
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
// activation dumps and checkpoints it leaves in the run directory. In a data-parallel run every
// rank runs one, in step: each takes its share of every batch and of the evaluated and dumped
// samples, and rank 0 alone writes files.
class Trainer {
 public:
  Trainer(PreparedRun prepared, dist::ProcessGroup& group, std::ostream& log);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
  TrainResult run();

 private:
  // One forward pass over this rank's share of the dumped samples: the taps to store (gathered
  // on rank 0; empty elsewhere), and the share's logits and rows (which give the epoch's
  // metrics when the dump holds every sample: one pass instead of two).
  struct Activations {
    std::vector<io::DatasetToWrite> datasets;
    at::Tensor logits;
    std::pair<int64_t, int64_t> rows;
  };

  void create_run_directory() const;
  std::string checkpoint_bytes() const;
  void start_fresh();
  void resume(const std::string& checkpoint);
  void on_root(const std::function<void()>& work, const char* what);
  void agree_on_writes(int64_t epoch, const std::exception_ptr& root_failure);
  Activations activations_at(int64_t epoch);
  void record(int64_t epoch, double lr, double seconds, const Activations* dumped);
  void share_buffers();
  void record_and_dump(int64_t epoch, double lr, double seconds);
  void save_checkpoint(int64_t epoch, const std::vector<int64_t>& dumped);
  [[noreturn]] void stop_for_failed_write(int64_t epoch, const std::exception& error);
  at::Tensor sum_gradients_and(const at::Tensor& loss);
  void train_epoch(int64_t epoch, double lr);
  void train_epochs();
  void finish_epoch(int64_t epoch, double lr, double elapsed);
  void print_progress(int64_t epoch, double elapsed) const;
  void finish_run();
  void write_outputs();
  std::string checkpoint_note() const;

  PreparedRun prepared_;
  const TrainConfig& c_;  // prepared_.config
  models::ModelImpl& model_;
  dist::ProcessGroup& group_;
  std::ostream& log_;
  const at::ScalarType dtype_;
  const std::string config_;  // config.ini's text
  const RunDirectory files_;
  bool resuming_ = false;
  const bool quiet_, terminal_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  ActivationParts parts_;  // rank 0's
  at::Generator shuffle_;  // the batch order (the same on every rank)
  std::vector<EpochMetrics> metrics_;
  int64_t checkpoint_epoch_ = -1;  // the last checkpoint taken or resumed from; -1: none
  int64_t first_epoch_ = 1;
  double seconds_before_ = 0;  // training time of the epochs before a resume
  std::string started_;
};

Trainer::Trainer(PreparedRun prepared, dist::ProcessGroup& group, std::ostream& log)
    : prepared_(std::move(prepared)),
      c_(prepared_.config),
      model_(*prepared_.model),
      group_(group),
      log_(log),
      dtype_(c_.dtype == "float64" ? at::kDouble : at::kFloat),
      config_(config_text(c_, prepared_.data.spec, model_.spec())),
      files_{c_.out},
      quiet_(c_.progress == "quiet" || !group.is_root()),
      terminal_(c_.progress == "auto" && group.is_root() && ::isatty(::fileno(stdout))),
      parts_(files_),
      shuffle_(at::make_generator<at::CPUGeneratorImpl>(c_.seed + 1)) {
  model_.to(prepared_.device);
  // Floating tensors only: LibTorch's Module::to(dtype) would also turn the integer step
  // counters of batch-area layers into floats.
  if (dtype_ != at::kFloat) {
    at::NoGradGuard no_grad;
    for (at::Tensor t : model_.parameters()) t.set_data(t.to(dtype_));
    for (at::Tensor t : model_.buffers()) {
      if (t.is_floating_point()) t.set_data(t.to(dtype_));
    }
  }
  // Every rank built the model from the same seed; rank 0's weights are sent anyway, so that
  // no difference in how a machine draws them can start the ranks apart.
  for (at::Tensor parameter : model_.parameters()) {
    at::NoGradGuard no_grad;
    group_.broadcast(parameter);
  }
  // LibTorch's default generator draws the training noise (NormalNorm's): each rank its own
  // stream, so that the shares of a batch do not get the same noise.
  // (rank + 1: rank 0 must not replay the stream the weights were drawn from.)
  if (group_.size() > 1) at::manual_seed(c_.seed + 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(group_.rank() + 1));
  if (c_.sync_bn && group_.size() > 1) {
    dist::ProcessGroup* shared = &group_;
    for (auto [site, normalizer] : model_.normalizers()) {  // a copy of the holder reaches the layer itself
      normalizer->synchronize_batch_statistics([shared](const at::Tensor& t) { return shared->differentiable_sum(t); });
    }
  }
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

// Runs `work` on rank 0 alone and tells every rank whether it succeeded: the others stop with
// rank 0 instead of waiting for it in the next collective.
void Trainer::on_root(const std::function<void()>& work, const char* what) {
  std::exception_ptr failure;
  if (group_.is_root()) {
    try {
      work();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  const bool ok = group_.all_ok(!failure);
  if (failure) std::rethrow_exception(failure);
  if (!ok) throw std::runtime_error(fmt::format("rank 0 failed to {} and stopped the run (its message says why)", what));
}

// Rank 0's checkpoint of this run when it resumes one, after a marker byte ('C'), else empty;
// every rank gets the same bytes. A checkpoint file of no bytes is still a checkpoint, and
// fails to load rather than start the run afresh.
std::string Trainer::checkpoint_bytes() const {
  if (!c_.resume || !std::filesystem::exists(files_.checkpoint())) return "";
  return "C" + io::read_file(files_.checkpoint());
}

// Parts and a checkpoint left by an earlier run in this directory are not ours. A complete
// activations.h5 of an earlier run stays until this run's replaces it.
void Trainer::start_fresh() {
  io::write_file_atomically(files_.config(), config_);
  parts_.start_fresh();
  std::filesystem::remove(files_.checkpoint());
}

void Trainer::resume(const std::string& bytes) {
  std::istringstream stream(bytes);
  CheckpointReader checkpoint(stream);
  // The options are checked before any state is loaded: another optimizer's state would trip
  // LibTorch's internal asserts, and another seed or schedule would make a run that is neither
  // the old one nor a new one. Every rank checks the same bytes and fails alike.
  check_resumable(c_, config_, checkpoint);
  TrainingProgress progress = checkpoint.restore(model_, *optimizer_);
  checkpoint_epoch_ = progress.epoch;
  first_epoch_ = progress.epoch + 1;
  shuffle_.set_state(progress.shuffle_rng);
  metrics_ = std::move(progress.metrics);
  seconds_before_ = metrics_.back().seconds;
  on_root([&] {
    io::write_file_atomically(files_.config(), config_);  // epochs or threads may have grown
    parts_.resume(progress.dumped_epochs);
  }, "resume its part files");
  if (!quiet_) log_ << fmt::format("resuming {} after epoch {}\n", c_.out, checkpoint_epoch_) << std::flush;
}

// A failed write on rank 0 (disk full) stops every rank: rank 0 through stop_for_failed_write,
// which checkpoints what it can, the others with a line that points to rank 0's.
void Trainer::agree_on_writes(int64_t epoch, const std::exception_ptr& root_failure) {
  if (group_.all_ok(!root_failure)) return;
  if (!root_failure) {
    throw std::runtime_error(fmt::format("rank 0 could not write the outputs of epoch {} and stopped the run (its message "
                                         "says why)", epoch));
  }
  try {
    std::rethrow_exception(root_failure);
  } catch (const std::exception& e) {
    stop_for_failed_write(epoch, e);
  }
}

Trainer::Activations Trainer::activations_at(int64_t epoch) {
  torch::NoGradGuard no_grad;
  const int64_t samples = prepared_.dump_inputs.size(0);
  Activations out;
  out.rows = dist::shard(samples, group_.rank(), group_.size());
  std::vector<int64_t> rows_per_rank;
  for (int r = 0; r < group_.size(); ++r) {
    const auto [first, end] = dist::shard(samples, r, group_.size());
    rows_per_rank.push_back(end - first);
  }
  model_.eval();
  const double share = static_cast<double>(out.rows.second - out.rows.first) / static_cast<double>(samples);
  const ForwardPass pass = forward_in_chunks(model_, prepared_.dump_inputs.slice(0, out.rows.first, out.rows.second),
                                             prepared_.device, dtype_, share);
  model_.train();
  out.logits = pass.logits;
  // κ: each rank's share-weighted mean, summed (every rank has every site: each has rows).
  std::vector<double> kappas;
  for (const auto& [site, kappa] : pass.contractions) kappas.push_back(kappa);
  at::Tensor summed = torch::tensor(kappas, torch::kDouble);
  group_.all_reduce_sum(summed);
  size_t site_index = 0;
  for (const auto& [site, kappa] : pass.contractions) {
    out.datasets.push_back({fmt::format("/contraction/{}/{}", epoch, site),
                            at::full({1}, summed[static_cast<int64_t>(site_index++)].item<double>(), at::kDouble), {}});
  }
  for (const std::string& layer : prepared_.layers) {
    at::Tensor t = pass.taps.at(layer).detach().to(torch::kFloat);
    // Feature maps [N, C, H, W] and tokens [N, T, D] become [N, C] / [N, D] by their mean
    // (dump_maps=pool) or [N, C·H·W] / [N, T·D] (flatten).
    if (c_.dump_maps == "pool" && t.dim() == 4) t = t.mean({2, 3});
    if (c_.dump_maps == "pool" && t.dim() == 3) t = t.mean(1);
    const at::Tensor gathered = group_.gather_rows(t.reshape({t.size(0), -1}).cpu(), rows_per_rank);
    if (group_.is_root()) {
      out.datasets.push_back({fmt::format("/epochs/{}/{}", epoch, layer), gathered, {}, c_.dump_dtype == "float16"});
    }
  }
  if (!group_.is_root()) out.datasets.clear();
  return out;
}

// `dumped`: the dump's pass when it holds every evaluation sample (train rows first), else null
// and the splits are evaluated here. Each rank sums over its share; the sums are added up.
void Trainer::record(int64_t epoch, double lr, double seconds, const Activations* dumped) {
  const int64_t train_rows = prepared_.eval_train.labels.size(0);
  Evaluation train, test;
  if (dumped != nullptr) {
    const at::Tensor& labels = prepared_.dump_labels;
    const auto [first, end] = dumped->rows;
    const auto sums_over = [&](int64_t begin, int64_t stop) {  // dump rows [begin, stop) ∩ this rank's
      begin = std::max(begin, first);
      stop = std::min(stop, end);
      if (begin >= stop) return Evaluation{};
      const auto [loss, correct] = loss_and_correct(dumped->logits.slice(0, begin - first, stop - first),
                                                    labels.slice(0, begin, stop).to(prepared_.device));
      return Evaluation{loss.item<double>(), correct.item<double>()};
    };
    train = sums_over(0, train_rows);
    test = sums_over(train_rows, labels.size(0));
  } else {
    const auto rows_of = [&](const data::Split& split) { return dist::shard(split.labels.size(0), group_.rank(), group_.size()); };
    train = evaluation_sums(model_, prepared_.eval_train, rows_of(prepared_.eval_train), prepared_.device, dtype_, c_.batch);
    test = evaluation_sums(model_, prepared_.eval_test, rows_of(prepared_.eval_test), prepared_.device, dtype_, c_.batch);
  }
  at::Tensor sums = torch::tensor({train.loss, train.accuracy, test.loss, test.accuracy}, torch::kDouble);
  group_.all_reduce_sum(sums);
  const double train_predictions = static_cast<double>(prepared_.eval_train.labels.numel());
  const double test_predictions = static_cast<double>(prepared_.eval_test.labels.numel());
  metrics_.push_back({epoch, sums[0].item<double>() / train_predictions, sums[1].item<double>() / train_predictions,
                      sums[2].item<double>() / test_predictions, sums[3].item<double>() / test_predictions, lr, seconds});
}

// Rank 0's running statistics on every rank, as DDP's broadcast_buffers does: each rank moved
// its own from its share of the batches (without --sync-bn they differ), and evaluation, dumps
// and the checkpoint must see one model, the one a resumed run restores.
void Trainer::share_buffers() {
  if (group_.size() == 1) return;
  at::NoGradGuard no_grad;
  for (at::Tensor buffer : model_.buffers()) group_.broadcast(buffer);
}

// Records the epoch's metrics and, when it is scheduled, queues its activations (rank 0). The
// collectives come first: a write that fails on rank 0 leaves no rank inside one.
void Trainer::record_and_dump(int64_t epoch, double lr, double seconds) {
  share_buffers();
  if (!std::binary_search(prepared_.dumps.begin(), prepared_.dumps.end(), epoch)) {
    record(epoch, lr, seconds, nullptr);
    return;
  }
  Activations activations = activations_at(epoch);
  record(epoch, lr, seconds, c_.dump_samples == "all" ? &activations : nullptr);
  if (group_.is_root()) parts_.queue(epoch, std::move(activations.datasets));
}

// `dumped`: the dumped epochs whose part files are on disk. Rank 0 writes; every rank records
// the epoch, so that any of them can name the checkpoint a failure leaves.
void Trainer::save_checkpoint(int64_t epoch, const std::vector<int64_t>& dumped) {
  if (group_.is_root()) {
    const TrainingProgress progress{epoch, metrics_, dumped, shuffle_.get_state()};
    io::write_file_atomically(files_.checkpoint(), encode_checkpoint(model_, *optimizer_, progress, config_));
  }
  checkpoint_epoch_ = epoch;
}

std::string Trainer::checkpoint_note() const {
  return checkpoint_epoch_ >= 0 ? fmt::format("'{}' keeps its checkpoint of epoch {}", c_.out, checkpoint_epoch_)
                                : "no checkpoint was taken";
}

// A failed write (disk full, directory gone) stops training with the state checkpointed where
// a resumed run can still produce every dump: at this epoch if only its own dump is missing,
// else at the last checkpoint, whose dumps were all on disk when it was taken. Rank 0 only.
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

// Sums every parameter's gradient over the ranks, with `loss` (this rank's part of the global
// batch's mean loss) riding along in the same message; returns the summed loss: the global
// batch's, the same on every rank, so that all of them stop at a non-finite one together.
// Parameters without a gradient have none on every rank (the ranks run the same graph).
at::Tensor Trainer::sum_gradients_and(const at::Tensor& loss) {
  std::vector<at::Tensor> gradients;
  for (const at::Tensor& parameter : model_.parameters()) {
    if (parameter.grad().defined()) gradients.push_back(parameter.grad().reshape({-1}));
  }
  gradients.push_back(loss.detach().reshape({1}).to(dtype_));
  at::Tensor flat = at::cat(gradients);
  group_.all_reduce_sum(flat);
  int64_t offset = 0;
  for (at::Tensor parameter : model_.parameters()) {
    if (!parameter.grad().defined()) continue;
    const int64_t n = parameter.numel();
    parameter.mutable_grad().copy_(flat.slice(0, offset, offset + n).view_as(parameter));
    offset += n;
  }
  return flat[offset];
}

// One pass over a shuffled training set, or steps_per_epoch batches drawn at random. Stops at
// the first non-finite loss: every later step would only spread NaN weights. Every rank draws
// the same order and takes its shard of each batch; one process computes the batch's mean loss
// as LibTorch's cross_entropy does, several their parts of it (summed, over the batch's
// prediction count), whose gradients add up to the same.
void Trainer::train_epoch(int64_t epoch, double lr) {
  const at::Tensor& inputs = prepared_.data.train.inputs;  // on the device, in the run's dtype (run())
  const at::Tensor& labels = prepared_.data.train.labels;
  const c10::Device device = prepared_.device;
  const int64_t n_train = inputs.size(0);
  const int64_t predictions_per_row = labels.numel() / std::max<int64_t>(1, n_train);
  const bool parallel = group_.size() > 1;
  const auto index_options = at::TensorOptions().dtype(at::kLong);
  const at::Tensor order = c_.steps_per_epoch > 0 ? at::randint(n_train, {c_.steps_per_epoch * c_.batch}, shuffle_, index_options)
                                                  : at::randperm(n_train, shuffle_, index_options);
  const at::Tensor rows_in_order = order.to(device);
  at::Tensor nonfinite_loss;  // CUDA: whether any step of this epoch had a non-finite loss
  for (int64_t s = 0; s < rows_in_order.size(0); s += c_.batch) {
    const auto batch_rows = rows_in_order.slice(0, s, std::min(rows_in_order.size(0), s + c_.batch));
    const auto [first, end] = dist::shard(batch_rows.size(0), group_.rank(), group_.size());
    const auto rows = parallel ? batch_rows.slice(0, first, end) : batch_rows;
    const auto logits = model_.forward(inputs.index_select(0, rows));
    const auto flat_logits = logits.reshape({-1, logits.size(-1)});
    const auto flat_labels = labels.index_select(0, rows).reshape({-1});
    const auto loss = parallel ? torch::nn::functional::cross_entropy(
                                     flat_logits, flat_labels,
                                     torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                                     .div(static_cast<double>(batch_rows.size(0) * predictions_per_row))
                               : torch::nn::functional::cross_entropy(flat_logits, flat_labels);
    optimizer_->zero_grad();
    loss.backward();
    const at::Tensor batch_loss = parallel ? sum_gradients_and(loss) : loss.detach();
    // On the CPU each step's loss is read (free); on a GPU that would sync every step, so the
    // steps are flagged on the device and the flag is read once per epoch.
    if (device.is_cuda()) {
      const at::Tensor bad = batch_loss.isfinite().logical_not();
      nonfinite_loss = nonfinite_loss.defined() ? nonfinite_loss.logical_or(bad) : bad;
    } else if (const double value = batch_loss.item<double>(); !std::isfinite(value)) {
      throw diverged(fmt::format("{} at epoch {}, step {} (lr {})", std::isnan(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf",
                                 epoch, s / c_.batch + 1, lr),
                     checkpoint_note());
    }
    optimizer_->step();
  }
  if (nonfinite_loss.defined() && nonfinite_loss.item<bool>()) {
    throw diverged(fmt::format("NaN or infinite during epoch {} (lr {}; on a GPU the step is not tracked)", epoch, lr),
                   checkpoint_note());
  }
}

// The epoch's metrics, its dump when one is scheduled, and a checkpoint when one is due.
void Trainer::finish_epoch(int64_t epoch, double lr, double elapsed) {
  std::exception_ptr failure;
  try {
    record_and_dump(epoch, lr, elapsed);
    if (epoch == c_.epochs || (c_.checkpoint_every > 0 && epoch % c_.checkpoint_every == 0)) {
      if (group_.is_root()) parts_.drain();
      save_checkpoint(epoch, parts_.dumped_epochs());
    }
  } catch (...) {
    // Elsewhere only a collective can fail, and that one has already stopped rank 0 too.
    if (!group_.is_root()) throw;
    failure = std::current_exception();
  }
  agree_on_writes(epoch, failure);
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
                        {"world_size", static_cast<int64_t>(group_.size())}, {"process_group", group_.backend_name()},
                        {"data", data.spec}, {"data_description", data.description}, {"model", model_.spec()},
                        {"norm", c_.norm}, {"layers", fmt::format("{}", fmt::join(prepared_.layers, ","))},
                        {"chain", fmt::format("{}", fmt::join(model_.chain(), ","))},
                        {"norm_spec", normalizer_specs(model_)}, {"norm_description", normalizer_descriptions(model_)},
                        {"test_predictions", static_cast<int64_t>(prepared_.eval_test.labels.numel())},
                        {"test_majority_rate", majority_rate(prepared_.eval_test.labels)},
                        {"start_time", started_}, {"end_time", now_utc()}, {"complete", int64_t{1}}});
}

// The last dump's part on disk, then the outputs (rank 0); every rank learns how that went.
void Trainer::finish_run() {
  std::exception_ptr failure;
  if (group_.is_root()) {
    try {
      parts_.drain();  // a run resumed after its last epoch may have queued that epoch's dump
    } catch (...) {
      failure = std::current_exception();
    }
  }
  agree_on_writes(c_.epochs, failure);
  on_root([&] {
    try {
      write_outputs();
    } catch (const std::exception& e) {
      // The parts and the last epoch's checkpoint are on disk: a resume only gathers again.
      throw std::runtime_error(fmt::format("{}; every epoch is trained and dumped: once the cause is fixed (room on the disk), "
                                           "finish the run with: ibn train --resume {}", e.what(), c_.out));
    }
  }, "write metrics.csv and activations.h5");
}

TrainResult Trainer::run() {
  on_root([&] { create_run_directory(); }, "create the run directory");
  started_ = now_utc();
  if (!quiet_) log_ << eval_subset_line(prepared_) << std::flush;
  std::string checkpoint;
  on_root([&] { checkpoint = checkpoint_bytes(); }, "read the checkpoint");
  checkpoint = group_.broadcast_bytes(checkpoint);
  resuming_ = !checkpoint.empty();
  if (resuming_) {
    resume(checkpoint.substr(1));
  } else {
    on_root([&] { start_fresh(); }, "start the run directory");
  }
  on_root([&] { remove_temporaries_of_killed_run(files_); }, "clean the run directory");

  if (!resuming_) {
    std::exception_ptr failure;
    try {
      record_and_dump(0, 0.0, 0.0);
      if (group_.is_root()) parts_.drain();  // the first write also tells early whether the directory takes files
    } catch (...) {
      if (!group_.is_root()) throw;
      failure = std::current_exception();
    }
    agree_on_writes(0, failure);
  } else {
    // A failed write may have stopped the run after this epoch's training and metrics, before
    // its dump was on disk. Only rank 0 knows its parts: every rank takes its answer.
    const bool scheduled = std::binary_search(prepared_.dumps.begin(), prepared_.dumps.end(), checkpoint_epoch_);
    at::Tensor missing = torch::tensor({group_.is_root() && scheduled && !parts_.dumped(checkpoint_epoch_) ? int64_t{1} : int64_t{0}},
                                       torch::kLong);
    group_.broadcast(missing);
    if (missing.item<int64_t>() != 0) {
      std::vector<io::DatasetToWrite> datasets = activations_at(checkpoint_epoch_).datasets;
      if (group_.is_root()) parts_.queue(checkpoint_epoch_, std::move(datasets));
    }
  }
  data::Split& train = prepared_.data.train;
  train.inputs = as_input(train.inputs, prepared_.device, dtype_);
  train.labels = train.labels.to(prepared_.device);
  try {
    train_epochs();
  } catch (const dist::CollectiveError& e) {
    throw std::runtime_error(fmt::format("{}; {}{}", e.what(), checkpoint_note(),
                                         checkpoint_epoch_ >= 0 ? fmt::format(": resume with: ibn train --resume {}", c_.out) : ""));
  }
  finish_run();
  return {c_.out, metrics_, parts_.dumped_epochs(), prepared_.data.sequence, group_.rank()};
}

void Trainer::train_epochs() {
  const auto start = std::chrono::steady_clock::now();
  for (int64_t epoch = first_epoch_; epoch <= c_.epochs; ++epoch) {
    const double lr = scheduled_lr(c_, epoch);
    set_learning_rate(*optimizer_, lr);
    train_epoch(epoch, lr);
    const double elapsed = seconds_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    finish_epoch(epoch, lr, elapsed);
    print_progress(epoch, elapsed);
  }
}

}  // namespace

TrainResult train(const TrainConfig& options, std::ostream& log, const Launch& launch) {
  // Threads first: the data are generated with them (ibsgd12's labels come from a matrix
  // product, whose last bits depend on OpenBLAS's thread count), and a run must be the same
  // run for the same options.
  check_config(options);
  set_compute_threads(options.threads);
  PreparedRun prepared = prepare_run(options);
  check_world(prepared, launch.environment.world_size);
  // One GPU per process: --device cuda (or auto) becomes cuda:LOCAL_RANK, as torchrun users expect.
  if (launch.environment.distributed() && prepared.device.is_cuda()) {
    if (options.device.find(':') != std::string::npos) {
      throw UsageError(fmt::format("--device {} names one GPU for all {} processes: give --device cuda, and each process takes "
                                   "cuda:LOCAL_RANK", options.device, launch.environment.world_size));
    }
    prepared.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(launch.environment.local_rank));
  }
  // Every option is checked before the processes meet: a bad one stops each alike, and none
  // waits for another that has already given up.
  const std::shared_ptr<dist::ProcessGroup> group = dist::ProcessGroup::connect(launch.environment, prepared.device, launch.timeout);
  Trainer trainer(std::move(prepared), *group, log);
  return trainer.run();
}

}  // namespace ibn::train
