// ibn bench mi --peer: the estimators beside the Python tools a researcher already uses, on the
// same data in the same run. ibn writes the cases to one HDF5 file, scripts/mi_peers.py times
// NPEET, scikit-learn and a numpy KDE on it, and the table puts both side by side.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "timing.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/csv.h"
#include "ibn/io/hdf5.h"
#include "ibn/io/process.h"
#include "ibn/mi/entropy.h"
#include "ibn/mi/estimator.h"

namespace ibn::cli {
namespace {

constexpr int64_t kNeighbours = 3;
constexpr double kKdeVar = 0.1;

struct PeerCase {
  std::string name;
  std::string kind;  // "ksg" (a, b continuous, or b labels) or "kde-entropy" (a alone)
  at::Tensor a, b;
};

struct PeerResult {
  std::string peer;
  double seconds = -1;  // < 0: not timed, `note` says why
  double nats = 0;
  std::string note;
};

// Gaussian pairs with correlation 0.8 per coordinate (the KSG cases), labels with a
// continuous feature (Ross's mixed estimator), and Gaussian T with a class shift (KDE).
std::vector<PeerCase> peer_cases(const std::vector<int64_t>& ns, const std::vector<int64_t>& kde_ns,
                                 const std::vector<int64_t>& kde_ds) {
  std::vector<PeerCase> cases;
  torch::manual_seed(0);
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  for (const int64_t dims : {1, 4}) {
    for (const int64_t n : ns) {
      const auto x = torch::randn({n, dims}, f64);
      const auto y = x.mul(0.8).add(torch::randn({n, dims}, f64).mul(0.6));
      cases.push_back({fmt::format("ksg {}+{} N={}", dims, dims, n), "ksg", x, y});
    }
  }
  for (const int64_t n : ns) {
    const auto labels = torch::randint(0, 10, {n}, torch::kLong);
    cases.push_back({fmt::format("ksg mixed 1+labels N={}", n), "ksg",
                     labels.to(torch::kDouble).mul(0.3).add(torch::randn({n}, f64)).unsqueeze(1), labels});
  }
  for (const int64_t n : kde_ns) {
    for (const int64_t d : kde_ds) {
      const auto labels = torch::randint(0, 10, {n}, torch::kLong);
      cases.push_back({fmt::format("kde H(T) d={} N={}", d, n), "kde-entropy",
                       torch::randn({n, d}).add(labels.to(torch::kFloat).unsqueeze(1)), {}});
    }
  }
  return cases;
}

PeerResult time_ibn(const PeerCase& c, int64_t runs) {
  PeerResult r{"ibn", -1, 0, ""};
  if (c.kind == "kde-entropy") {
    r.seconds = median_seconds(runs, c10::Device(c10::kCPU), [&] { r.nats = mi::kde_entropy_upper(c.a, kKdeVar, mi::default_memory_mb(c.a)); });
    return r;
  }
  const auto ksg = mi::make_estimator(fmt::format("ksg:k={}", kNeighbours));
  const mi::Variable a{c.a, false}, b{c.b, !c.b.is_floating_point()};
  r.seconds = median_seconds(runs, c10::Device(c10::kCPU), [&] { r.nats = ksg->estimate(a, b).nats; });
  return r;
}

std::string write_cases(const std::vector<PeerCase>& cases, int64_t runs, const std::string& dir) {
  std::vector<io::DatasetToWrite> datasets;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string group = fmt::format("/cases/{:02d}", i);
    datasets.push_back({group + "/a", cases[i].a,
                        {{"kind", cases[i].kind}, {"name", cases[i].name}, {"k", kNeighbours}, {"var", kKdeVar}, {"runs", runs}}});
    if (cases[i].b.defined()) datasets.push_back({group + "/b", cases[i].b, {}});
  }
  const std::string file = dir + "/cases.h5";
  io::write_datasets(file, datasets);
  return file;
}

// Runs the peer script; per case index, its results. On failure, one line saying why.
std::map<size_t, std::vector<PeerResult>> time_peers(const std::string& cases_file, const std::string& dir,
                                                     std::string& failure) {
  const char* override_script = std::getenv("IBN_PEER_SCRIPT");
  const std::string script = override_script ? override_script : std::string(IBN_SOURCE_DIR) + "/scripts/mi_peers.py";
  const std::string results = dir + "/peers.csv", log = dir + "/peers.log";
  std::map<size_t, std::vector<PeerResult>> out;
  if (io::run_program({io::python3(), script, cases_file, results}, log) != 0) {
    const std::string last = io::last_line(log);
    failure = fmt::format("the peers were not timed: {} ({} needs /usr/bin/python3 with numpy and h5py)",
                          last.empty() ? "the script failed" : last, script);
    return out;
  }
  std::ifstream in(results);
  std::string line;
  std::getline(in, line);  // header
  for (int64_t row = 2; std::getline(in, line); ++row) {
    const std::vector<std::string> f = io::csv_fields(line);
    const std::string where = fmt::format("{} line {}", results, row);
    if (f.size() != 4) throw DataError(fmt::format("{}: expected case,peer,seconds,estimate", where));
    PeerResult r{f[1], -1, 0, ""};
    if (f[2].empty()) {
      r.note = f[3];
    } else {
      r.seconds = io::csv_number(f[2], where);
      r.nats = io::csv_number(f[3], where);
    }
    out[static_cast<size_t>(io::csv_integer(f[0], where))].push_back(r);
  }
  return out;
}

}  // namespace

