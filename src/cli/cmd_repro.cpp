// ibn repro experiments/X.ini: the experiment's grid on several platforms (thread counts, float32
// and float64, CUDA when present), each an `ibn sweep` of its own, then the spread across
// platforms beside the spread across seeds (ibn/report/repro.h).
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <fmt/format.h>
#include <torch/cuda.h>

#include "command.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/report/repro.h"
#include "ibn/sweep/platform.h"
#include "ibn/sweep/sweep.h"

namespace ibn::cli {
namespace {

namespace fs = std::filesystem;

// One platform's sweep: the experiment file it runs and the sweep as that file declares it.
struct PlatformRun {
  sweep::Platform platform;
  std::string file;  // OUT/platforms/NAME.ini
  std::string text;  // its content
  sweep::Sweep sweep;
};

// Runs `ibn ARGS...` with its output on our stdout, and returns its wait status.
int run_ibn(const std::vector<std::string>& args) {
  const pid_t pid = spawn_ibn(args, "");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(fmt::format("waiting for 'ibn {}' failed: {}", args.front(), std::strerror(errno)));
  }
  return status;
}

// Every platform's sweep, in memory: its experiment's text and the points that text declares.
std::vector<PlatformRun> platform_sweeps(const std::string& experiment, const std::vector<sweep::Platform>& platforms,
                                         const std::string& out) {
  const std::string text = io::read_file(experiment);
  std::vector<PlatformRun> runs;
  for (const sweep::Platform& p : platforms) {
    PlatformRun r{p, out + "/platforms/" + p.name + ".ini", sweep::platform_experiment(text, experiment, p), {}};
    r.sweep = sweep::load_sweep_text(r.text, r.file, out + "/platforms/" + p.name);
    runs.push_back(std::move(r));
  }
  return runs;
}

// The experiment's points, then every platform's, checked as their sweeps will check them,
// before anything is written: a typo is named in the user's file, and a platform that cannot run
// is an error now, not after the others have run for an hour.
void check_platforms(const sweep::Sweep& experiment, const std::vector<PlatformRun>& runs) {
  check_sweep_points(experiment);
  for (const PlatformRun& r : runs) {
    try {
      check_sweep_points(r.sweep);
    } catch (const UsageError& e) {
      throw UsageError(fmt::format("platform {}: {}", r.platform.name, e.what()));
    }
  }
}

int print_status(const std::vector<PlatformRun>& runs, const std::string& out) {
  std::cout << fmt::format("repro in {}\n", out);
  for (const PlatformRun& r : runs) {
    int done = 0, failed = 0;
    for (const sweep::Point& p : r.sweep.points) {
      const sweep::State state = sweep::point_state(r.sweep, p);
      done += state == sweep::State::done;
      failed += state == sweep::State::failed;
    }
    std::cout << fmt::format("  {:<16} {:<44} {} done, {} failed, {} pending\n", r.platform.name, r.platform.settings(), done, failed,
                             static_cast<int>(r.sweep.points.size()) - done - failed);
  }
  return 0;
}

// Points a platform runs at once: -j counts cores, and each of its points takes `threads` of them.
int jobs_for(const sweep::Platform& p, int jobs) { return std::max(1, jobs / p.threads); }

void run_platform(const PlatformRun& r, int jobs) {
  std::cout << fmt::format("== platform {} ({}{}) ==\n", r.platform.name, r.platform.settings(),
                           r.platform.rerun_of.empty() ? "" : ", a rerun of " + r.platform.rerun_of)
            << std::flush;
  const int status = run_ibn({"sweep", r.file, "--out", r.sweep.out, "-j", std::to_string(jobs_for(r.platform, jobs)), "--no-report"});
  // Exit 1 is a sweep that recorded failed points (or left some to another process): the report
  // counts them. Anything else stopped the sweep itself.
  if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 1)) return;
  throw std::runtime_error(fmt::format("the sweep of platform {} stopped ({}); its output is above",
                                       r.platform.name, WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                                                            : fmt::format("exit code {}", WEXITSTATUS(status))));
}

// The platform's points as the report takes them: each with its directory, or why it has none.
report::PlatformSweep finished_points(const PlatformRun& r) {
  report::PlatformSweep out{r.platform, {}};
  for (const sweep::Point& p : r.sweep.points) {
    std::string error;
    const sweep::State state = sweep::point_state(r.sweep, p, &error);
    const std::string missing = state == sweep::State::done     ? ""
                                : state == sweep::State::failed ? "failed: " + error
                                                                : "not finished (held by another process, or the sweep stopped)";
    out.points.push_back({{sweep::point_directory(r.sweep, p), p.settings}, p.id, missing});
  }
  return out;
}

}  // namespace

