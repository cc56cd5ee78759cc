// ibn bench: benchmarks that print numbers (speed targets live here, never in timed tests).
//   ibn bench mi      wall time per MI estimator over N × d on the current device
//   ibn bench train   training steps/s per model, and the activation-dump overhead
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <iostream>
#include <memory>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "timing.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/hdf5.h"
#include "ibn/io/process.h"
#include "ibn/mi/entropy.h"
#include "ibn/spec_string.h"
#include "ibn/mi/estimator.h"
#include "ibn/data/dataset.h"
#include "ibn/models/model.h"
#include "ibn/train/train.h"

namespace ibn::cli {

int bench_mi_peers(const std::vector<int64_t>& ns, const std::vector<int64_t>& kde_ns, const std::vector<int64_t>& kde_ds,
                   int64_t runs);  // cmd_bench_mi_peer.cpp

namespace {

// The peers run on the CPU: --device must say cpu or auto. `what` names what is compared.
c10::Device cpu_for_peer(const std::string& device_name, const std::string& what) {
  if (device_name != "auto" && device_name != "cpu") {
    throw UsageError(fmt::format("--peer {} on the CPU: --device must be cpu (or auto)", what));
  }
  return c10::Device(c10::kCPU);
}

int bench_mi(const std::vector<std::string>& args) {
  CommandOptions cmd("bench", "ibn bench mi [--n N,N,...] [--d D,D,...] [--estimator SPEC]... [--device D] [--csv FILE] [--peer]",
                     "Median wall time of each MI estimator on Gaussian T [N, d] against 10 labels Y\n"
                     "(the I(T;Y) of an information plane), and of one KDE mixture entropy H(T) alone\n"
                     "(the unit the plain-PyTorch anchors time). Defaults: the full grid N in\n"
                     "{5000, 20000, 200000} x d in {16, 256, 1024} on CUDA; N in {5000, 20000} x d in\n"
                     "{16, 256} on the CPU (larger sizes on request).\n\n"
                     "--peer: instead, KSG (k=3; 1+1 and 4+4 Gaussian pairs, and one feature against 10\n"
                     "labels) and the KDE entropy beside NPEET, scikit-learn and numpy on the same data in the\n"
                     "same run, with the speed-up (N in {5000, 50000} for KSG, {5000, 20000} x d = 256 for KDE;\n"
                     "--n and --d override them). Peers that are missing are named, and ibn still runs.");
  cmd.options.add_options()
      ("n", po::value<std::string>()->value_name("N,N,..."), "sample counts")
      ("d", po::value<std::string>()->value_name("D,D,..."), "dimensions of T")
      ("estimator", po::value<std::vector<std::string>>()->composing()->value_name("SPEC"),
       "estimator specs (default: binning, kde, ksg)")
      ("runs", po::value<int64_t>()->default_value(3), "timed runs per cell (median reported)")
      ("device", po::value<std::string>()->default_value("auto"), "cpu, cuda, cuda:N or auto")
      ("threads", po::value<int>()->default_value(0), "CPU threads for LibTorch (0: its default; with --peer, every core)")
      ("csv", po::value<std::string>()->value_name("FILE"), "also write the table as CSV")
      ("peer", po::bool_switch(), "time NPEET, scikit-learn and numpy beside ibn on the same data (on the CPU; the peers use "
                                  "every core, and so does ibn unless --threads says otherwise)");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  const auto vm = cmd.parse(rest);
  if (!vm) return 0;
  const int threads = (*vm)["threads"].as<int>();
  const bool peer = (*vm)["peer"].as<bool>();
  // Beside the peers, every core: numpy's OpenBLAS uses them all by default, and LibTorch's own
  // default can be 1 (its count of physical cores).
  set_compute_threads(peer && threads == 0 ? every_core() : threads);
  const int64_t runs = (*vm)["runs"].as<int64_t>();
  if (runs < 1) throw UsageError("--runs must be at least 1");
  if (peer) {
    cpu_for_peer((*vm)["device"].as<std::string>(), "times the estimators beside the Python peers");
    const bool sizes = vm->count("n") != 0;
    return bench_mi_peers(parse_shape("n", sizes ? (*vm)["n"].as<std::string>() : "5000,50000"),
                          parse_shape("n", sizes ? (*vm)["n"].as<std::string>() : "5000,20000"),
                          parse_shape("d", vm->count("d") ? (*vm)["d"].as<std::string>() : "256"), runs);
  }
  const c10::Device device = resolve_device((*vm)["device"].as<std::string>());
  const std::vector<int64_t> ns = parse_shape("n", vm->count("n") ? (*vm)["n"].as<std::string>()
                                                                  : device.is_cuda() ? "5000,20000,200000" : "5000,20000");
  const std::vector<int64_t> ds = parse_shape("d", vm->count("d") ? (*vm)["d"].as<std::string>()
                                                                  : device.is_cuda() ? "16,256,1024" : "16,256");
  const std::vector<std::string> specs = vm->count("estimator") ? (*vm)["estimator"].as<std::vector<std::string>>()
                                                                : std::vector<std::string>{"binning", "kde", "ksg"};
  std::vector<std::unique_ptr<mi::Estimator>> estimators;
  for (const auto& spec : specs) estimators.push_back(mi::make_estimator(spec));

  std::cout << fmt::format("ibn bench mi on {} ({} CPU threads), median of {} runs after a warm-up\n", device.str(),
                           torch::get_num_threads(), runs);
  std::cout << fmt::format("{:<44} {:>7} {:>5} {:>11}\n", "estimator", "N", "d", "seconds");
  std::string csv = "estimator,device,n,d,seconds\n";
  const auto report = [&](const std::string& name, int64_t n, int64_t d, double seconds) {
    std::cout << fmt::format("{:<44} {:>7} {:>5} {:>11.4f}\n", name, n, d, seconds) << std::flush;
    csv += fmt::format("\"{}\",{},{},{},{:.6f}\n", name, device.str(), n, d, seconds);
  };
  for (const int64_t n : ns) {
    for (const int64_t d : ds) {
      torch::manual_seed(0);
      const auto options = torch::TensorOptions().device(device);
      const auto labels = torch::randint(0, 10, {n}, options.dtype(torch::kLong));
      const auto t = torch::randn({n, d}, options).add(labels.to(torch::kFloat).unsqueeze(1));
      const mi::Variable tv{t, false}, yv{labels, true};
      report("kde entropy H(T), one bound (var=0.1)", n, d, median_seconds(runs, device, [&] {
               mi::kde_entropy_upper(t, 0.1, mi::default_memory_mb(t));
             }));
      for (const auto& estimator : estimators) {
        report(estimator->spec(), n, d, median_seconds(runs, device, [&] { estimator->estimate(tv, yv); }));
      }
    }
  }
  if (vm->count("csv")) {
    io::write_file_atomically((*vm)["csv"].as<std::string>(), csv);
    std::cout << "wrote " << (*vm)["csv"].as<std::string>() << "\n";
  }
  return 0;
}

// The models `ibn bench train` times, each on its usual data, at a small configuration
// (scripts/train_peer.py holds their Python twins).
struct TrainCase {
  std::string model_spec, data_spec;
  std::string name() const { return model_spec.substr(0, model_spec.find(':')); }
};

const std::vector<TrainCase>& train_cases() {
  static const std::vector<TrainCase> cases = {
      {"mlp", "ibsgd12"},
      {"resnet:widths=16-32-64:blocks=2", "fashion-mnist:train_n=2000:test_n=100"},
      {"vit:patch=4:dim=64:depth=2:heads=4", "fashion-mnist:train_n=2000:test_n=100"},
      {"gpt:dim=64:depth=2:heads=4", "text:max_bytes=400000:context=64"},
      {"llama:dim=64:depth=2:heads=4", "text:max_bytes=400000:context=64"},
  };
  return cases;
}

struct StepRate {
  double steps_per_second = -1;
  int64_t parameters = 0;
};

// A round runs at least `steps` steps and at least this long: 30 steps of the MLP take 20 ms,
// which one hiccup of the machine doubles. The Python peer keeps the same rule.
constexpr double kMinRoundSeconds = 1.0;

// The case's model, its weights drawn from seed 0, on `device`.
std::shared_ptr<models::ModelImpl> seeded_model(const TrainCase& c, const data::ClassificationData& data,
                                                const c10::Device& device) {
  torch::manual_seed(0);
  auto model = models::make_model(c.model_spec, models::ModelContext(data.sample_shape, data.classes, ""));
  model->to(device);
  return model;
}

// One model's training step (Adam, batch 64, on its data's first 64 training samples), ready to
// be timed round by round.
class TrainingStepTimer {
 public:
  TrainingStepTimer(const TrainCase& c, const c10::Device& device)
      : device_(device),
        data_(data::load_dataset(c.data_spec, 0)),
        model_(seeded_model(c, data_, device)),
        optimizer_(model_->parameters(), torch::optim::AdamOptions(1e-3)),
        inputs_(data_.train.inputs.slice(0, 0, 64).to(device)),
        labels_(data_.train.labels.slice(0, 0, 64).to(device)) {
    for (int i = 0; i < 5; ++i) step();  // warm-up
  }

