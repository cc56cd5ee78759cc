// ibn mi: estimate I(A;B) between two HDF5 datasets, or on a built-in task with known truth.
#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/hdf5.h"
#include "ibn/mi/estimator.h"
#include "ibn/mi/transform.h"
#include "ibn/mi/tasks.h"

namespace ibn::cli {
namespace {

struct Row {
  mi::Estimate estimate;
  double seconds = 0;
};

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<int>(c));
      continue;
    }
    out += c;
  }
  return out + "\"";
}

// JSON has no NaN or Infinity: a value that is not finite is written as null.
std::string json_number(std::optional<double> v) { return v && std::isfinite(*v) ? fmt::format("{:.10g}", *v) : "null"; }

std::string help_text() {
  std::string text =
      "Estimates the mutual information I(A;B) of two datasets of one HDF5 file (rows are\n"
      "samples; integer datasets are discrete, float datasets continuous, unless --discrete\n"
      "says otherwise), or of a built-in task with known truth, printing estimate, truth and\n"
      "error so an estimator can be calibrated before it is trusted.\n\n"
      "  ibn mi --input run.h5 --a /data/inputs --b /epochs/10/layer2 --estimator kde:var=0.1\n"
      "  ibn mi --task gaussian:dx=5,dy=5,rho=0.8 --n 5000 --estimator ksg --estimator kde:mode=joint\n\nEstimators:\n";
  for (const auto& e : mi::estimators()) text += fmt::format("  {:<8} {}\n           keys: {}\n", e.name, e.summary, e.keys);
  text += "\nTransforms (every estimator takes transform=NAME; applied to the continuous sides first, each an\n"
          "invertible map of each coordinate alone, so the mutual information itself is unchanged):\n";
  for (const auto& t : mi::transforms()) text += fmt::format("  {:<8} {}\n", t.name, t.summary);
  text += "\nTasks:\n";
  std::string tasks = mi::task_help();
  size_t start = 0;
  while (start < tasks.size()) {
    const size_t end = tasks.find('\n', start);
    text += "  " + tasks.substr(start, end - start) + "\n";
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return text;
}

}  // namespace

