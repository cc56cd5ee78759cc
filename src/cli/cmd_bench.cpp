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
#include <thread>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
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

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Median wall time of `runs` calls after one warm-up call (CUDA start-up, allocator caches).
template <typename Body>
double median_seconds(int64_t runs, const c10::Device& device, Body body) {
  body();
  std::vector<double> times;
  for (int64_t r = 0; r < runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    body();
    if (device.is_cuda()) torch::cuda::synchronize();
    times.push_back(seconds_since(start));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
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
  set_compute_threads(peer && threads == 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) : threads);
  const int64_t runs = (*vm)["runs"].as<int64_t>();
  if (runs < 1) throw UsageError("--runs must be at least 1");
  if (peer) {
    const std::string device_name = (*vm)["device"].as<std::string>();
    if (device_name != "auto" && device_name != "cpu") {
      throw UsageError("--peer times the CPU estimators beside the Python peers: --device must be cpu (or auto)");
    }
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

// The MLP step in PyTorch from Python, at ibn's thread count, and ibn's rate over it.
void print_python_peer(int64_t steps, double ibn_rate) {
  const io::TemporaryDirectory scratch("ibn_bench_train_peer_");
  const std::string log = scratch.path() + "/peer.log";
  const std::string script = std::string(IBN_SOURCE_DIR) + "/scripts/train_peer.py";
  const int status = io::run_program({io::python3(), script, "--steps", std::to_string(steps), "--threads",
                                      std::to_string(torch::get_num_threads())}, log);
  std::ifstream in(log);
  std::string line, last;
  double rate = -1;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    last = line;
    if (line.rfind("mlp steps/s ", 0) == 0) rate = std::strtod(line.c_str() + 12, nullptr);
  }
  if (status != 0 || !(rate > 0)) {
    std::cout << fmt::format("  PyTorch from Python: not timed: {} (the peer is {}, run by {} with Debian's python3-torch: "
                             "scripts/setup.sh --peers)\n", last.empty() ? "no output" : last, script, io::python3());
    return;
  }
  std::cout << fmt::format("  the same MLP step in PyTorch from Python: {:.1f} steps/s; ibn / Python = {:.2f}x\n", rate,
                           ibn_rate / rate) << std::flush;
}

// Steps per second of each model at a fixed small configuration, and the cost of dumping
// activations: the same training run with and without the store.
int bench_train(const std::vector<std::string>& args) {
  CommandOptions cmd("bench", "ibn bench train [--steps N] [--device D] [--peer]",
                     "Training steps per second (Adam, batch 64) of each model on its usual data, and\n"
                     "the activation-dump overhead: the same ibsgd12 run (100 epochs) without dumps and\n"
                     "with the default schedule (log:20, every layer, all 4096 samples).\n\n"
                     "--peer: also the same MLP step written in PyTorch from Python (scripts/train_peer.py,\n"
                     "Debian's python3-torch), timed in the same run at the same thread count, and the ratio.");
  cmd.options.add_options()
      ("steps", po::value<int64_t>()->default_value(30), "timed steps per model (after 5 warm-up steps)")
      ("device", po::value<std::string>()->default_value("auto"), "cpu, cuda, cuda:N or auto")
      ("threads", po::value<int>()->default_value(0), "CPU threads for LibTorch (0: its default)")
      ("models", po::value<std::string>()->default_value("mlp,resnet,vit,gpt,llama"),
       "which models to time (when given, the dump overhead is not measured)")
      ("peer", po::bool_switch(), "time the MLP step in PyTorch from Python beside ibn's (CPU)");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  const auto vm = cmd.parse(rest);
  if (!vm) return 0;
  const c10::Device device = resolve_device((*vm)["device"].as<std::string>());
  set_compute_threads((*vm)["threads"].as<int>());
  const int64_t steps = (*vm)["steps"].as<int64_t>();
  const bool peer = (*vm)["peer"].as<bool>();
  if (steps < 1) throw UsageError("--steps must be at least 1");
  if (peer && !device.is_cpu()) throw UsageError("--peer compares the CPU step with PyTorch's on the CPU: add --device cpu");
  std::cout << fmt::format("ibn bench train on {} ({} CPU threads), batch 64, Adam\n", device.str(), torch::get_num_threads());
  std::cout << fmt::format("{:<42} {:<34} {:>9} {:>11}\n", "model", "data", "steps/s", "samples/s");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"mlp", "ibsgd12"},
      {"resnet:widths=16-32-64:blocks=2", "fashion-mnist:train_n=2000:test_n=100"},
      {"vit:patch=4:dim=64:depth=2:heads=4", "fashion-mnist:train_n=2000:test_n=100"},
      {"gpt:dim=64:depth=2:heads=4", "text:max_bytes=400000:context=64"},
      {"llama:dim=64:depth=2:heads=4", "text:max_bytes=400000:context=64"},
  };
  const std::vector<std::string> chosen = split((*vm)["models"].as<std::string>(), ',');
  if (peer && std::find(chosen.begin(), chosen.end(), "mlp") == chosen.end()) {
    throw UsageError("--peer times the mlp step; --models must include mlp");
  }
  for (const std::string& name : chosen) {
    if (std::none_of(cases.begin(), cases.end(), [&](const auto& c) { return c.first.substr(0, c.first.find(':')) == name; })) {
      throw UsageError(fmt::format("--models: no benchmark for '{}'; expected some of: mlp, resnet, vit, gpt, llama", name));
    }
  }
  for (const auto& [model_spec, data_spec] : cases) {
    const std::string model_name = model_spec.substr(0, model_spec.find(':'));
    if (std::find(chosen.begin(), chosen.end(), model_name) == chosen.end()) continue;
    const data::ClassificationData data = data::load_dataset(data_spec, 0);
    torch::manual_seed(0);
    auto model = models::make_model(model_spec, models::ModelContext(data.sample_shape, data.classes, ""));
    model->to(device);
    torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));
    const auto inputs = data.train.inputs.slice(0, 0, 64).to(device);
    const auto labels = data.train.labels.slice(0, 0, 64).to(device);
    const auto step = [&] {
      const auto logits = model->forward(inputs);
      const auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}));
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
    };
    for (int i = 0; i < 5; ++i) step();
    if (device.is_cuda()) torch::cuda::synchronize();
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) step();
    if (device.is_cuda()) torch::cuda::synchronize();
    const double rate = static_cast<double>(steps) / seconds_since(start);
    std::cout << fmt::format("{:<42} {:<34} {:>9.1f} {:>11.0f}\n", model->spec(), data_spec, rate, rate * 64) << std::flush;
    if (peer && model_spec == "mlp") print_python_peer(steps, rate);
  }

  if (!(*vm)["models"].defaulted()) return 0;  // a chosen subset: the steps only
  const io::TemporaryDirectory scratch("ibn_bench_train_");
  const std::string& dir = scratch.path();
  const auto timed_run = [&](const std::string& dumps) {
    train::TrainConfig c;
    c.epochs = 100;
    c.batch = 64;
    c.device = device.str();
    c.dump_epochs = dumps;
    c.progress = "quiet";
    c.checkpoint_every = 0;
    c.out = dir + "/" + (dumps == "none" ? "plain" : "dumped");
    std::ostringstream log;
    const auto start = std::chrono::steady_clock::now();
    train::train(c, log);
    return seconds_since(start);
  };
  // Alternating runs, medians: single runs of a few seconds drift with the machine's load.
  std::vector<double> plain, dumped;
  for (int i = 0; i < 3; ++i) {
    plain.push_back(timed_run("none"));
    dumped.push_back(timed_run("log:20"));
  }
  std::sort(plain.begin(), plain.end());
  std::sort(dumped.begin(), dumped.end());
  std::cout << fmt::format("dump overhead (mlp on ibsgd12, 100 epochs, median of 3): {:.2f} s without, {:.2f} s with "
                           "log:20 dumps: {:+.1f} %\n", plain[1], dumped[1], 100.0 * (dumped[1] - plain[1]) / plain[1]);
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
