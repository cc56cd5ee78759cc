// ibn train: train a model with any normalizer and dump its activations to HDF5.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <cstdlib>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "command.h"
#include "ibn/io/ini.h"
#include "ibn/error.h"
#include "ibn/data/dataset.h"
#include "ibn/dist/launcher.h"
#include "ibn/dist/process_group.h"
#include "ibn/models/model.h"
#include "ibn/spec_string.h"
#include "ibn/train/run_directory.h"
#include "ibn/train/train.h"

namespace ibn::cli {

namespace {

std::string train_description() {
  std::string text =
      "Trains a classifier and writes RUN/config.ini, RUN/metrics.csv and RUN/activations.h5 (the\n"
      "outputs of the chosen layers at the chosen epochs; schema in README.md). Options can come\n"
      "from an .ini file (--config experiments/X.ini, keys at the top or under [train]).\n\n"
      "  ibn train --data ibsgd12 --model mlp --norm ibnorm-t:lambda=1 --epochs 300 --out runs/t1\n\nDatasets:\n";
  for (const auto& d : data::datasets()) text += fmt::format("  {:<17} {}\n                    keys: {}\n", d.name, d.summary, d.keys);
  text += "Models:\n";
  for (const auto& m : models::models()) text += fmt::format("  {:<17} {}\n                    keys: {}\n", m.name, m.summary, m.keys);
  return text;
}

}  // namespace

TrainOptions::TrainOptions()
    : cmd("train", "ibn train --out RUN_DIR [--data SPEC] [--model SPEC] [--norm SPEC] [options]", train_description()) {
  train::TrainConfig& c = config;
  cmd.options.add_options()
      ("out", po::value<std::string>(&c.out)->value_name("RUN_DIR"), "run directory (created)")
      ("data", po::value<std::string>(&c.data)->default_value(c.data), "dataset spec")
      ("model", po::value<std::string>(&c.model)->default_value(c.model), "model spec")
      ("norm", po::value<std::string>(&c.norm), "normalizer spec at every site, or none (default: the model's, "
                                                "layernorm; rmsnorm for llama)")
      ("norm-attn", po::value<std::string>(&c.norm_attn), "transformer: the norm before attention (default --norm)")
      ("norm-mlp", po::value<std::string>(&c.norm_mlp), "transformer: the norm before the MLP (default --norm)")
      ("norm-final", po::value<std::string>(&c.norm_final), "transformer: the final norm (default --norm)")
      ("optimizer", po::value<std::string>(&c.optimizer)->default_value(c.optimizer), "sgd, adam or adamw")
      ("lr", po::value<double>(&c.lr)->default_value(c.lr), "learning rate")
      ("weight-decay", po::value<double>(&c.weight_decay)->default_value(c.weight_decay), "weight decay")
      ("momentum", po::value<double>(&c.momentum)->default_value(c.momentum), "SGD momentum")
      ("schedule", po::value<std::string>(&c.schedule)->default_value(c.schedule), "constant or cosine")
      ("warmup-epochs", po::value<int64_t>(&c.warmup_epochs)->default_value(c.warmup_epochs), "linear warmup epochs")
      ("epochs", po::value<int64_t>(&c.epochs)->default_value(c.epochs), "epochs")
      ("steps-per-epoch", po::value<int64_t>(&c.steps_per_epoch)->default_value(c.steps_per_epoch),
       "0: an epoch is one pass over the training set; N: N random batches (for large corpora)")
      ("batch", po::value<int64_t>(&c.batch)->default_value(c.batch), "batch size")
      ("seed", po::value<int64_t>(&seed)->default_value(seed), "seed of split, initialization and batches")
      ("device", po::value<std::string>(&c.device)->default_value(c.device), "cpu, cuda, cuda:N or auto")
      ("threads", po::value<int>(&c.threads)->default_value(c.threads), "CPU threads (0: LibTorch's default)")
      ("eval-samples", po::value<std::string>(&c.eval_samples)->default_value(c.eval_samples),
       "each epoch's metrics and the dumps use a fixed seeded subset of at most N samples (up to half\n"
       "from each split), the same every epoch; all: every sample")
      ("validation", po::value<double>(&c.validation)->default_value(c.validation),
       "F in (0, 1): hold out a seeded fraction F of the training samples and evaluate on it in\n"
       "place of the test split, which is then never used (learning-rate tuning); 0: the test split")
      ("dump-epochs", po::value<std::string>(&c.dump_epochs)->default_value(c.dump_epochs),
       "epochs whose activations are stored: none, all, every:K, log:K, list:E,E,... (0 = before training)")
      ("dump-layers", po::value<std::string>(&c.dump_layers)->default_value(c.dump_layers), "all, or tap names: fc1,fc2")
      ("dump-samples", po::value<std::string>(&c.dump_samples)->default_value(c.dump_samples), "all (the evaluation samples), or subset:N of them")
      ("dump-maps", po::value<std::string>(&c.dump_maps)->default_value(c.dump_maps),
       "feature maps and token sequences: pool (mean over pixels/tokens) or flatten")
      ("dump-dtype", po::value<std::string>(&c.dump_dtype)->default_value(c.dump_dtype),
       "stored activations: float32, or float16 (half the disk)")
      ("progress", po::value<std::string>(&c.progress)->default_value(c.progress),
       "auto (a bar on a terminal, lines otherwise), lines or quiet")
      ("quiet", "same as --progress quiet")
      ("checkpoint-every", po::value<int64_t>(&c.checkpoint_every)->default_value(c.checkpoint_every),
       "epochs between checkpoints (RUN/checkpoint.pt); 0: only at the end")
      ("dtype", po::value<std::string>(&c.dtype)->default_value(c.dtype),
       "the model's parameters and arithmetic: float32, or float64 (slower; data-parallel runs then\n"
       "match one process's to rounding)")
      ("nproc", po::value<int>(&nproc)->default_value(nproc),
       "data-parallel: start N worker processes on this machine, each taking 1/N of every batch\n"
       "(for torchrun or Slurm, launch one ibn train per process instead: README, \"Data-parallel\n"
       "training\"); --batch must be a multiple of N")
      ("sync-bn", po::value<bool>(&c.sync_bn)->implicit_value(true)->default_value(c.sync_bn),
       "data-parallel: batch-area normalizers (batchnorm, ibnorm-*:area=batch) take their statistics\n"
       "over the whole batch across processes, as one process would (SyncBatchNorm)")
      ("dist-timeout", po::value<double>(&dist_timeout)->default_value(dist_timeout),
       "data-parallel: seconds a process waits for the others (to meet, or in a collective) before\n"
       "the run stops with an error")
      ("resume", po::value<std::string>()->value_name("RUN_DIR"),
       "continue a killed run from its last checkpoint, with the options in RUN_DIR/config.ini")
      ("status", po::value<std::string>()->value_name("RUN_DIR"),
       "say whether RUN_DIR finished (exit 0) or stopped early (exit 1, with how to resume it)");
}

train::TrainConfig TrainOptions::resolved(const po::variables_map& vm) {
  train::TrainConfig c = config;
  c.seed = checked_seed("seed", seed);
  if (vm.count("quiet")) c.progress = "quiet";
  return c;
}

// The --nproc workers' OpenMP threads: the cores shared out, at least one each.
int threads_per_worker(int workers) {
  const unsigned cores = std::thread::hardware_concurrency();
  return std::max(1, static_cast<int>(cores) / std::max(1, workers));
}

train::Launch launch_from_environment(const TrainOptions& options) {
  if (!(options.dist_timeout > 0 && options.dist_timeout <= 7 * 24 * 3600)) {
    throw UsageError(fmt::format("--dist-timeout {} must lie in (0, 604800] seconds", options.dist_timeout));
  }
  train::Launch launch;
  launch.environment = dist::read_launch_environment();
  launch.timeout = std::chrono::milliseconds(static_cast<int64_t>(options.dist_timeout * 1000));
  return launch;
}

int run_train(const std::vector<std::string>& args) {
  TrainOptions options;
  CommandOptions& cmd = options.cmd;
  auto vm = cmd.parse(args);
  if (!vm) return 0;
  // The workers of `--nproc` run the same command line (and config file) again: the marker the
  // launcher sets, not the arguments, tells them apart (Boost also accepts `--npr 2`).
  const bool nproc_worker = std::getenv(dist::kLocalWorkerVariable) != nullptr && std::getenv("WORLD_SIZE") != nullptr;
  const int nproc = nproc_worker ? 1 : options.nproc;
  if (nproc < 1 || nproc > 1024) throw UsageError(fmt::format("--nproc {} must lie in [1, 1024]", nproc));
  const train::Launch launch = launch_from_environment(options);
  if (nproc > 1 && launch.environment.world_size > 1) {
    throw UsageError(fmt::format("--nproc {} inside a launch that already set WORLD_SIZE={} (torchrun, srun): use one or the other",
                                 nproc, launch.environment.world_size));
  }
  if (vm->count("status")) {
    const train::RunStatus status = train::run_status((*vm)["status"].as<std::string>());
    if (status.state == train::RunStatus::State::not_a_run) throw UsageError(status.summary);
    std::cout << status.summary << "\n";
    return status.state == train::RunStatus::State::complete ? 0 : 1;
  }
  if (vm->count("resume")) {
    // The run's own options, from its config.ini; only how progress is shown may differ.
    const std::string run = (*vm)["resume"].as<std::string>();
    const train::RunDirectory files{run};
    if (!std::filesystem::exists(files.config())) {
      throw UsageError(fmt::format("--resume '{}': no config.ini there; is it a run directory?", run));
    }
    // A finished run has nothing to resume (its parts are gathered into activations.h5); only
    // one whose config.ini now asks for more epochs goes on to the resume check.
    const train::RunStatus status = train::run_status(run);
    const std::optional<int64_t> planned = parse_integer(train::read_run_config(run)["epochs"]);
    if (status.state == train::RunStatus::State::complete && planned && *planned <= status.checkpoint_epoch) {
      std::cout << fmt::format("{}; nothing to resume\n", status.summary);
      return 0;
    }
    std::vector<std::string> again{"--config", files.config(), "--out", run};
    for (const char* keep : {"progress", "quiet", "dist-timeout"}) {
      if (vm->count(keep) && !(*vm)[keep].defaulted()) {
        again.push_back(std::string("--") + keep);
        if (std::string(keep) == "progress") again.push_back((*vm)[keep].as<std::string>());
        if (std::string(keep) == "dist-timeout") again.push_back(fmt::format("{}", (*vm)[keep].as<double>()));
      }
    }
    // A run from before --eval-samples evaluated every sample.
    const std::vector<io::IniEntry> recorded = io::read_ini_file(files.config());
    if (std::none_of(recorded.begin(), recorded.end(), [](const io::IniEntry& e) { return e.key == "eval-samples"; })) {
      again.insert(again.end(), {"--eval-samples", "all"});
    }
    options.config = train::TrainConfig();
    vm = cmd.parse(again);
    options.config.resume = true;
  }
  const train::TrainConfig config = options.resolved(*vm);
  if (nproc > 1) {
    // Checked here once, not once per worker: options, data, model and the world size.
    train::check_options(config, nproc);
    dist::LocalLaunch workers{nproc, std::vector<std::string>{"train"}, threads_per_worker(nproc)};
    workers.arguments.insert(workers.arguments.end(), args.begin(), args.end());
    return dist::run_local_workers(workers, std::cerr);
  }
  const train::TrainResult result = train::train(config, std::cout, launch);
  if (result.rank != 0) return 0;  // rank 0 reports the run
  const train::EpochMetrics& last = result.metrics.back();
  const char* evaluated = config.validation > 0 ? "validation" : "test";
  std::cout << fmt::format("done: train acc {:.4f}, {} acc {:.4f}, {} loss {:.4f}{} after {} epochs; {} epochs dumped\n",
                           last.train_accuracy, evaluated, last.test_accuracy, evaluated, last.test_loss,
                           result.sequence ? fmt::format(" ({:.4f} bits/byte)", last.test_loss / std::log(2.0)) : "",
                           last.epoch, result.dumped_epochs.size());
  std::cout << result.run_dir << "/activations.h5\n";
  return 0;
}

}  // namespace ibn::cli
