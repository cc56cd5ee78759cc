#include "ibn/sweep/platform.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/error.h"
#include "ibn/io/ini.h"

namespace ibn::sweep {
namespace {

constexpr const char* kRerunSuffix = "-rerun";

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() > suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    out.push_back(io::trim(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

std::vector<std::string> names_of(const std::vector<Platform>& platforms) {
  std::vector<std::string> names;
  for (const Platform& p : platforms) names.push_back(p.name);
  return names;
}

// The known platform named `name`, or its rerun when `name` is KNOWN-rerun.
Platform find_platform(const std::string& name) {
  const bool rerun = ends_with(name, kRerunSuffix);
  const std::string base = rerun ? name.substr(0, name.size() - std::string(kRerunSuffix).size()) : name;
  const std::vector<Platform> known = known_platforms();
  const auto found = std::find_if(known.begin(), known.end(), [&](const Platform& p) { return p.name == base; });
  if (found == known.end()) {
    throw UsageError(fmt::format("--platforms: unknown platform '{}'; known: {}, and NAME{} for a rerun of one of them", name,
                                 fmt::join(names_of(known), ", "), kRerunSuffix));
  }
  Platform p = *found;
  if (rerun) {
    p.rerun_of = p.name;
    p.name = name;
  }
  return p;
}

}  // namespace

std::string Platform::settings() const { return fmt::format("threads = {}, dtype = {}, device = {}", threads, dtype, device); }

std::vector<Platform> known_platforms() {
  // The CUDA platform keeps one CPU thread: the host side only launches kernels.
  return {{"t1-fp32", 1, "float32", "cpu", ""},
          {"t2-fp32", 2, "float32", "cpu", ""},
          {"t1-fp64", 1, "float64", "cpu", ""},
          {"t2-fp64", 2, "float64", "cpu", ""},
          {"cuda-fp32", 1, "float32", "cuda", ""}};
}

std::vector<Platform> default_platforms(bool cuda_available) {
  std::string list = "t1-fp32,t2-fp32,t1-fp64,t2-fp64";
  if (cuda_available) list += ",cuda-fp32";
  return parse_platforms(list + ",t1-fp32" + kRerunSuffix, cuda_available);
}

std::vector<Platform> parse_platforms(const std::string& list, bool cuda_available) {
  std::vector<Platform> platforms;
  std::set<std::string> seen;
  for (const std::string& name : split_list(list)) {
    if (name.empty()) throw UsageError(fmt::format("--platforms '{}' has an empty entry", list));
    if (!seen.insert(name).second) throw UsageError(fmt::format("--platforms '{}' names '{}' twice", list, name));
    platforms.push_back(find_platform(name));
  }
  for (const Platform& p : platforms) {
    if (!p.rerun_of.empty() && !seen.count(p.rerun_of)) {
      throw UsageError(fmt::format("--platforms: '{}' repeats '{}', which is not in the list", p.name, p.rerun_of));
    }
    if (p.device == "cuda" && !cuda_available) {
      throw std::runtime_error(fmt::format("platform '{}' needs a CUDA device, and none is available here; leave it out of "
                                           "--platforms", p.name));
    }
  }
  const auto distinct = std::count_if(platforms.begin(), platforms.end(), [](const Platform& p) { return p.rerun_of.empty(); });
  if (distinct < 2) {
    throw UsageError(fmt::format("--platforms '{}' names {} platform{} besides reruns; a spread across platforms needs at least "
                                 "two", list, distinct, distinct == 1 ? "" : "s"));
  }
  return platforms;
}

void check_platform_free(const std::string& experiment_file) {
  for (const io::IniEntry& e : io::read_ini_file(experiment_file)) {
    // With [tune] each platform would choose its own learning rate: the spread across platforms
    // would include that choice.
    if (e.section == "tune") {
      throw UsageError(fmt::format("{}:{}: ibn repro does not take a [tune] section (each platform would choose its own rate); "
                                   "fix lr in [train]", experiment_file, e.line));
    }
    const bool set_by_platform = e.key == "threads" || e.key == "dtype" || e.key == "device";
    if (set_by_platform && (e.section == "train" || e.section == "analyze" || e.section == "grid")) {
      throw UsageError(fmt::format("{}:{}: [{}] sets {}; ibn repro sets threads, dtype and device per platform, so remove it "
                                   "from the experiment", experiment_file, e.line, e.section, e.key));
    }
  }
}

std::string platform_experiment(const std::string& experiment_text, const std::string& experiment_file, const Platform& platform) {
  std::string text = fmt::format("# ibn repro: '{}' on platform {} ({}){}; written by ibn repro.\n", experiment_file, platform.name,
                                 platform.settings(), platform.rerun_of.empty() ? "" : ", a rerun of " + platform.rerun_of);
  text += experiment_text;
  if (!text.empty() && text.back() != '\n') text += '\n';
  text += fmt::format("\n# The platform's settings (ibn repro):\n[train]\nthreads = {}\ndtype = {}\ndevice = {}\n\n"
                      "[analyze]\nthreads = {}\ndevice = {}\n",
                      platform.threads, platform.dtype, platform.device, platform.threads, platform.device);
  return text;
}

}  // namespace ibn::sweep