  // Steps/s over at least `steps` steps and kMinRoundSeconds.
  double round(int64_t steps) {
    const auto start = std::chrono::steady_clock::now();
    int64_t done = 0;
    double seconds = 0;
    while (done < steps || seconds < kMinRoundSeconds) {
      step();
      ++done;
      if (device_.is_cuda()) torch::cuda::synchronize();
      seconds = seconds_since(start);
    }
    return static_cast<double>(done) / seconds;
  }

  std::string spec() const { return model_->spec(); }
  int64_t parameters() const {
    int64_t count = 0;
    for (const auto& p : model_->parameters()) count += p.numel();
    return count;
  }

 private:
  void step() {
    const auto logits = model_->forward(inputs_);
    const auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), labels_.reshape({-1}));
    optimizer_.zero_grad();
    loss.backward();
    optimizer_.step();
  }

  c10::Device device_;
  data::ClassificationData data_;
  std::shared_ptr<models::ModelImpl> model_;
  torch::optim::Adam optimizer_;
  at::Tensor inputs_, labels_;
};

// One round of the same steps of one model in PyTorch from Python (scripts/train_peer.py) at
// ibn's thread count. When the peer cannot run, nothing, and `failure` saying why.
std::optional<StepRate> python_peer_round(const std::string& name, int64_t steps, std::string& failure) {
  const io::TemporaryDirectory scratch("ibn_bench_train_peer_");
  const std::string log = scratch.path() + "/peer.log";
  const char* override_script = std::getenv("IBN_TRAIN_PEER_SCRIPT");  // for the tests
  const std::string script = override_script ? override_script : std::string(IBN_SOURCE_DIR) + "/scripts/train_peer.py";
  const int status = io::run_program({io::python3(), script, "--models", name, "--steps", std::to_string(steps), "--rounds", "1",
                                      "--min-seconds", fmt::format("{}", kMinRoundSeconds),
                                      "--threads", std::to_string(torch::get_num_threads())}, log);
  // The line "<model> steps/s <rate> params <count>", wherever it is among warnings on stderr.
  std::ifstream in(log);
  std::string line;
  while (status == 0 && std::getline(in, line)) {
    if (line.rfind(name + " steps/s ", 0) != 0) continue;
    std::istringstream fields(line.substr(name.size() + 9));
    std::string params_word;
    StepRate rate;
    if (fields >> rate.steps_per_second >> params_word >> rate.parameters && params_word == "params" &&
        rate.steps_per_second > 0) {
      return rate;
    }
  }
  const std::string last = io::last_line(log);
  failure = fmt::format("{} (the peer is {}, run by {} with Debian's python3-torch: scripts/setup.sh --peers)",
                        last.empty() ? "no output" : last, script, io::python3());
  return std::nullopt;
}

