#pragma once
// The `ibn` subcommands: one file each in src/cli/, one line each in src/cli/commands.cpp.
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "ibn/analysis/analyze.h"
#include "ibn/sweep/sweep.h"
#include "ibn/train/train.h"

namespace ibn::cli {

namespace po = boost::program_options;

struct Command {
  std::string name;
  std::string summary;
  // args: everything after the subcommand's name. Returns the exit code; throws
  // ibn::UsageError for bad usage (exit 2) and anything else for failures (exit 1).
  int (*run)(const std::vector<std::string>& args);
};

const std::vector<Command>& commands();

// Options of one subcommand. parse() adds --help and --config FILE, and returns nothing when
// it printed the help. A config file is an .ini file: keys at the top and in a [<command>]
// section apply, other sections are left to other commands; the command line wins over it.
struct CommandOptions {
  CommandOptions(std::string command, std::string usage, std::string description);

  std::string command;
  std::string usage;        // "ibn norms [--spec S --shape N,D]"
  std::string description;  // a paragraph under the usage line
  po::options_description options;
  po::positional_options_description positional;

  std::optional<po::variables_map> parse(const std::vector<std::string>& args);
  // The options that the .ini text `ini` (top-level keys and the [<command>] section) gives,
  // checked as `--config` would check a file; `origin` names the text in errors.
  po::variables_map parse_ini(const std::string& ini, const std::string& origin);
};

// The options of `ibn train` and `ibn analyze`, bound to their config structs: the commands
// parse their command lines with them, and `ibn sweep` checks each point's .ini before any
// point runs.
struct TrainOptions {
  TrainOptions();
  train::TrainConfig config;
  int64_t seed = 0;  // signed, so that --seed -1 is an error rather than 2^64 - 1
  int nproc = 1;     // --nproc: worker processes on this machine (not part of the run's options)
  double dist_timeout = 1800;  // --dist-timeout, seconds
  CommandOptions cmd;
  // The config after parsing: the seed checked and copied in, --quiet applied.
  train::TrainConfig resolved(const po::variables_map& vm);
};
struct AnalyzeOptions {
  AnalyzeOptions();
  analysis::AnalyzeConfig config;
  int64_t seed = 0;
  int threads = 0;  // CPU threads; 0: every core (the estimators' loops are coarse)
  CommandOptions cmd;
  analysis::AnalyzeConfig resolved(const po::variables_map& vm);
};

// Every point's options of a sweep (tuning points' included, and its [report] options),
// checked as the commands will check them (data loaded, models built), before anything is
// written: a typo or a bad grid value is an error now, not after hours of training. Throws
// ibn::UsageError naming the point. `ibn sweep` and `ibn repro` (every platform's sweep) call it.
void check_sweep_points(const sweep::Sweep& s);

// Starts this very binary as `ibn ARGS...` in a child process and returns its pid. The child
// dies with this process (a killed sweep must not leave a child writing into a point that the
// resumed sweep redoes). Its stdout and stderr are appended to `log`, or, with `log` empty, both
// go to this process's stdout (its error lines are then progress: the caller says on stderr what
// failed). `keep_fd` (unless -1) stays open in the child: a lock it holds for as long as it runs.
pid_t spawn_ibn(const std::vector<std::string>& args, const std::string& log, int keep_fd = -1);

// A seed option's value: >= 0, else ibn::UsageError naming the flag.
uint64_t checked_seed(const std::string& flag, int64_t seed);

// "64,256" -> {64, 256}; every entry a positive integer, else ibn::UsageError naming the flag.
std::vector<int64_t> parse_shape(const std::string& flag, const std::string& text);
// "0,0.5,2" -> {0, 0.5, 2}; every entry a finite number.
std::vector<double> parse_numbers(const std::string& flag, const std::string& text);
// Comma-separated words.
std::vector<std::string> parse_words(const std::string& text);

}  // namespace ibn::cli
