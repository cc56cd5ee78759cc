#include "ibn/sweep/sweep.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/norm/spec.h"

namespace ibn::sweep {
namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

struct Entry {
  std::string section, key, value;
  int line = 0;
};

// The .ini dialect of Boost.Program_options: [section], key = value, '#' starts a comment.
std::vector<Entry> read_ini(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw UsageError(fmt::format("cannot open experiment file '{}'", file));
  std::vector<Entry> entries;
  std::string section, raw;
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string text = trim(raw.substr(0, raw.find('#')));
    if (text.empty()) continue;
    if (text.front() == '[') {
      if (text.back() != ']') throw UsageError(fmt::format("{}:{}: malformed section '{}'", file, line, text));
      section = trim(text.substr(1, text.size() - 2));
      continue;
    }
    const size_t eq = text.find('=');
    if (eq == std::string::npos || trim(text.substr(0, eq)).empty()) {
      throw UsageError(fmt::format("{}:{}: expected 'key = value', found '{}'", file, line, text));
    }
    entries.push_back({section, trim(text.substr(0, eq)), trim(text.substr(eq + 1)), line});
  }
  return entries;
}

std::vector<std::string> alternatives(const std::string& value) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t bar = value.find('|', start);
    out.push_back(trim(value.substr(start, bar == std::string::npos ? std::string::npos : bar - start)));
    if (bar == std::string::npos) break;
    start = bar + 1;
  }
  return out;
}

std::string safe(const std::string& text) {
  std::string out;
  for (const char c : text) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '-';
  return out;
}

}  // namespace

Sweep load_sweep(const std::string& file, const std::string& out_override) {
  const std::vector<Entry> entries = read_ini(file);
  Sweep sweep;
  sweep.file = file;
  sweep.name = std::filesystem::path(file).stem().string();
  std::vector<std::pair<std::string, std::vector<std::string>>> grid;
  std::string train_text, analyze_text;
  std::set<std::string> train_keys;
  for (const Entry& e : entries) {
    const auto fail = [&](const std::string& why) { throw UsageError(fmt::format("{}:{}: {}", file, e.line, why)); };
    if (e.section == "sweep") {
      if (e.key == "name") {
        sweep.name = e.value;
      } else if (e.key == "out") {
        sweep.out = e.value;
      } else {
        fail(fmt::format("unknown key '{}' in [sweep] (name, out)", e.key));
      }
    } else if (e.section == "grid") {
      for (const auto& [key, values] : grid) {
        if (key == e.key) fail(fmt::format("grid key '{}' given twice", e.key));
      }
      std::vector<std::string> values = alternatives(e.value);
      if (std::any_of(values.begin(), values.end(), [](const std::string& v) { return v.empty(); })) {
        fail(fmt::format("grid key '{}' has an empty alternative in '{}'", e.key, e.value));
      }
      grid.emplace_back(e.key, values);
    } else if (e.section == "train") {
      train_text += fmt::format("{} = {}\n", e.key, e.value);
      train_keys.insert(e.key);
    } else if (e.section == "analyze") {
      analyze_text += fmt::format("{} = {}\n", e.key, e.value);
    } else if (e.section == "report") {
      sweep.report_options.emplace_back(e.key, e.value);
    } else {
      fail(fmt::format("'{} = {}' outside the sections [sweep], [grid], [train], [analyze], [report]", e.key, e.value));
    }
  }
  if (grid.empty()) throw UsageError(fmt::format("'{}' declares no [grid]: nothing to sweep", file));
  for (const auto& [key, values] : grid) {
    if (train_keys.count(key)) throw UsageError(fmt::format("'{}': '{}' is both in [grid] and in [train]", file, key));
    sweep.grid_keys.push_back(key);
  }
  if (!out_override.empty()) sweep.out = out_override;
  if (sweep.out.empty()) sweep.out = "runs/" + sweep.name;

  // The Cartesian product, first key slowest; λ joins IBNorm variants only, so the other
  // norms' points repeat across λ and are kept once.
  std::vector<size_t> at(grid.size(), 0);
  std::set<std::string> seen;
  while (true) {
    std::map<std::string, std::string> chosen;
    for (size_t k = 0; k < grid.size(); ++k) chosen[grid[k].first] = grid[k].second[at[k]];
    if (chosen.count("lambda")) {
      const auto norm = chosen.count("norm") ? chosen["norm"] : std::string();
      bool ibnorm = false;
      try {
        ibnorm = !norm.empty() && norm != "none" && norm::parse_norm_spec(norm).is_ibnorm();
      } catch (const UsageError& e) {
        throw UsageError(fmt::format("'{}': grid norm '{}': {}", file, norm, e.what()));
      }
      if (!ibnorm) chosen["lambda"] = "";
    }
    Point p;
    std::string id;
    std::string train = train_text;
    for (const auto& [key, values] : grid) {
      const std::string& v = chosen[key];
      p.settings.emplace_back(key, v);
      if (key == "lambda") {
        if (!v.empty()) id += "_lambda" + safe(v);
      } else if (key == "norm") {
        id += "_" + safe(v);
      } else {
        id += "_" + safe(key) + safe(v);
      }
      if (key != "lambda" && key != "norm") train += fmt::format("{} = {}\n", key, v);
    }
    if (chosen.count("norm")) {
      const std::string& l = chosen["lambda"];
      train += fmt::format("norm = {}{}\n", chosen["norm"], l.empty() ? "" : ":lambda=" + l);
    }
    p.id = id.empty() ? "point" : id.substr(1);
    p.ini = "[train]\n" + train + "\n[analyze]\n" + analyze_text;
    if (seen.insert(p.id).second) {
      p.index = static_cast<int64_t>(sweep.points.size());
      sweep.points.push_back(std::move(p));
    }
    size_t k = grid.size();
    while (k > 0 && ++at[k - 1] == grid[k - 1].second.size()) at[--k] = 0;
    if (k == 0) break;
  }
  return sweep;
}

std::pair<int64_t, int64_t> parse_shard(const std::string& text) {
  const size_t slash = text.find('/');
  char* end = nullptr;
  const long long i = slash == std::string::npos ? -1 : std::strtoll(text.substr(0, slash).c_str(), &end, 10);
  const bool i_ok = slash != std::string::npos && slash > 0 && *end == '\0';
  const long long n = i_ok ? std::strtoll(text.substr(slash + 1).c_str(), &end, 10) : 0;
  if (!i_ok || *end != '\0' || slash + 1 == text.size() || n < 1 || i < 0 || i >= n) {
    throw UsageError(fmt::format("--shard '{}' must be i/n with 0 <= i < n (e.g. 0/4, or $SLURM_ARRAY_TASK_ID/4)", text));
  }
  return {i, n};
}

std::string point_directory(const Sweep& sweep, const Point& point) { return sweep.out + "/points/" + point.id; }

State point_state(const Sweep& sweep, const Point& point, std::string* error) {
  const std::string dir = point_directory(sweep, point);
  if (std::filesystem::exists(dir + "/done")) return State::done;
  std::ifstream failed(dir + "/failed");
  if (failed) {
    if (error != nullptr) std::getline(failed, *error);
    return State::failed;
  }
  return State::pending;
}

}  // namespace ibn::sweep
