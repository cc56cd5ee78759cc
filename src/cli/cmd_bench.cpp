// ibn bench: benchmarks that print numbers (speed targets live here, never in timed tests).
//   ibn bench mi   wall time per MI estimator over N × d on the current device
#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/mi/entropy.h"
#include "ibn/mi/estimator.h"

namespace ibn::cli {
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
  CommandOptions cmd("bench", "ibn bench mi [--n N,N,...] [--d D,D,...] [--estimator SPEC]... [--device D] [--csv FILE]",
                     "Median wall time of each MI estimator on Gaussian T [N, d] against 10 labels Y\n"
                     "(the I(T;Y) of an information plane), and of one KDE mixture entropy H(T) alone\n"
                     "(the unit the plain-PyTorch anchors time). Defaults: the full grid N in\n"
                     "{5000, 20000, 200000} x d in {16, 256, 1024} on CUDA; N in {5000, 20000} x d in\n"
                     "{16, 256} on the CPU (larger sizes on request).");
  cmd.options.add_options()
      ("n", po::value<std::string>()->value_name("N,N,..."), "sample counts")
      ("d", po::value<std::string>()->value_name("D,D,..."), "dimensions of T")
      ("estimator", po::value<std::vector<std::string>>()->composing()->value_name("SPEC"),
       "estimator specs (default: binning, kde, ksg)")
      ("runs", po::value<int64_t>()->default_value(3), "timed runs per cell (median reported)")
      ("device", po::value<std::string>()->default_value("auto"), "cpu, cuda, cuda:N or auto")
      ("threads", po::value<int>()->default_value(0), "CPU threads for LibTorch (0: its default)")
      ("csv", po::value<std::string>()->value_name("FILE"), "also write the table as CSV");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  const auto vm = cmd.parse(rest);
  if (!vm) return 0;
  const c10::Device device = resolve_device((*vm)["device"].as<std::string>());
  if ((*vm)["threads"].as<int>() > 0) torch::set_num_threads((*vm)["threads"].as<int>());
  const std::vector<int64_t> ns = parse_shape("n", vm->count("n") ? (*vm)["n"].as<std::string>()
                                                                  : device.is_cuda() ? "5000,20000,200000" : "5000,20000");
  const std::vector<int64_t> ds = parse_shape("d", vm->count("d") ? (*vm)["d"].as<std::string>()
                                                                  : device.is_cuda() ? "16,256,1024" : "16,256");
  const std::vector<std::string> specs = vm->count("estimator") ? (*vm)["estimator"].as<std::vector<std::string>>()
                                                                : std::vector<std::string>{"binning", "kde", "ksg"};
  std::vector<std::unique_ptr<mi::Estimator>> estimators;
  for (const auto& spec : specs) estimators.push_back(mi::make_estimator(spec));
  const int64_t runs = (*vm)["runs"].as<int64_t>();
  if (runs < 1) throw UsageError("--runs must be at least 1");

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

}  // namespace

int run_bench(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "usage: ibn bench <target> [options]\n\nTargets:\n  mi    wall time of the MI estimators over N x d\n"
                 "\n'ibn bench <target> --help' lists a target's options.\n";
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "mi") return bench_mi(args);
  throw UsageError(fmt::format("unknown benchmark '{}'; expected one of: mi (see 'ibn bench --help')", args[0]));
}

}  // namespace ibn::cli