// Seconds of the same ibsgd12 MLP run (100 epochs) with and without the default dump
// schedule; alternating runs, medians of 3: single runs of a few seconds drift with the load.
void print_dump_overhead(const c10::Device& device) {
  const io::TemporaryDirectory scratch("ibn_bench_train_");
  const auto timed_run = [&](const std::string& dumps) {
    train::TrainConfig c;
    c.epochs = 100;
    c.batch = 64;
    c.device = device.str();
    c.dump_epochs = dumps;
    c.progress = "quiet";
    c.checkpoint_every = 0;
    c.out = scratch.path() + "/" + (dumps == "none" ? "plain" : "dumped");
    std::ostringstream log;
    const auto start = std::chrono::steady_clock::now();
    train::train(c, log);
    return seconds_since(start);
  };
  std::vector<double> plain, dumped;
  for (int i = 0; i < 3; ++i) {
    plain.push_back(timed_run("none"));
    dumped.push_back(timed_run("log:20"));
  }
  const double without = median(plain), with = median(dumped);
  std::cout << fmt::format("dump overhead (mlp on ibsgd12, 100 epochs, median of 3): {:.2f} s without, {:.2f} s with "
                           "log:20 dumps: {:+.1f} %\n", without, with, 100.0 * (with - without) / without);
}

