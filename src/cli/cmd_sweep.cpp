// ibn sweep experiments/X.ini: train -> analyze for every grid point, in parallel, resumably.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "command.h"
#include "ibn/data/dataset.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/csv.h"
#include "ibn/io/ini.h"
#include "ibn/report/report.h"
#include "ibn/sweep/sweep.h"

namespace ibn::cli {
namespace {

namespace fs = std::filesystem;

// An exclusive lock on OUT/points/.ID.lock, held by the sweep and the point's child process
// while the point runs: a second sweep (another shard given the same i/n, or one started
// while a killed sweep's child still ran) leaves a locked point alone.
class PointLock {
 public:
  explicit PointLock(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error(fmt::format("cannot create the lock '{}': {}", path, std::strerror(errno)));
    locked_ = ::flock(fd_, LOCK_EX | LOCK_NB) == 0;
  }
  ~PointLock() { ::close(fd_); }
  PointLock(const PointLock&) = delete;
  PointLock& operator=(const PointLock&) = delete;
  bool locked() const { return locked_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  bool locked_ = false;
};

// Removes a point's directory before it runs again: only a directory with a plain id directly
// under the sweep's points/, never a path that resolves anywhere else.
void clear_point_directory(const sweep::Sweep& s, const sweep::Point& p) {
  if (!sweep::is_plain_point_id(p.id)) throw std::logic_error(fmt::format("refusing to clear point '{}'", p.id));
  const fs::path dir = fs::path(sweep::point_directory(s, p));
  const fs::file_status status = fs::symlink_status(dir);
  if (fs::is_symlink(status)) {
    throw std::runtime_error(fmt::format("'{}' is a symbolic link; a sweep point must be a directory of its own", dir.string()));
  }
  fs::remove_all(dir);
}

// One point's [train] options (and [analyze], for a grid point), checked as the commands will
// check them.
void check_point(const sweep::Sweep& s, const sweep::Point& p) {
  const std::string origin = fmt::format("{} (point {})", s.file, p.id);
  const std::string ini = p.ini();
  TrainOptions train;
  const po::variables_map train_vm = train.cmd.parse_ini(ini, origin);
  train::TrainConfig config = train.resolved(train_vm);
  config.out = sweep::point_directory(s, p);
  const train::RunPlan plan = train::check_options(config);
  if (p.group != "points") return;
  AnalyzeOptions analyze;
  const po::variables_map analyze_vm = analyze.cmd.parse_ini(ini, origin);
  analyze.config.run = config.out;
  analysis::check_options(analyze.resolved(analyze_vm), plan.layers, plan.chain, plan.dumps);
  check_thread_count(analyze.threads);
}

// With [tune], each dataset's test split must be the same for every seed: where the run's seed
// draws it, one seed's test samples are another's training samples, and the tuning runs (seeds
// 1000, ...) would train on the grid's test samples.
void check_fixed_test_split(const sweep::Sweep& s) {
  std::set<std::string> specs;
  for (const sweep::Point& p : s.points) {
    const std::string data = sweep::option_value(p.train, "data", train::TrainConfig().data);
    if (!specs.insert(data).second) continue;
    if (data::load_dataset(data, 0).test_varies_with_seed) {
      throw UsageError(fmt::format("'{}': with [tune], data '{}' must keep one test split for every seed, or the tuning runs "
                                   "would train on the grid's test samples: add split_seed=N to the data spec", s.file, data));
    }
  }
}

}  // namespace

// Grid points of a tuned sweep are checked at the first rate (their own is chosen later).
void check_sweep_points(const sweep::Sweep& s) {
  report::ReportOptions options;  // first: a typo there is found at once, not after every point's data is loaded
  for (const auto& [key, value] : s.report_options) options.set(key, value);
  std::vector<sweep::Point> points = s.points;
  if (s.tune) {
    for (sweep::Point& p : points) p.train.emplace_back("lr", s.tune->rates.front());
  }
  points.insert(points.end(), s.tune_points.begin(), s.tune_points.end());
  for (const sweep::Point& p : points) {
    try {
      check_point(s, p);
    } catch (const UsageError& e) {
      throw UsageError(fmt::format("point {} of '{}': {}", p.id, s.file, e.what()));
    } catch (const std::exception& e) {
      throw UsageError(fmt::format("point {} of '{}' cannot run: {}", p.id, s.file, e.what()));
    }
  }
  if (s.tune) check_fixed_test_split(s);  // after the points: a bad data spec is named with its point
}

namespace {

// The last "ibn: ..." line of a point's log: the error its command printed.
std::string last_error(const std::string& log, int status) {
  std::ifstream in(log);
  std::string line, error;
  while (std::getline(in, line)) {
    if (line.rfind("ibn: ", 0) == 0) error = line;
  }
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}{}", WTERMSIG(status), error.empty() ? "" : ": " + error);
  return error.empty() ? fmt::format("exit code {}", WEXITSTATUS(status)) : error;
}

struct Running {
  const sweep::Point* point = nullptr;
  int stage = 0;  // 0 train, 1 analyze
  std::chrono::steady_clock::time_point started;
  std::shared_ptr<PointLock> lock;
};

int print_status(const sweep::Sweep& s) {
  std::map<sweep::State, int> counts;
  std::cout << fmt::format("sweep '{}' in {} ({} points{})\n", s.name, s.out, s.points.size(),
                           s.tune ? fmt::format(", after {} tuning points", s.tune_points.size()) : "");
  std::vector<const sweep::Point*> all;
  for (const sweep::Point& p : s.tune_points) all.push_back(&p);
  for (const sweep::Point& p : s.points) all.push_back(&p);
  for (const sweep::Point* point : all) {
    const sweep::Point& p = *point;
    std::string error;
    const sweep::State state = sweep::point_state(s, p, &error);
    ++counts[state];
    const char* word = state == sweep::State::done ? "done" : state == sweep::State::failed ? "failed" : "pending";
    std::cout << fmt::format("  {:>4}  {:<40} {}{}\n", p.index, p.group == "tune" ? "tune/" + p.id : p.id, word,
                             error.empty() ? "" : ": " + error);
  }
  std::cout << fmt::format("{} done, {} failed, {} pending\n", counts[sweep::State::done], counts[sweep::State::failed],
                           counts[sweep::State::pending]);
  return 0;
}

// SWEEP/sweep.ini (the experiment as run) and SWEEP/points.csv (each grid point's settings).
void write_listing(const sweep::Sweep& s, const std::string& experiment) {
  fs::create_directories(s.out + "/points");
  std::ifstream source(experiment);
  io::write_file_atomically(s.out + "/sweep.ini", std::string(std::istreambuf_iterator<char>(source), {}));
  std::string listing = "index,id";
  for (const std::string& key : s.grid_keys) listing += "," + key;
  listing += "\n";
  for (const sweep::Point& p : s.points) {
    listing += fmt::format("{},{}", p.index, p.id);
    for (const auto& [key, value] : p.settings) listing += "," + io::csv_field(value);
    listing += "\n";
  }
  io::write_file_atomically(s.out + "/points.csv", listing);
}

// A finished grid point of a tuned sweep that ran at another rate than tuning now chooses (the
// [tune] section was edited): it is run again, and its `done` goes.
bool ran_at_other_rate(const sweep::Sweep& s, const sweep::Point& p) {
  if (!s.tune) return false;
  const std::string dir = sweep::point_directory(s, p);
  std::string ran;
  for (const io::IniEntry& e : io::read_ini_file(dir + "/point.ini")) {
    if (e.section == "train" && e.key == "lr") ran = e.value;
  }
  const std::string chosen = sweep::option_value(p.train, "lr", "");
  if (ran == chosen) return false;
  std::cout << fmt::format("{} ran at lr {} but tuning now chooses {}: it runs again\n", p.id, ran.empty() ? "(none)" : ran, chosen);
  fs::remove(dir + "/done");
  return true;
}

struct Outcome {
  size_t failed = 0;  // points that failed
  size_t busy = 0;    // points another process holds
};

// Runs `todo`, at most `jobs` at once: `ibn train`, then for grid points `ibn analyze`; each point
// ends `done` (with its seconds) or `failed` (with its error).
Outcome run_points(const sweep::Sweep& s, const std::vector<const sweep::Point*>& todo, int jobs, bool announce_busy = true) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string threads = std::to_string(std::max(1u, cores / static_cast<unsigned>(jobs)));
  Outcome outcome;
  std::map<pid_t, Running> running;
  size_t next = 0, finished = 0;
  const auto start_stage = [&](Running r) {
    const std::string dir = sweep::point_directory(s, *r.point);
    const std::string config = dir + "/point.ini";
    const std::string ini = r.point->ini();
    std::vector<std::string> argv;
    if (r.stage == 0) {
      argv = {"train", "--config", config, "--out", dir, "--progress", "lines"};
      if (TrainOptions().cmd.parse_ini(ini, config)["threads"].defaulted()) argv.insert(argv.end(), {"--threads", threads});
    } else {
      argv = {"analyze", dir, "--config", config, "--quiet"};
      if (AnalyzeOptions().cmd.parse_ini(ini, config)["threads"].defaulted()) argv.insert(argv.end(), {"--threads", threads});
    }
    running[spawn_ibn(argv, dir + "/log.txt", r.lock->fd())] = r;
  };
  while (next < todo.size() || !running.empty()) {
    while (next < todo.size() && static_cast<int>(running.size()) < jobs) {
      const sweep::Point& p = *todo[next++];
      const std::string dir = sweep::point_directory(s, p);
      fs::create_directories(fs::path(dir).parent_path());
      auto lock = std::make_shared<PointLock>(fmt::format("{}/.{}.lock", fs::path(dir).parent_path().string(), p.id));
      if (!lock->locked()) {
        ++outcome.busy;
        if (announce_busy) std::cout << fmt::format("{} is being run by another process; left to it\n", p.id) << std::flush;
        continue;
      }
      if (sweep::point_state(s, p) == sweep::State::done) continue;  // finished by another process meanwhile
      clear_point_directory(s, p);  // an unfinished or failed point starts again from scratch
      fs::create_directories(dir);
      io::write_file_atomically(dir + "/point.ini", p.ini());
      start_stage({&p, 0, std::chrono::steady_clock::now(), lock});
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) break;
    const auto found = running.find(pid);
    if (found == running.end()) continue;
    Running r = found->second;
    running.erase(found);
    const std::string dir = sweep::point_directory(s, *r.point);
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (ok && r.stage == 0 && r.point->group == "points") {
      r.stage = 1;
      start_stage(r);
      continue;
    }
    ++finished;
    const std::string name = r.point->group == "points" ? r.point->id : r.point->group + "/" + r.point->id;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.started).count();
    if (ok) {
      io::write_file_atomically(dir + "/done", fmt::format("{:.1f} s\n", seconds));
      std::cout << fmt::format("[{}/{}] {} done ({:.1f} s)\n", finished, todo.size(), name, seconds) << std::flush;
    } else {
      ++outcome.failed;
      const std::string error = fmt::format("{}: {}", r.stage == 0 ? "train" : "analyze", last_error(dir + "/log.txt", status));
      io::write_file_atomically(dir + "/failed", error + "\n");
      std::cout << fmt::format("[{}/{}] {} FAILED: {} (log: {}/log.txt)\n", finished, todo.size(), name, error, dir) << std::flush;
    }
  }
  return outcome;
}