int run_mi(const std::vector<std::string>& args) {
  CommandOptions cmd("mi", "ibn mi (--input FILE.h5 --a DATASET --b DATASET | --task SPEC [--n N]) [--estimator SPEC]... [--out FILE.json|.csv]",
                     help_text());
  cmd.options.add_options()
      ("input", po::value<std::string>()->value_name("FILE.h5"), "HDF5 file holding A and B")
      ("a", po::value<std::string>()->value_name("DATASET"), "dataset path of A, e.g. /data/inputs")
      ("b", po::value<std::string>()->value_name("DATASET"), "dataset path of B, e.g. /data/labels")
      ("list", "list the datasets of --input and exit")
      ("task", po::value<std::string>()->value_name("SPEC"), "a built-in task with known I (see above)")
      ("n", po::value<int64_t>()->default_value(5000), "samples drawn from --task")
      ("seed", po::value<int64_t>()->default_value(0), "seed of the task's samples")
      ("estimator", po::value<std::vector<std::string>>()->composing()->value_name("SPEC"),
       "estimator spec, repeatable (default: binning, kde, ksg)")
      ("discrete", po::value<std::string>()->default_value("auto"), "auto (integers), a, b, both or none")
      ("units", po::value<std::string>()->default_value("nats"), "nats or bits")
      ("device", po::value<std::string>()->default_value("cpu"), "cpu, cuda, cuda:N or auto")
      ("threads", po::value<int>()->default_value(0), "CPU threads (0: every core)")
      ("out", po::value<std::string>()->value_name("FILE"), "also write the results as .json or .csv");
  const auto parsed = cmd.parse(args);
  if (!parsed) return 0;
  const po::variables_map& vm = *parsed;

  // Everything the user typed is checked before any work is done.
  const int threads = vm["threads"].as<int>();
  set_compute_threads(threads == 0 ? every_core() : threads);
  const std::string units = vm["units"].as<std::string>();
  if (units != "nats" && units != "bits") throw UsageError(fmt::format("--units '{}' must be nats or bits", units));
  const double scale = units == "bits" ? 1.0 / mi::kNatsPerBit : 1.0;
  const std::string discrete = vm["discrete"].as<std::string>();
  if (discrete != "auto" && discrete != "a" && discrete != "b" && discrete != "both" && discrete != "none") {
    throw UsageError(fmt::format("--discrete '{}' must be auto, a, b, both or none", discrete));
  }
  std::string out_path, out_format;
  if (vm.count("out")) {
    out_path = vm["out"].as<std::string>();
    const size_t dot = out_path.rfind('.');
    out_format = dot == std::string::npos ? "" : out_path.substr(dot + 1);
    if (out_format != "json" && out_format != "csv") {
      throw UsageError(fmt::format("--out '{}' must end in .json or .csv", out_path));
    }
  }
  const std::vector<std::string> specs = vm.count("estimator") ? vm["estimator"].as<std::vector<std::string>>()
                                                               : std::vector<std::string>{"binning", "kde", "ksg"};
  std::vector<std::unique_ptr<mi::Estimator>> estimators;
  for (const std::string& spec : specs) estimators.push_back(mi::make_estimator(spec));
  const bool from_file = vm.count("input") != 0;
  if (from_file == (vm.count("task") != 0)) throw UsageError("ibn mi: give either --input (with --a and --b) or --task");
  if (vm.count("list")) {
    if (!from_file) throw UsageError("--list needs --input");
    for (const std::string& name : io::list_datasets(vm["input"].as<std::string>())) std::cout << name << "\n";
    return 0;
  }
  if (from_file && (!vm.count("a") || !vm.count("b"))) throw UsageError("--input needs --a and --b (dataset paths)");
  const c10::Device device = resolve_device(vm["device"].as<std::string>());

  mi::Variable a, b;
  std::optional<double> truth;
  std::string source;
  if (from_file) {
    const std::string input = vm["input"].as<std::string>();
    a.values = io::read_dataset(input, vm["a"].as<std::string>());
    b.values = io::read_dataset(input, vm["b"].as<std::string>());
    source = fmt::format("{}: A = {}, B = {}", input, vm["a"].as<std::string>(), vm["b"].as<std::string>());
  } else {
    const int64_t n = vm["n"].as<int64_t>();
    const uint64_t seed = checked_seed("seed", vm["seed"].as<int64_t>());
    const mi::TaskSample task = mi::sample_task(vm["task"].as<std::string>(), n, seed);
    a.values = task.a;
    b.values = task.b;
    truth = task.truth_nats;
    source = fmt::format("task {}, N = {}, seed {}", task.spec, n, seed);
  }
  const auto asked = [&](const char* side) -> std::optional<bool> {
    if (discrete == "auto") return std::nullopt;
    return discrete == side || discrete == "both";
  };
  a = mi::make_variable(a.values, asked("a"), "A");
  b = mi::make_variable(b.values, asked("b"), "B");
  a.values = a.values.to(device);
  b.values = b.values.to(device);
  const int64_t n = mi::check_pair(a, b);

  std::vector<Row> rows;
  for (const auto& estimator : estimators) {
    const auto start = std::chrono::steady_clock::now();
    mi::Estimate e = estimator->estimate(a, b);
    rows.push_back({e, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
  }

  std::cout << fmt::format("I(A;B) in {} for {} ({} samples, A {}, B {}, {})\n", units, source, n,
                           a.discrete ? "discrete" : "continuous", b.discrete ? "discrete" : "continuous", device.str());
  std::cout << fmt::format("{:<44} {:>10} {:>10} {:>10}", "estimator", "estimate", "lower", "upper");
  if (truth) std::cout << fmt::format(" {:>10} {:>10}", "truth", "error");
  std::cout << fmt::format(" {:>9}\n", "seconds");
  const auto cell = [&](std::optional<double> v) { return v ? fmt::format("{:>10.4f}", *v * scale) : fmt::format("{:>10}", "-"); };
  for (const Row& r : rows) {
    std::cout << fmt::format("{:<44} {} {} {}", r.estimate.spec, cell(r.estimate.nats), cell(r.estimate.lower_nats),
                             cell(r.estimate.upper_nats));
    if (truth) std::cout << " " << cell(*truth) << " " << cell(r.estimate.nats - *truth);
    std::cout << fmt::format(" {:>9.3f}\n", r.seconds);
  }

  if (!out_path.empty()) {
    std::string text;
    if (out_format == "csv") {
      text = "estimator,units,estimate,lower,upper,truth,error,seconds,samples\n";
      const auto field = [&](std::optional<double> v) { return v ? fmt::format("{:.10g}", *v * scale) : std::string(); };
      for (const Row& r : rows) {
        text += fmt::format("\"{}\",{},{},{},{},{},{},{:.6f},{}\n", r.estimate.spec, units, field(r.estimate.nats),
                            field(r.estimate.lower_nats), field(r.estimate.upper_nats), field(truth),
                            truth ? field(r.estimate.nats - *truth) : std::string(), r.seconds, n);
      }
    } else {
      const auto scaled = [&](std::optional<double> v) { return v ? std::optional<double>(*v * scale) : std::nullopt; };
      text = fmt::format("{{\n  \"source\": {},\n  \"samples\": {},\n  \"units\": \"{}\",\n  \"results\": [\n",
                         json_string(source), n, units);
      for (size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        std::string details;
        for (const auto& [key, value] : r.estimate.details) {
          details += fmt::format("{}{}: {}", details.empty() ? "" : ", ", json_string(key), json_string(value));
        }
        text += fmt::format(
            "    {{\"estimator\": {}, \"estimate\": {}, \"lower\": {}, \"upper\": {}, \"truth\": {}, \"error\": {}, "
            "\"seconds\": {:.6f}, \"details\": {{{}}}}}{}\n",
            json_string(r.estimate.spec), json_number(scaled(r.estimate.nats)), json_number(scaled(r.estimate.lower_nats)),
            json_number(scaled(r.estimate.upper_nats)), json_number(scaled(truth)),
            json_number(truth ? scaled(r.estimate.nats - *truth) : std::nullopt), r.seconds, details,
            i + 1 < rows.size() ? "," : "");
      }
      text += "  ]\n}\n";
    }
    io::write_file_atomically(out_path, text);
    std::cout << "wrote " << out_path << "\n";
  }
  return 0;
}

}  // namespace ibn::cli