int run_repro(const std::vector<std::string>& args) {
  CommandOptions cmd("repro", "ibn repro EXPERIMENT.ini [--out DIR] [-j N] [--platforms LIST] [--status]",
                     "Runs the experiment's grid on several platforms, each a sweep of its own into\n"
                     "OUT/platforms/NAME/ (resumable as any sweep), then writes OUT/repro.md, repro.csv and\n"
                     "repro_values.csv: per quantity (test accuracy and loss, I(X;T) and I(T;Y) of every\n"
                     "analyzed layer, the chain sums and IB per estimator, kappa of every norm site) the\n"
                     "spread across platforms beside the spread across seeds, where platforms disagree more\n"
                     "than seeds, and which results are bit-identical between platforms. Flagged and failed\n"
                     "runs are left out and counted.\n\n"
                     "Platforms: t1-fp32 (1 thread, float32), t2-fp32 (2 threads), t1-fp64 (1 thread,\n"
                     "float64), t2-fp64, cuda-fp32 (CUDA, float32); NAME-rerun repeats NAME in a directory of\n"
                     "its own. Default: the four CPU platforms, cuda-fp32 when a CUDA device is present, and\n"
                     "t1-fp32-rerun. A platform sets [train] threads, dtype and device and [analyze] threads\n"
                     "and device, so an experiment that sets any of them is refused.\n\n"
                     "  ibn repro experiments/repro.ini -j 2");
  std::string experiment, out, platform_list;
  int jobs = 1;
  cmd.options.add_options()
      ("experiment", po::value<std::string>(&experiment)->value_name("FILE"), "the experiment file (also the first argument)")
      ("out", po::value<std::string>(&out), "output directory (default: the experiment's [sweep] out + '-platforms')")
      ("jobs,j", po::value<int>(&jobs)->default_value(1), "cores to use: a platform of T threads runs max(1, N / T) points at once")
      ("platforms", po::value<std::string>(&platform_list)->value_name("LIST"), "comma-separated platforms (default above)")
      ("status", "show each platform's finished, failed and pending points and exit");
  cmd.positional.add("experiment", 1);
  const auto vm = cmd.parse(args);
  if (!vm) return 0;
  if (experiment.empty()) throw UsageError("give the experiment file: ibn repro experiments/X.ini");
  constexpr int kMaxJobs = 256;  // as ibn sweep's
  if (jobs < 1 || jobs > kMaxJobs) throw UsageError(fmt::format("-j {} must lie in [1, {}]", jobs, kMaxJobs));
  const sweep::Sweep experiment_sweep = sweep::load_sweep(experiment, "");
  sweep::check_platform_free(experiment);
  const bool cuda = torch::cuda::is_available();
  const std::vector<sweep::Platform> platforms =
      platform_list.empty() ? sweep::default_platforms(cuda) : sweep::parse_platforms(platform_list, cuda);
  if (out.empty()) out = experiment_sweep.out + "-platforms";
  report::ReportOptions options;
  for (const auto& [key, value] : experiment_sweep.report_options) options.set(key, value);
  const std::vector<PlatformRun> runs = platform_sweeps(experiment, platforms, out);
  if (vm->count("status")) return print_status(runs, out);
  check_platforms(experiment_sweep, runs);

  fs::create_directories(out + "/platforms");
  for (const PlatformRun& r : runs) io::write_file_atomically(r.file, r.text);
  for (const PlatformRun& r : runs) run_platform(r, jobs);

  std::vector<report::PlatformSweep> sweeps;
  int64_t missing = 0;
  for (const PlatformRun& r : runs) {
    sweeps.push_back(finished_points(r));
    for (const report::PlatformPoint& p : sweeps.back().points) missing += !p.missing.empty();
  }
  std::cout << report::write_repro_report(out, sweeps, experiment, options, std::cout) << "\n";
  if (missing > 0) {
    std::cerr << fmt::format("ibn: error: {} runs did not finish and are left out of {}/repro.md; 'ibn repro {} --status' counts "
                             "them, and running it again retries them\n", missing, out, experiment);
    return 1;
  }
  return 0;
}

}  // namespace ibn::cli