std::vector<std::string> chosen_models(const std::string& list) {
  const std::vector<std::string> chosen = split(list, ',');
  for (const std::string& name : chosen) {
    if (std::none_of(train_cases().begin(), train_cases().end(), [&](const TrainCase& c) { return c.name() == name; })) {
      throw UsageError(fmt::format("--models: no benchmark for '{}'; expected some of: mlp, resnet, vit, gpt, llama", name));
    }
  }
  return chosen;
}

// Data-parallel scaling (--nproc): the same run of `ibn train` (global batch 64, no dumps,
// evaluation on 2 samples) by 1, 2, ... worker processes of `threads` threads each, timed by
// the run itself: its training seconds after the first epoch (start-up and the rendezvous
// excluded) over the steps they took. Efficiency: steps/s over N times the 1-process rate.
struct ScalingRun {
  int processes = 1;
  double steps_per_second = 0;
};

ScalingRun time_data_parallel_run(const TrainCase& c, int processes, int threads, int64_t steps,
                                  const io::TemporaryDirectory& scratch) {
  constexpr int64_t kEpochs = 4;
  const std::string run = fmt::format("{}/{}-{}", scratch.path(), c.name(), processes);
  const std::string log = run + ".log";
  const int64_t steps_per_epoch = std::max<int64_t>(1, steps / (kEpochs - 1));
  std::vector<std::string> argv{"/proc/self/exe", "train", "--data", c.data_spec, "--model", c.model_spec, "--batch", "64",
                                "--epochs", std::to_string(kEpochs), "--steps-per-epoch", std::to_string(steps_per_epoch),
                                "--dump-epochs", "none", "--eval-samples", "2", "--checkpoint-every", "0",
                                "--threads", std::to_string(threads), "--progress", "quiet", "--out", run};
  if (processes > 1) argv.insert(argv.end(), {"--nproc", std::to_string(processes)});
  if (io::run_program(argv, log) != 0) {
    throw std::runtime_error(fmt::format("ibn train --nproc {} for {} failed: {}", processes, c.name(), io::last_line(log)));
  }
  const std::vector<double> seconds = io::read_doubles(run + "/activations.h5", "/metrics/seconds");
  const double timed = seconds.back() - seconds.at(1);
  return {processes, static_cast<double>((kEpochs - 1) * steps_per_epoch) / std::max(timed, 1e-9)};
}

std::vector<int> process_counts(const std::string& list) {
  std::vector<int> counts;
  for (const std::string& word : split(list, ',')) {
    const std::optional<int64_t> n = parse_integer(word);
    if (!n || *n < 1 || *n > 64) throw UsageError(fmt::format("--nproc '{}': each count must be an integer in [1, 64]", list));
    counts.push_back(static_cast<int>(*n));
  }
  if (counts.empty() || counts.front() != 1) {
    throw UsageError(fmt::format("--nproc '{}' must start with 1: the efficiencies are relative to one process", list));
  }
  return counts;
}

