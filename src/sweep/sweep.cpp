#include "ibn/sweep/sweep.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/io/csv.h"
#include "ibn/io/ini.h"
#include "ibn/norm/spec.h"
#include "ibn/spec_string.h"

namespace ibn::sweep {
namespace {

using io::trim;

using Entry = io::IniEntry;

std::vector<Entry> read_ini(const std::string& file) {
  if (!std::filesystem::exists(file)) throw UsageError(fmt::format("cannot open experiment file '{}'", file));
  return io::read_ini_file(file);
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

using Settings = std::vector<std::pair<std::string, std::string>>;

// Characters a point id keeps as they are; others become '-' (as ids have always been made, so
// the directories of existing sweeps keep their names).
bool plain_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-'; }

std::string readable(const std::string& text) {
  std::string out;
  for (const char c : text) out += plain_char(c) ? c : '-';
  return out;
}

// FNV-1a, 64 bits: a short, stable fingerprint of a point's exact settings.
uint64_t fingerprint(const Settings& settings) {
  uint64_t hash = 14695981039346656037ull;
  for (const auto& [key, value] : settings) {
    for (const std::string& text : {key, value}) {
      for (const char c : text + '\0') {
        hash ^= static_cast<unsigned char>(c);
        hash *= 1099511628211ull;
      }
    }
  }
  return hash;
}

constexpr size_t kMaxReadableId = 96;

// A point's settings in readable form: "ibnorm-s_lambda0.5_seed1".
std::string readable_id(const Settings& settings) {
  std::string id;
  for (const auto& [key, value] : settings) {
    if (key == "lambda" && value.empty()) continue;  // λ does not apply to this norm
    id += "_" + readable(key == "norm" ? value : key + value);
  }
  return id.empty() ? "point" : id.substr(1);
}

// The readable id, or, where it is no safe directory name (".", "..", hidden, option-like, too
// long) or another point of the grid has it too (1e-2 and 1e+2 both read "1e-2"), the readable
// prefix and a fingerprint of the exact settings.
std::string final_id(const std::string& readable, const Settings& settings, bool shared) {
  const bool safe = readable.front() != '.' && readable.front() != '-' && readable.size() <= kMaxReadableId;
  if (safe && !shared) return readable;
  std::string prefix = readable.substr(0, kMaxReadableId);
  prefix.erase(0, std::min(prefix.find_first_not_of(".-"), prefix.size()));
  return fmt::format("{}{}h{:016x}", prefix, prefix.empty() ? "" : "-", fingerprint(settings));
}

// Directory names for every point: readable where that is safe and unshared, else
// fingerprinted; two points with one id would share a directory, and that is an error.
void assign_ids(Sweep& sweep, const std::string& file) {
  std::map<std::string, int> readers;
  for (const Point& p : sweep.points) ++readers[readable_id(p.settings)];
  std::map<std::string, const Point*> owner;
  for (Point& p : sweep.points) {
    const std::string readable = readable_id(p.settings);
    p.id = final_id(readable, p.settings, readers[readable] > 1);
    const auto [other, inserted] = owner.emplace(p.id, &p);
    if (!inserted) {
      throw UsageError(fmt::format("'{}': grid points {} and {} get the same id '{}'", file, other->second->index, p.index, p.id));
    }
  }
}

}  // namespace

bool is_plain_point_id(const std::string& id) {
  return !id.empty() && id != "." && id != ".." && id.find('/') == std::string::npos && id.find('\0') == std::string::npos;
}

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
  std::set<Settings> seen;
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
    std::string train = train_text;
    for (const auto& [key, values] : grid) {
      const std::string& v = chosen[key];
      p.settings.emplace_back(key, v);
      if (key != "lambda" && key != "norm") train += fmt::format("{} = {}\n", key, v);
    }
    if (chosen.count("norm")) {
      const std::string& l = chosen["lambda"];
      train += fmt::format("norm = {}{}\n", chosen["norm"], l.empty() ? "" : ":lambda=" + l);
    }
    p.ini = "[train]\n" + train + "\n[analyze]\n" + analyze_text;
    // The same settings twice are one point: λ repeats for the norms it does not apply to.
    if (seen.insert(p.settings).second) {
      p.index = static_cast<int64_t>(sweep.points.size());
      sweep.points.push_back(std::move(p));
    }
    size_t k = grid.size();
    while (k > 0 && ++at[k - 1] == grid[k - 1].second.size()) at[--k] = 0;
    if (k == 0) break;
  }
  assign_ids(sweep, file);
  return sweep;
}

std::pair<int64_t, int64_t> parse_shard(const std::string& text) {
  const auto fail = [&] {
    throw UsageError(fmt::format("--shard '{}' must be i/n with 0 <= i < n (e.g. 0/4, or $SLURM_ARRAY_TASK_ID/4)", text));
  };
  const size_t slash = text.find('/');
  if (slash == std::string::npos) fail();
  // Each side parsed from a string that outlives the parse (`end` points into it).
  const auto whole_number = [&](const std::string& word) {
    const std::optional<int64_t> v = parse_integer(word);
    if (!v || *v < 0) fail();
    return *v;
  };
  const std::string i_text = text.substr(0, slash), n_text = text.substr(slash + 1);
  const int64_t i = whole_number(i_text), n = whole_number(n_text);
  if (n < 1 || i >= n) fail();
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

std::vector<Point> read_points(const std::string& sweep_dir) {
  const std::string path = sweep_dir + "/points.csv";
  std::ifstream in(path);
  if (!in) throw UsageError(fmt::format("'{}' is not a sweep directory (no points.csv)", sweep_dir));
  std::string header, line;
  std::getline(in, header);
  const std::vector<std::string> keys = io::csv_fields(header);
  if (keys.size() < 2 || keys[0] != "index" || keys[1] != "id") {
    throw DataError(fmt::format("'{}' does not start with the columns index,id", path));
  }
  std::vector<Point> points;
  for (int64_t number = 2; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const std::vector<std::string> f = io::csv_fields(line);
    if (f.size() != keys.size() || !is_plain_point_id(f[1])) {
      throw DataError(fmt::format("'{}':{} is malformed: expected {} fields with a point id second", path, number, keys.size()));
    }
    Point p;
    p.index = io::csv_integer(f[0], fmt::format("{}:{}", path, number));
    p.id = f[1];
    for (size_t k = 2; k < keys.size(); ++k) p.settings.emplace_back(keys[k], f[k]);
    points.push_back(std::move(p));
  }
  return points;
}

}  // namespace ibn::sweep
