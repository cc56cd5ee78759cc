// ibn sweep experiments/X.ini: train -> analyze for every grid point, in parallel, resumably.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include <fmt/format.h>

#include "command.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/csv.h"
#include "ibn/report/report.h"
#include "ibn/sweep/sweep.h"

namespace ibn::cli {
namespace {

namespace fs = std::filesystem;

// Runs `ibn ARGS...` (this very binary) with stdout and stderr appended to `log`. The child
// dies with the sweep (a killed sweep must not leave a child writing into a point that the
// resumed sweep redoes), and holds the point's lock (`lock_fd`) for as long as it runs.
pid_t spawn(const std::vector<std::string>& args, const std::string& log, int lock_fd) {
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(fmt::format("cannot start a point: fork failed: {}", std::strerror(errno)));
  if (pid > 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the sweep died before the line above
  ::dup(lock_fd);  // a copy without close-on-exec: the lock lives on in the child
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
  }
  std::vector<char*> argv;
  static char self[] = "ibn";
  argv.push_back(self);
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv("/proc/self/exe", argv.data());
  ::_exit(127);
}

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
  const fs::path dir = fs::path(s.out) / "points" / p.id;
  const fs::file_status status = fs::symlink_status(dir);
  if (fs::is_symlink(status)) {
    throw std::runtime_error(fmt::format("'{}' is a symbolic link; a sweep point must be a directory of its own", dir.string()));
  }
  fs::remove_all(dir);
}

// Every point's [train] and [analyze] options, checked as the commands will check them, before
// anything is written: a typo or a bad grid value is an error now, not after hours of training.
void check_points(const sweep::Sweep& s) {
  report::ReportOptions options;  // first: a typo there is found at once, not after every point's data is loaded
  for (const auto& [key, value] : s.report_options) options.set(key, value);
  for (const sweep::Point& p : s.points) {
    const std::string origin = fmt::format("{} (point {})", s.file, p.id);
    try {
      TrainOptions train;
      const po::variables_map train_vm = train.cmd.parse_ini(p.ini, origin);
      train::TrainConfig config = train.resolved(train_vm);
      config.out = sweep::point_directory(s, p);
      const train::RunPlan plan = train::check_options(config);
      AnalyzeOptions analyze;
      const po::variables_map analyze_vm = analyze.cmd.parse_ini(p.ini, origin);
      analyze.config.run = config.out;
      analysis::check_options(analyze.resolved(analyze_vm), plan.layers, plan.chain, plan.dumps);
      check_thread_count(analyze.threads);
    } catch (const UsageError& e) {
      throw UsageError(fmt::format("point {} of '{}': {}", p.id, s.file, e.what()));
    } catch (const std::exception& e) {
      throw UsageError(fmt::format("point {} of '{}' cannot run: {}", p.id, s.file, e.what()));
    }
  }
}

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
  std::cout << fmt::format("sweep '{}' in {} ({} points)\n", s.name, s.out, s.points.size());
  for (const sweep::Point& p : s.points) {
    std::string error;
    const sweep::State state = sweep::point_state(s, p, &error);
    ++counts[state];
    const char* word = state == sweep::State::done ? "done" : state == sweep::State::failed ? "failed" : "pending";
    std::cout << fmt::format("  {:>4}  {:<40} {}{}\n", p.index, p.id, word, error.empty() ? "" : ": " + error);
  }
  std::cout << fmt::format("{} done, {} failed, {} pending\n", counts[sweep::State::done], counts[sweep::State::failed],
                           counts[sweep::State::pending]);
  return 0;
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
                     "  ibn sweep experiments/default.ini -j 2");
  std::string experiment, out, shard_text;
  int jobs = 1;
  cmd.options.add_options()
      ("experiment", po::value<std::string>(&experiment)->value_name("FILE"), "the experiment file (also the first argument)")
      ("out", po::value<std::string>(&out), "sweep directory (default: the file's [sweep] out, else runs/<name>)")
      ("jobs,j", po::value<int>(&jobs)->default_value(1), "points run in parallel")
      ("shard", po::value<std::string>(&shard_text)->value_name("i/n"), "run only points i, i+n, i+2n, ...")
      ("status", "show each point's state (done, failed with its error, pending) and exit")
      ("no-report", "do not write the report at the end");
  cmd.positional.add("experiment", 1);
  const auto vm = cmd.parse(args);
  if (!vm) return 0;
  if (experiment.empty()) throw UsageError("give the experiment file: ibn sweep experiments/X.ini");
  constexpr int kMaxJobs = 256;  // child processes at once; more only thrashes any one machine
  if (jobs < 1 || jobs > kMaxJobs) throw UsageError(fmt::format("-j {} must lie in [1, {}]", jobs, kMaxJobs));
  const sweep::Sweep s = sweep::load_sweep(experiment, out);
  const auto [shard, shards] = shard_text.empty() ? std::pair<int64_t, int64_t>{0, 1} : sweep::parse_shard(shard_text);
  if (vm->count("status")) return print_status(s);
  check_points(s);

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

  std::vector<const sweep::Point*> todo;
  int64_t skipped = 0;
  for (const sweep::Point& p : s.points) {
    if (p.index % shards != shard) continue;
    if (sweep::point_state(s, p) == sweep::State::done) {
      ++skipped;
    } else {
      todo.push_back(&p);
    }
  }
  std::cout << fmt::format("sweep '{}': {} points{}, {} done before, {} to run with -j {} -> {}\n", s.name, s.points.size(),
                           shards > 1 ? fmt::format(" (shard {}/{})", shard, shards) : "", skipped, todo.size(), jobs, s.out)
            << std::flush;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string threads = std::to_string(std::max(1u, cores / static_cast<unsigned>(jobs)));

  std::map<pid_t, Running> running;
  size_t next = 0, finished = 0, failed = 0;
  const auto start_stage = [&](Running r) {
    const std::string dir = sweep::point_directory(s, *r.point);
    const std::string config = dir + "/point.ini";
    std::vector<std::string> argv;
    if (r.stage == 0) {
      argv = {"train", "--config", config, "--out", dir, "--progress", "lines"};
      if (TrainOptions().cmd.parse_ini(r.point->ini, config)["threads"].defaulted()) argv.insert(argv.end(), {"--threads", threads});
    } else {
      argv = {"analyze", dir, "--config", config, "--quiet"};
      if (AnalyzeOptions().cmd.parse_ini(r.point->ini, config)["threads"].defaulted()) argv.insert(argv.end(), {"--threads", threads});
    }
    running[spawn(argv, dir + "/log.txt", r.lock->fd())] = r;
  };
  size_t busy = 0;  // points another process holds
  while (next < todo.size() || !running.empty()) {
    while (next < todo.size() && static_cast<int>(running.size()) < jobs) {
      const sweep::Point& p = *todo[next++];
      const std::string dir = sweep::point_directory(s, p);
      auto lock = std::make_shared<PointLock>(fmt::format("{}/points/.{}.lock", s.out, p.id));
      if (!lock->locked()) {
        ++busy;
        std::cout << fmt::format("{} is being run by another process; left to it\n", p.id) << std::flush;
        continue;
      }
      if (sweep::point_state(s, p) == sweep::State::done) continue;  // finished by another process meanwhile
      clear_point_directory(s, p);  // an unfinished or failed point starts again from scratch
      fs::create_directories(dir);
      io::write_file_atomically(dir + "/point.ini", p.ini);
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
    if (ok && r.stage == 0) {
      r.stage = 1;
      start_stage(r);
      continue;
    }
    ++finished;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.started).count();
    if (ok) {
      io::write_file_atomically(dir + "/done", fmt::format("{:.1f} s\n", seconds));
      std::cout << fmt::format("[{}/{}] {} done ({:.1f} s)\n", finished, todo.size(), r.point->id, seconds) << std::flush;
    } else {
      ++failed;
      const std::string error = fmt::format("{}: {}", r.stage == 0 ? "train" : "analyze", last_error(dir + "/log.txt", status));
      io::write_file_atomically(dir + "/failed", error + "\n");
      std::cout << fmt::format("[{}/{}] {} FAILED: {} (log: {}/log.txt)\n", finished, todo.size(), r.point->id, error, dir)
                << std::flush;
    }
  }

  int64_t done = 0;
  for (const sweep::Point& p : s.points) done += sweep::point_state(s, p) == sweep::State::done;
  if (failed > 0) {
    // On stderr, as every command's error: a script sees why the sweep exits 1.
    std::cerr << fmt::format("ibn: error: {} of {} points failed; 'ibn sweep {} --status' lists them, and running the sweep "
                             "again retries them\n", failed, todo.size(), experiment);
  } else if (busy > 0) {
    std::cerr << fmt::format("ibn: error: {} of {} points were left to another process that holds them; run the sweep again "
                             "once it has finished (or died)\n", busy, todo.size());
  }
  if (done == static_cast<int64_t>(s.points.size()) && !vm->count("no-report")) {
    report::ReportOptions options;
    for (const auto& [key, value] : s.report_options) options.set(key, value);
    // The grid's settings go to the report as they are in memory, not re-read from files.
    std::vector<report::ReportRun> runs;
    for (const sweep::Point& p : s.points) runs.push_back({sweep::point_directory(s, p), p.settings});
    std::cout << report::write_report(s.out, runs, options, std::cout) << "\n";
  } else if (done < static_cast<int64_t>(s.points.size())) {
    std::cout << fmt::format("{} of {} points done; the report waits for all of them\n", done, s.points.size());
  }
  return failed > 0 || busy > 0 ? 1 : 0;
}

}  // namespace ibn::cli
