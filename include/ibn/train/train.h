#pragma once
// Training a model with any normalizer on a classification dataset, with an activation store
// (docs in README.md, "Run directory"). Scope so far: in-memory classification data (ibsgd12,
// gaussian-mixture), the mlp model, SGD/Adam/AdamW with constant/cosine/warmup schedules.
#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ibn/dist/process_group.h"

namespace ibn::train {

struct TrainConfig {
  std::string data = "ibsgd12";
  std::string model = "mlp";
  std::string norm;                // every normalization site; "none"; empty: the model's default
  std::string optimizer = "adam";  // sgd, adam, adamw
  double lr = 1e-3;
  double weight_decay = 0.0;
  double momentum = 0.9;            // sgd
  std::string schedule = "constant";  // constant or cosine (decay to 0 after the warmup)
  int64_t warmup_epochs = 0;          // linear warmup from 0 over these epochs
  int64_t epochs = 100;
  int64_t steps_per_epoch = 0;      // 0: one pass over the training set; else this many random batches
  int64_t batch = 256;
  uint64_t seed = 0;
  std::string device = "cpu";
  int threads = 0;                  // 0: LibTorch's default
  std::string out;                  // run directory (created)
  std::string dump_epochs = "log:20";  // none, all, every:K, log:K, list:E,E,...
  std::string dump_layers = "all";      // all, or tap names: fc1,fc2
  // Evaluation (each epoch's metrics) and dumps see a fixed seeded subset of at most this many
  // samples, the same every epoch (half from each split when both are larger); "all": every one.
  std::string eval_samples = "10000";
  // > 0: hold out this fraction of the training samples (seeded by `seed`) as a validation
  // split, and evaluate on it in place of the test split, which the run then never sees: how a
  // sweep's [tune] section chooses learning rates without looking at the test set.
  double validation = 0.0;
  std::string dump_samples = "all";     // all (the evaluation samples), or subset:N of them (seeded)
  std::string dump_maps = "pool";       // feature maps and token sequences: pool (mean) or flatten
  std::string dump_dtype = "float32";   // float32, or float16 (half the disk, ~3 significant digits)
  std::string norm_attn, norm_mlp, norm_final;  // transformer sites; empty: `norm`
  std::string progress = "auto";        // auto (bar on a terminal), lines, quiet
  int64_t checkpoint_every = 10;        // epochs between checkpoints (RUN/checkpoint.pt); 0: only at the end
  bool resume = false;                  // continue from RUN/checkpoint.pt if there is one
  // Data-parallel runs: batch-area normalizers (BatchNorm, IBNorm with area=batch) take their
  // statistics over the whole batch across processes (SyncBatchNorm), not each process's share.
  bool sync_bn = false;
  std::string dtype = "float32";        // the model's parameters and arithmetic: float32 or float64
};

// How a run spreads over processes (README, "Data-parallel training"): the torchrun variables
// of this process, and how long a collective may wait for the others before the run stops.
struct Launch {
  dist::LaunchEnvironment environment;  // world_size 1: one process
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};
};

// Losses are mean cross-entropies in nats per prediction (per byte for text; bits = nats/ln 2).
// With `validation` > 0 the test_* fields are the validation split's.
struct EpochMetrics {
  int64_t epoch = 0;
  double train_loss = 0, train_accuracy = 0, test_loss = 0, test_accuracy = 0, lr = 0, seconds = 0;
};

struct TrainResult {
  std::string run_dir;
  std::vector<EpochMetrics> metrics;  // epoch 0 is the untrained model
  std::vector<int64_t> dumped_epochs;
  bool sequence = false;  // text: losses are per byte
  int rank = 0;           // this process's rank in a data-parallel run (0 writes the outputs)
};

// The epochs to dump for a spec and a run of `epochs` epochs (0 = initialization); throws
// ibn::UsageError for a malformed spec.
std::vector<int64_t> dump_schedule(const std::string& spec, int64_t epochs);

// Checks every option as `train` would before it writes anything (the data is loaded and the
// model built, so specs and layer names are checked too); throws what `train` would. Returns
// what the run's store will hold.
struct RunPlan {
  std::vector<std::string> layers;  // the taps the store will hold
  std::vector<std::string> chain;   // the model's representation chain (analysis::AnalyzeConfig::chain)
  std::vector<int64_t> dumps;       // the epochs it will hold
};
// With `world_size` > 1, also what a data-parallel run of that many processes needs (the batch
// and the dumped samples split evenly enough).
RunPlan check_options(const TrainConfig& config, int world_size = 1);

// Throws ibn::UsageError for bad options (checked before any work) and std::runtime_error for
// failures; writes RUN/config.ini, RUN/checkpoint.pt (every checkpoint_every epochs and at the
// end), each dumped epoch as RUN/activations.parts/epoch-E.h5 (on a background thread), then
// RUN/metrics.csv and RUN/activations.h5 (the parts gathered), each file whole or not at all.
// A run killed at any point leaves its last checkpoint and the parts written so far; with
// `resume` it continues from there and ends bit for bit as the uninterrupted run would on the
// CPU. A failed write (disk full) throws std::runtime_error after checkpointing what it can.
//
// With `launch` naming more than one process, each process runs this with the same options:
// every batch is split over the ranks in rank order, gradients are summed across them before
// each step (the global batch's mean loss, as one process would compute it), evaluation and
// dumps are split the same way and gathered, and only rank 0 writes files. Throws
// ibn::UsageError when the world size does not divide --batch, and std::runtime_error when
// another process stops (every rank then stops; rank 0's last checkpoint stays).
TrainResult train(const TrainConfig& config, std::ostream& log, const Launch& launch = {});

// RUN/config.ini as key -> value (the resolved options `train` wrote); empty when absent.
std::map<std::string, std::string> read_run_config(const std::string& run_dir);

// Where a run directory stands: finished (a complete RUN/activations.h5 and nothing pending), or
// stopped before its end (killed, or a failed write), which `ibn train --resume RUN` continues.
struct RunStatus {
  // damaged: activations.h5 is there with nothing pending, but cannot be read.
  enum class State { not_a_run, complete, incomplete, damaged };
  State state = State::not_a_run;
  int64_t epochs = 0;            // the run's planned epochs (from RUN/config.ini)
  int64_t checkpoint_epoch = -1; // the last checkpoint's epoch; -1: none
  std::string summary;           // one line for people, naming how to resume when that applies
};
RunStatus run_status(const std::string& run_dir);

// The rate of the most frequent class among `labels` (any shape: text labels are per token),
// what a constant classifier reaches: the baseline of a report's `chance` flag. NaN when empty.
double majority_rate(const at::Tensor& labels);

}  // namespace ibn::train
