#include "command.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <iostream>
#include <iterator>

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/io/ini.h"
#include "ibn/spec_string.h"

namespace ibn::cli {

CommandOptions::CommandOptions(std::string command_name, std::string usage_line, std::string text)
    : command(std::move(command_name)),
      usage(std::move(usage_line)),
      description(std::move(text)),
      options("Options") {
  options.add_options()
      ("help,h", "print this help and exit")
      ("config", po::value<std::string>()->value_name("FILE"),
       "read options from an .ini file (top-level keys and the [section] named after the "
       "command); the command line wins");
}

pid_t spawn_ibn(const std::vector<std::string>& args, const std::string& log, int keep_fd) {
  // Everything the child needs is made before fork: the child only calls async-signal-safe functions.
  std::vector<char*> argv;
  static char self[] = "ibn";
  argv.push_back(self);
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(fmt::format("cannot start 'ibn {}': fork failed: {}", args.front(), std::strerror(errno)));
  if (pid > 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the parent died before the line above
  if (keep_fd >= 0) ::dup(keep_fd);  // a copy without close-on-exec: a lock lives on in the child
  if (log.empty()) {
    ::dup2(1, 2);
  } else {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
  }
  ::execv("/proc/self/exe", argv.data());
  ::_exit(127);
}

namespace {

[[noreturn]] void usage_error(const std::string& command, const std::string& what) {
  throw UsageError(fmt::format("ibn {}: {} (see 'ibn {} --help')", command, what, command));
}

// Options from .ini text (read by io::parse_ini, the one .ini reader) that belong to
// `command`, checked against its options.
po::parsed_options parse_config_text(const std::string& text, const std::string& origin, const std::string& command,
                                     const po::options_description& options) {
  std::vector<io::IniEntry> entries;
  try {
    entries = io::parse_ini(text, origin);
  } catch (const UsageError& e) {
    usage_error(command, fmt::format("config file {}", e.what()));
  }
  po::parsed_options mine(&options);
  const std::string section = command + ".";
  for (const io::IniEntry& entry : entries) {
    po::option option;
    option.string_key = entry.section.empty() ? entry.key : entry.section + "." + entry.key;
    option.value = {entry.value};
    option.original_tokens = {option.string_key, entry.value};
    std::string key = option.string_key;
    if (key.rfind(section, 0) == 0) {
      key = key.substr(section.size());
    } else if (key.find('.') != std::string::npos) {
      continue;  // another command's section
    }
    if (options.find_nothrow(key, /*approx=*/false) == nullptr || key == "config" || key == "help") {
      usage_error(command, fmt::format("config file '{}': unknown option '{}'", origin, option.string_key));
    }
    option.string_key = key;
    option.unregistered = false;
    mine.options.push_back(option);
  }
  return mine;
}

po::parsed_options parse_config(const std::string& path, const std::string& command, const po::options_description& options) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) usage_error(command, fmt::format("config file '{}' does not exist", path));
  // A directory opens as a stream that reads nothing: it would pass as an empty config.
  if (std::filesystem::is_directory(path, error)) usage_error(command, fmt::format("config file '{}' is a directory", path));
  std::ifstream file(path);
  if (!file) usage_error(command, fmt::format("cannot open config file '{}'", path));
  return parse_config_text(std::string(std::istreambuf_iterator<char>(file), {}), path, command, options);
}

}  // namespace

std::optional<po::variables_map> CommandOptions::parse(const std::vector<std::string>& args) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << usage << "\n\n" << description << "\n\n" << options << "\n";
      return std::nullopt;
    }
    if (vm.count("config")) {
      po::store(parse_config(vm["config"].as<std::string>(), command, options), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    usage_error(command, e.what());
  }
  return vm;
}

po::variables_map CommandOptions::parse_ini(const std::string& ini, const std::string& origin) {
  po::variables_map vm;
  try {
    po::store(parse_config_text(ini, origin, command, options), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    usage_error(command, fmt::format("{}: {}", origin, e.what()));
  }
  return vm;
}

uint64_t checked_seed(const std::string& flag, int64_t seed) {
  if (seed < 0) throw UsageError(fmt::format("--{} {} must be >= 0", flag, seed));
  return static_cast<uint64_t>(seed);
}

std::vector<std::string> parse_words(const std::string& text) {
  std::vector<std::string> words;
  for (std::string& word : split(text, ',')) {
    if (!word.empty()) words.push_back(std::move(word));
  }
  return words;
}

namespace {

// The comma-separated entries of a list option, none of them empty ("4,,8" is a typo, not 4,8).
std::vector<std::string> list_entries(const std::string& flag, const std::string& text, const char* example) {
  if (text.empty()) throw UsageError(fmt::format("--{} is empty; expected a list like {}", flag, example));
  std::vector<std::string> words = split(text, ',');
  for (const std::string& word : words) {
    if (word.empty()) throw UsageError(fmt::format("--{} '{}' has an empty entry; expected a list like {}", flag, text, example));
  }
  return words;
}

}  // namespace

std::vector<double> parse_numbers(const std::string& flag, const std::string& text) {
  std::vector<double> numbers;
  for (const std::string& word : list_entries(flag, text, "0,0.5,2")) {
    const std::optional<double> v = parse_number(word);
    if (!v || !std::isfinite(*v)) throw UsageError(fmt::format("--{} '{}': '{}' is not a number", flag, text, word));
    numbers.push_back(*v);
  }
  if (numbers.empty()) throw UsageError(fmt::format("--{} is empty; expected numbers like 0,0.5,2", flag));
  return numbers;
}

std::vector<int64_t> parse_shape(const std::string& flag, const std::string& text) {
  std::vector<int64_t> shape;
  for (const std::string& word : list_entries(flag, text, "64,256")) {
    const std::optional<int64_t> v = parse_integer(word);
    if (!v || *v < 1) throw UsageError(fmt::format("--{} '{}' is not a list of positive integers like 64,256", flag, text));
    shape.push_back(*v);
  }
  // One float32 tensor of this shape must fit in memory: 2^31 elements are 8 GiB.
  constexpr int64_t kMaxElements = int64_t{1} << 31;
  int64_t elements = 1;
  for (const int64_t size : shape) {
    if (size > kMaxElements / elements) {
      throw UsageError(fmt::format("--{} '{}' has more than 2^31 elements (8 GiB as float32); give a smaller shape", flag, text));
    }
    elements *= size;
  }
  if (shape.empty()) throw UsageError(fmt::format("--{} is empty; expected a shape like 64,256", flag));
  return shape;
}

}  // namespace ibn::cli