// A tuning point to run: not run yet, failed other than by diverging (a fault: retried), or
// finished with other options than the experiment now gives it (its [tune] or [train] edited).
bool tuning_point_to_run(const sweep::Sweep& s, const sweep::Point& p) {
  std::string error;
  const sweep::State state = sweep::point_state(s, p, &error);
  if (state == sweep::State::pending) return true;
  if (state == sweep::State::failed && !sweep::is_divergence(error)) return true;
  const std::string dir = sweep::point_directory(s, p);
  std::ifstream in(dir + "/point.ini");
  const std::string ran(std::istreambuf_iterator<char>(in), {});
  if (ran == p.ini()) return false;
  std::cout << fmt::format("tune/{} ran with other options than the experiment now gives it: it runs again\n", p.id);
  fs::remove(dir + "/done");
  fs::remove(dir + "/failed");
  return true;
}

// Every tuning point, whichever the shard: shards work through them together (a point another
// process holds is left to it) and each waits until all are finished, then chooses the same
// rates from the same runs. A point is tried at most once per call, so a fault that repeats
// ends the call (choose_rates names it) instead of looping.
void run_tuning(const sweep::Sweep& s, int jobs) {
  std::set<const sweep::Point*> tried;
  bool first = true;
  while (true) {
    std::vector<const sweep::Point*> todo;
    size_t waiting = 0;
    for (const sweep::Point& p : s.tune_points) {
      if (!tuning_point_to_run(s, p)) continue;
      if (tried.count(&p)) continue;
      todo.push_back(&p);
    }
    if (first) {
      std::cout << fmt::format("sweep '{}': tuning: {} points ({} rates x {} seeds per setting), {} to run with -j {}\n", s.name,
                               s.tune_points.size(), s.tune->rates.size(), s.tune->seeds, todo.size(), jobs) << std::flush;
    }
    if (todo.empty()) return;
    const Outcome outcome = run_points(s, todo, jobs, first);
    first = false;
    for (const sweep::Point* p : todo) {
      if (sweep::point_state(s, *p) != sweep::State::pending) tried.insert(p);  // ran here (or just finished elsewhere)
    }
    waiting = outcome.busy;
    if (waiting > 0) {
      std::cout << fmt::format("waiting for {} tuning points that other processes hold\n", waiting) << std::flush;
      std::this_thread::sleep_for(std::chrono::seconds(5));
    }
  }
}


}  // namespace

