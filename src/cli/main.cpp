// ibn: one binary, git-style subcommands. Exit codes: 0 ok, 1 failure, 2 bad usage.
#include <cstdlib>
#include <exception>
#include <new>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "command.h"
#include <c10/util/Exception.h>

#include "ibn/device.h"
#include "ibn/build_info.h"
#include "ibn/error.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
// Sizes come from options; the failing allocation cannot tell which one was too large.
constexpr const char* kOutOfMemoryHint =
    "(the sizes asked for do not fit in memory: lower --n, --shape, --batch, --max-samples or the model's widths)";

void print_help() {
  std::cout << "usage: ibn [--help] [--version] <command> [options]\n\n"
               "ibnorm: normalization layers, mutual information and the information bottleneck.\n\n"
               "Commands:\n";
  for (const auto& command : ibn::cli::commands()) {
    std::cout << fmt::format("  {:<13} {}\n", command.name, command.summary);
  }
  std::cout << "\n'ibn <command> --help' describes a command's options; every option can also come\n"
               "from an .ini file with --config FILE (the command line wins).\n";
}

void print_version() {
  const ibn::BuildInfo& info = ibn::build_info();
  std::cout << fmt::format("ibn {} (commit {})\nLibTorch {}, built with CUDA: {}, CUDA device: {}\n",
                           info.version, info.git_commit, info.torch_version,
                           info.torch_has_cuda ? "yes" : "no", ibn::cuda_device_summary());
}

int dispatch(const std::vector<std::string>& args) {
  if (args.empty()) {
    print_help();
    return kExitUsage;
  }
  const std::string& first = args[0];
  if (first == "--help" || first == "-h" || first == "help") {
    print_help();
    return kExitOk;
  }
  if (first == "--version" || first == "version") {
    print_version();
    return kExitOk;
  }
  for (const auto& command : ibn::cli::commands()) {
    if (command.name == first) return command.run({args.begin() + 1, args.end()});
  }
  std::string names;
  for (const auto& command : ibn::cli::commands()) names += (names.empty() ? "" : ", ") + command.name;
  throw ibn::UsageError(fmt::format("unknown command '{}'; expected one of: {} (see 'ibn --help')", first, names));
}

// "ibn: ", or "ibn: rank R of W: " in a data-parallel worker, whose errors interleave with the
// other workers'.
std::string error_prefix() {
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  if (rank == nullptr || world == nullptr || std::string(world) == "1") return "ibn: ";
  return fmt::format("ibn: rank {} of {}: ", rank, world);
}

}  // namespace

int main(int argc, char** argv) {
  ibn::keep_freed_memory();
  try {
    ibn::set_compute_threads(0);  // OpenBLAS on the calling thread in every command (see its header)
    return dispatch({argv + 1, argv + argc});
  } catch (const ibn::UsageError& e) {
    std::cerr << error_prefix() << e.what() << "\n";
    return kExitUsage;
  } catch (const c10::Error& e) {
    // LibTorch's own messages carry a backtrace after the first line; users need the first.
    const std::string what = e.what_without_backtrace();
    const std::string first = what.substr(0, what.find('\n'));
    std::cerr << error_prefix() << "error: " << first
              << (first.find("allocate") != std::string::npos ? std::string(" ") + kOutOfMemoryHint : "") << "\n";
    return kExitFailure;
  } catch (const std::bad_alloc&) {
    std::cerr << "ibn: error: out of memory " << kOutOfMemoryHint << "\n";
    return kExitFailure;
  } catch (const std::exception& e) {
    std::cerr << error_prefix() << "error: " << e.what() << "\n";
    return kExitFailure;
  }
}