int bench_data_parallel(const std::vector<int>& counts, const std::vector<std::string>& chosen, int threads, int64_t steps,
                        int64_t rounds) {
  const io::TemporaryDirectory scratch("ibn_bench_parallel_");
  const unsigned cores = std::thread::hardware_concurrency();
  std::cout << fmt::format("ibn bench train --nproc: data-parallel ibn train (Gloo over loopback), global batch 64 split over "
                           "the processes, {} thread(s) each, {} cores on this machine; median of {} runs of {} timed steps\n",
                           threads, cores, rounds, steps);
  std::cout << fmt::format("{:<8} {:>9} {:>14} {:>9} {:>11}\n", "model", "processes", "threads in all", "steps/s", "efficiency");
  for (const TrainCase& c : train_cases()) {
    if (std::find(chosen.begin(), chosen.end(), c.name()) == chosen.end()) continue;
    double single = 0;
    for (int processes : counts) {
      std::vector<double> rates;
      for (int64_t r = 0; r < rounds; ++r) rates.push_back(time_data_parallel_run(c, processes, threads, steps, scratch).steps_per_second);
      const double rate = median(rates);
      if (processes == 1) single = rate;
      std::cout << fmt::format("{:<8} {:>9} {:>14} {:>9.1f} {:>10.0f}%{}\n", c.name(), processes, processes * threads, rate,
                               100.0 * rate / (processes * single),
                               static_cast<unsigned>(processes * threads) > cores ? "  (more threads than cores)" : "")
                << std::flush;
    }
  }
  return 0;
}