int run_sweep(const std::vector<std::string>& args) {
  CommandOptions cmd("sweep", "ibn sweep EXPERIMENT.ini [-j N] [--shard i/n] [--status] [--out DIR]",
                     "Trains and analyzes every point of the experiment's grid (a point is a run directory\n"
                     "OUT/points/<id>), then writes the report. Finished points are skipped, so a killed\n"
                     "sweep continues where it stopped; an unfinished or failed point starts again from\n"
                     "scratch. A failed point is recorded (OUT/points/<id>/failed, and its log.txt) and\n"
                     "the others go on. --shard i/n runs points i, i+n, i+2n, ...: array jobs of any\n"
                     "scheduler split a sweep without a coordinator (the last one to finish writes the\n"
                     "report, or run 'ibn report OUT'). Experiment files: experiments/*.ini.\n\n"
                     "[grid] kappa = K | ... in place of lambda gives every IBNorm variant the lambda whose\n"
                     "Gaussian variance contraction is K: variants compared at equal compression.\n"
                     "[tune] lr = A | B | ... (seeds = 1, validation = 0.1, epochs = [train]'s, select = loss)\n"
                     "first trains every setting (a grid point without its seed) at each rate and tuning seed\n"
                     "(1000, 1001, ...) on the training samples less a validation split, into OUT/tune/<id>;\n"
                     "each setting's grid points then run at its rate with the best mean final validation\n"
                     "loss (or accuracy). A failed tuning run (a diverged rate) is a result: that rate is\n"
                     "not chosen. The report states the budget and the choices.\n\n"
                     "  ibn sweep experiments/default.ini -j 2");
  std::string experiment, out, shard_text;
  int jobs = 1;
  cmd.options.add_options()
      ("experiment", po::value<std::string>(&experiment)->value_name("FILE"), "the experiment file (also the first argument)")
      ("out", po::value<std::string>(&out), "sweep directory (default: the file's [sweep] out, else runs/<name>)")
      ("jobs,j", po::value<int>(&jobs)->default_value(1), "points run in parallel")
      ("shard", po::value<std::string>(&shard_text)->value_name("i/n"), "run only points i, i+n, i+2n, ...")
      ("status", "show each point's state (done, failed with its error, pending) and exit")
      ("check", "check every point's options (data loaded, models built) and exit, writing nothing")
      ("no-report", "do not write the report at the end");
  cmd.positional.add("experiment", 1);
  const auto vm = cmd.parse(args);
  if (!vm) return 0;
  if (experiment.empty()) throw UsageError("give the experiment file: ibn sweep experiments/X.ini");
  constexpr int kMaxJobs = 256;  // child processes at once; more only thrashes any one machine
  if (jobs < 1 || jobs > kMaxJobs) throw UsageError(fmt::format("-j {} must lie in [1, {}]", jobs, kMaxJobs));
  sweep::Sweep s = sweep::load_sweep(experiment, out);
  const auto [shard, shards] = shard_text.empty() ? std::pair<int64_t, int64_t>{0, 1} : sweep::parse_shard(shard_text);
  if (vm->count("status")) return print_status(s);
  check_sweep_points(s);
  if (vm->count("check")) {
    std::cout << fmt::format("'{}': {} points{} checked; every option is valid\n", experiment, s.points.size(),
                             s.tune ? fmt::format(" and {} tuning points", s.tune_points.size()) : "");
    return 0;
  }
  write_listing(s, experiment);

  std::optional<sweep::Tuning> tuning;
  if (s.tune) {
    run_tuning(s, jobs);
    tuning = sweep::choose_rates(s);
    sweep::apply_rates(s, *tuning);
    for (const sweep::TunedSetting& t : tuning->settings) std::cout << fmt::format("tuned: {} lr = {}\n", t.setting, t.chosen);
  }

  std::vector<const sweep::Point*> todo;
  int64_t skipped = 0;
  for (const sweep::Point& p : s.points) {
    if (p.index % shards != shard) continue;
    if (sweep::point_state(s, p) == sweep::State::done && !ran_at_other_rate(s, p)) {
      ++skipped;
    } else {
      todo.push_back(&p);
    }
  }
  std::cout << fmt::format("sweep '{}': {} points{}, {} done before, {} to run with -j {} -> {}\n", s.name, s.points.size(),
                           shards > 1 ? fmt::format(" (shard {}/{})", shard, shards) : "", skipped, todo.size(), jobs, s.out)
            << std::flush;
  const Outcome outcome = run_points(s, todo, jobs);

  int64_t done = 0;
  for (const sweep::Point& p : s.points) done += sweep::point_state(s, p) == sweep::State::done;
  if (outcome.failed > 0) {
    // On stderr, as every command's error: a script sees why the sweep exits 1.
    std::cerr << fmt::format("ibn: error: {} of {} points failed; 'ibn sweep {} --status' lists them, and running the sweep "
                             "again retries them\n", outcome.failed, todo.size(), experiment);
  } else if (outcome.busy > 0) {
    std::cerr << fmt::format("ibn: error: {} of {} points were left to another process that holds them; run the sweep again "
                             "once it has finished (or died)\n", outcome.busy, todo.size());
  }
  if (done == static_cast<int64_t>(s.points.size()) && !vm->count("no-report")) {
    report::ReportOptions options;
    for (const auto& [key, value] : s.report_options) options.set(key, value);
    // The grid's settings and the tuning go to the report as they are in memory, not re-read from files.
    std::vector<report::ReportRun> runs;
    for (const sweep::Point& p : s.points) runs.push_back({sweep::point_directory(s, p), p.settings});
    std::cout << report::write_report(s.out, runs, options, std::cout, tuning ? &*tuning : nullptr) << "\n";
  } else if (done < static_cast<int64_t>(s.points.size())) {
    std::cout << fmt::format("{} of {} points done; the report waits for all of them\n", done, s.points.size());
  }
  return outcome.failed > 0 || outcome.busy > 0 ? 1 : 0;
}

}  // namespace ibn::cli