int bench_mi_peers(const std::vector<int64_t>& ns, const std::vector<int64_t>& kde_ns, const std::vector<int64_t>& kde_ds,
                   int64_t runs) {
  const std::vector<PeerCase> cases = peer_cases(ns, kde_ns, kde_ds);
  const io::TemporaryDirectory scratch("ibn_bench_peers_");
  const std::string cases_file = write_cases(cases, runs, scratch.path());
  std::cout << fmt::format("ibn bench mi --peer ({} CPU threads; median of {} runs after a warm-up; KSG k={}, KDE var={})\n",
                           torch::get_num_threads(), runs, kNeighbours, kKdeVar)
            << std::flush;
  std::string failure;
  const auto peers = time_peers(cases_file, scratch.path(), failure);
  if (!failure.empty()) std::cout << failure << "\n";
  std::cout << fmt::format("{:<26} {:>9} {:>9}  {:<8} {:>9} {:>9} {:>8}\n", "case", "ibn s", "ibn nats", "peer",
                           "peer s", "peer nats", "speed-up");
  for (size_t i = 0; i < cases.size(); ++i) {
    const PeerResult ours = time_ibn(cases[i], runs);
    const auto found = peers.find(i);
    if (found == peers.end() || found->second.empty()) {
      std::cout << fmt::format("{:<26} {:>9.4f} {:>9.4f}  {}\n", cases[i].name, ours.seconds, ours.nats,
                               failure.empty() ? "(no peer takes this case)" : "(peers not timed)");
      continue;
    }
    for (const PeerResult& p : found->second) {
      if (p.seconds < 0) {
        std::cout << fmt::format("{:<26} {:>9.4f} {:>9.4f}  {:<8} {}\n", cases[i].name, ours.seconds, ours.nats, p.peer, p.note);
      } else {
        std::cout << fmt::format("{:<26} {:>9.4f} {:>9.4f}  {:<8} {:>9.4f} {:>9.4f} {:>7.2f}x\n", cases[i].name, ours.seconds,
                                 ours.nats, p.peer, p.seconds, p.nats, p.seconds / ours.seconds);
      }
    }
  }
  std::cout << "speed-up = peer seconds / ibn seconds (above 1: ibn is faster). NPEET is found on PYTHONPATH "
               "(a clone of github.com/gregversteeg/NPEET); scikit-learn is Debian's python3-sklearn.\n";
  return 0;
}

}  // namespace ibn::cli