// Steps per second of each model at a fixed small configuration, and the cost of dumping
// activations: the same training run with and without the store.
int bench_train(const std::vector<std::string>& args) {
  CommandOptions cmd("bench", "ibn bench train [--steps N] [--rounds R] [--models LIST] [--device D] [--peer | --nproc 1,N,...]",
                     "Training steps per second (Adam, batch 64) of each model on its usual data: the median\n"
                     "of R rounds (each at least N steps and 1 s) after 5 warm-up steps. With every model (the default), also the\n"
                     "activation-dump overhead: the same ibsgd12 run (100 epochs) without dumps and with the\n"
                     "default schedule (log:20, every layer, all 4096 samples).\n\n"
                     "--peer: also the same steps in PyTorch from Python (scripts/train_peer.py, Debian's\n"
                     "python3-torch: each model's twin, with the normalizers' sequence of ops), in rounds that\n"
                     "alternate with ibn's, at the same thread settings (LibTorch at --threads, OpenBLAS at one)\n"
                     "and allocator setting, and the ratio. The twins' parameter counts are checked against\n"
                     "ibn's models.");
  cmd.options.add_options()
      ("steps", po::value<int64_t>()->default_value(30), "timed steps per round, at least (a round also lasts at least 1 s)")
      ("rounds", po::value<int64_t>()->default_value(3), "timed rounds per model (median reported)")
      ("device", po::value<std::string>()->default_value("auto"), "cpu, cuda, cuda:N or auto")
      ("threads", po::value<int>()->default_value(0), "CPU threads for LibTorch (0: its default; OpenBLAS keeps to one)")
      ("models", po::value<std::string>()->default_value("mlp,resnet,vit,gpt,llama"),
       "which models to time (when given, the dump overhead is not measured)")
      ("peer", po::bool_switch(), "time the same steps in PyTorch from Python beside ibn's (on the CPU)")
      ("nproc", po::value<std::string>()->value_name("1,N,..."),
       "data-parallel scaling instead: the same ibn train run by 1, N, ... worker processes (--nproc), each\n"
       "with --threads threads (default here 1), on --models (default here mlp): steps/s and efficiency");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  const auto vm = cmd.parse(rest);
  if (!vm) return 0;
  const int64_t steps = (*vm)["steps"].as<int64_t>();
  const int64_t rounds = (*vm)["rounds"].as<int64_t>();
  const bool peer = (*vm)["peer"].as<bool>();
  if (steps < 1) throw UsageError("--steps must be at least 1");
  if (rounds < 1) throw UsageError("--rounds must be at least 1");
  if (vm->count("nproc")) {
    if (peer) throw UsageError("--nproc and --peer time different things: give one of them");
    const std::string models = (*vm)["models"].defaulted() ? "mlp" : (*vm)["models"].as<std::string>();
    const int threads = (*vm)["threads"].defaulted() ? 1 : (*vm)["threads"].as<int>();
    if (threads < 1) throw UsageError("--threads must be at least 1 with --nproc (each process's threads)");
    return bench_data_parallel(process_counts((*vm)["nproc"].as<std::string>()), chosen_models(models), threads,
                               std::max<int64_t>(steps, 30), rounds);
  }
  const std::string device_name = (*vm)["device"].as<std::string>();
  const c10::Device device = peer ? cpu_for_peer(device_name, "compares the training step with PyTorch's")
                                  : resolve_device(device_name);
  set_compute_threads((*vm)["threads"].as<int>());
  const std::vector<std::string> chosen = chosen_models((*vm)["models"].as<std::string>());

  std::cout << fmt::format("ibn bench train on {} ({} CPU threads), batch 64, Adam, median of {} rounds of at least {} steps "
                           "and {} s\n", device.str(), torch::get_num_threads(), rounds, steps, kMinRoundSeconds) << std::flush;
  std::cout << fmt::format("{:<42} {:<38} {:>9} {:>10}", "model", "data", "steps/s", "samples/s");
  if (peer) std::cout << fmt::format(" {:>10} {:>9}", "Python", "ibn/Py");
  std::cout << "\n";
  std::string peer_failure;  // once the peer has failed, it is not tried again
  for (const TrainCase& c : train_cases()) {
    if (std::find(chosen.begin(), chosen.end(), c.name()) == chosen.end()) continue;
    // Rounds alternate, ibn's then Python's, so that both see the machine in the same state:
    // its speed drifts by 10-20 % within minutes.
    TrainingStepTimer timer(c, device);
    std::vector<double> rates, twin_rates;
    std::optional<StepRate> twin;
    for (int64_t r = 0; r < rounds; ++r) {
      rates.push_back(timer.round(steps));
      if (!peer || !peer_failure.empty()) continue;
      twin = python_peer_round(c.name(), steps, peer_failure);
      if (twin) twin_rates.push_back(twin->steps_per_second);
    }
    const double rate = median(rates);
    std::cout << fmt::format("{:<42} {:<38} {:>9.1f} {:>10.0f}", timer.spec(), c.data_spec, rate, rate * 64);
    if (peer_failure.empty() && !twin_rates.empty()) {
      const double twin_rate = median(twin_rates);
      std::cout << fmt::format(" {:>10.1f} {:>8.2f}x", twin_rate, rate / twin_rate);
      // A twin of another shape times other work: its ratio would mean nothing.
      if (twin->parameters != timer.parameters()) {
        std::cout << fmt::format("  (not comparable: the twin has {} parameters, ibn's model {})", twin->parameters,
                                 timer.parameters());
      }
    } else if (peer) {
      std::cout << fmt::format(" {:>10} {:>9}", "-", "-");
    }
    std::cout << "\n" << std::flush;
  }
  if (!peer_failure.empty()) std::cout << "PyTorch from Python: not timed: " << peer_failure << "\n";
  if ((*vm)["models"].defaulted()) print_dump_overhead(device);
  return 0;
}

}  // namespace

int bench_norm(const std::vector<std::string>& args);  // cmd_bench_norm.cpp


int run_bench(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "usage: ibn bench <target> [options]\n\nTargets:\n  mi      wall time of the MI estimators over N x d\n"
                 "  train   training steps per second per model, and the activation-dump overhead\n"
                 "  norm    fused CUDA normalizers against a copy, ATen's LayerNorm and the ATen path\n"
                 "\n'ibn bench <target> --help' lists a target's options.\n";
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "mi") return bench_mi(args);
  if (args[0] == "train") return bench_train(args);
  if (args[0] == "norm") return bench_norm(args);
  throw UsageError(fmt::format("unknown benchmark '{}'; expected one of: mi, train, norm (see 'ibn bench --help')", args[0]));
}

}  // namespace ibn::cli
