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
#include "ibn/io/hdf5.h"
#include "ibn/train/run_directory.h"
#include "ibn/train/train.h"
#include <fmt/ranges.h>
#include <cmath>
#include <limits>

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

// Grid keys that set an IBNorm variant's strength: λ itself, or the Gaussian contraction κ
// that λ is chosen to reach. They join the IBNorm variants only.
bool is_strength_key(const std::string& key) { return key == "lambda" || key == "kappa"; }

// A point's settings in readable form: "ibnorm-s_lambda0.5_seed1".
std::string readable_id(const Settings& settings) {
  std::string id;
  for (const auto& [key, value] : settings) {
    if (is_strength_key(key) && value.empty()) continue;  // λ or κ does not apply to this norm
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
void assign_ids(std::vector<Point>& points, const std::string& file) {
  std::map<std::string, int> readers;
  for (const Point& p : points) ++readers[readable_id(p.settings)];
  std::map<std::string, const Point*> owner;
  for (Point& p : points) {
    const std::string readable = readable_id(p.settings);
    p.id = final_id(readable, p.settings, readers[readable] > 1);
    const auto [other, inserted] = owner.emplace(p.id, &p);
    if (!inserted) {
      throw UsageError(fmt::format("'{}': grid points {} and {} get the same id '{}'", file, other->second->index, p.index, p.id));
    }
  }
}


Settings without_seed(const Settings& settings) {
  Settings out;
  for (const auto& kv : settings) {
    if (kv.first != "seed") out.push_back(kv);
  }
  return out;
}

// Each point's setting (its settings less the seed) as a key: readable, and fingerprinted where
// two distinct settings would read the same, so that no two settings share a tuned rate.
void assign_setting_keys(std::vector<Point>& points) {
  std::map<Settings, std::string> readable;
  std::map<std::string, int> readers;
  for (const Point& p : points) {
    const Settings s = without_seed(p.settings);
    if (readable.emplace(s, readable_id(s)).second) ++readers[readable[s]];
  }
  for (Point& p : points) {
    const Settings s = without_seed(p.settings);
    p.setting = readers[readable[s]] > 1 ? final_id(readable[s], s, true) : readable[s];
  }
}

// Tuning seeds must not be seeds of the runs compared: a run would have chosen its own rate.
void check_seeds_apart(const std::vector<std::pair<std::string, std::vector<std::string>>>& grid, const Settings& train,
                       const TuneConfig& tune, const std::string& file) {
  std::vector<std::string> seeds;
  for (const auto& [key, values] : grid) {
    if (key == "seed") seeds = values;
  }
  for (const auto& [key, value] : train) {
    if (key == "seed") seeds.push_back(value);
  }
  for (const std::string& seed : seeds) {
    const std::optional<int64_t> n = parse_integer(seed);
    if (n && *n >= kFirstTuningSeed && *n < kFirstTuningSeed + tune.seeds) {
      throw UsageError(fmt::format("'{}': seed {} is also a tuning seed ({}–{}); the runs compared must not be those that "
                                   "chose their rate", file, seed, kFirstTuningSeed, kFirstTuningSeed + tune.seeds - 1));
    }
  }
}

// Sets `key` in an ordered option list: replaces its value where it is, else appends it.
void set_option(Settings& options, const std::string& key, const std::string& value) {
  for (auto& [k, v] : options) {
    if (k == key) {
      v = value;
      return;
    }
  }
  options.emplace_back(key, value);
}

TuneConfig read_tune_section(const std::vector<Entry>& entries, const std::string& file) {
  TuneConfig tune;
  std::set<std::string> seen;
  for (const Entry& e : entries) {
    const auto fail = [&](const std::string& why) { throw UsageError(fmt::format("{}:{}: [tune] {}", file, e.line, why)); };
    if (!seen.insert(e.key).second) fail(fmt::format("'{}' is given twice", e.key));
    const auto whole_number = [&](int64_t low, int64_t high) {
      const std::optional<int64_t> n = parse_integer(e.value);
      if (!n || *n < low || *n > high) fail(fmt::format("{} = '{}' must be a whole number in [{}, {}]", e.key, e.value, low, high));
      return *n;
    };
    if (e.key == "lr") {
      tune.rates = alternatives(e.value);
      if (std::any_of(tune.rates.begin(), tune.rates.end(), [](const std::string& v) { return v.empty(); })) {
        fail(fmt::format("lr has an empty alternative in '{}'", e.value));
      }
      if (std::set<std::string>(tune.rates.begin(), tune.rates.end()).size() != tune.rates.size()) {
        fail(fmt::format("lr = '{}' names a rate twice", e.value));
      }
    } else if (e.key == "seeds") {
      constexpr int64_t kMaxTuningSeeds = 100;
      tune.seeds = whole_number(1, kMaxTuningSeeds);
    } else if (e.key == "validation") {
      tune.validation = parse_number(e.value).value_or(0.0);  // not a number: refused as out of range
      if (!(tune.validation > 0 && tune.validation < 1)) {
        fail(fmt::format("validation = '{}' must be a fraction in (0, 1) of the training samples", e.value));
      }
    } else if (e.key == "epochs") {
      tune.epochs = std::to_string(whole_number(1, 1000000));
    } else if (e.key == "select") {
      if (e.value != "loss" && e.value != "accuracy") fail(fmt::format("select = '{}' must be loss or accuracy", e.value));
      tune.select = e.value;
    } else {
      fail(fmt::format("unknown key '{}' (lr, seeds, validation, epochs, select)", e.key));
    }
  }
  if (tune.rates.empty()) throw UsageError(fmt::format("'{}': [tune] needs lr = RATE | RATE | ...: the rates to choose from", file));
  return tune;
}

// Every setting of the grid (in order of first appearance) x rate x tuning seed: the grid
// point's training options, at that rate and seed, evaluated on the validation split, with no
// dumps and no checkpoints between (tuning reads only the final metrics).
std::vector<Point> tuning_points(const Sweep& sweep) {
  std::vector<Point> out;
  std::set<std::string> done;
  for (const Point& p : sweep.points) {
    if (!done.insert(p.setting).second) continue;
    for (const std::string& rate : sweep.tune->rates) {
      for (int64_t k = 0; k < sweep.tune->seeds; ++k) {
        Point t;
        t.group = "tune";
        t.setting = p.setting;
        t.settings = without_seed(p.settings);
        const std::string seed = std::to_string(kFirstTuningSeed + k);
        t.settings.emplace_back("lr", rate);
        t.settings.emplace_back("seed", seed);
        t.train = p.train;
        set_option(t.train, "lr", rate);
        set_option(t.train, "seed", seed);
        set_option(t.train, "validation", fmt::format("{}", sweep.tune->validation));
        set_option(t.train, "dump-epochs", "none");
        set_option(t.train, "checkpoint-every", "0");
        if (!sweep.tune->epochs.empty()) set_option(t.train, "epochs", sweep.tune->epochs);
        t.index = static_cast<int64_t>(out.size());
        out.push_back(std::move(t));
      }
    }
  }
  return out;
}

// A finished tuning run's final validation loss and accuracy, from its store's metrics.
std::pair<double, double> final_validation(const std::string& run) {
  const std::string store = train::RunDirectory{run}.store();
  const std::vector<double> loss = io::read_doubles(store, "/metrics/test_loss");
  const std::vector<double> accuracy = io::read_doubles(store, "/metrics/test_accuracy");
  if (loss.empty() || accuracy.empty()) throw DataError(fmt::format("'{}' holds no metrics", store));
  return {loss.back(), accuracy.back()};
}

}  // namespace

std::string Point::ini() const {
  std::string text = "[train]\n";
  for (const auto& [key, value] : train) text += fmt::format("{} = {}\n", key, value);
  if (group == "points") text += "\n[analyze]\n" + analyze;
  return text;
}

const TunedSetting* Tuning::find(const std::string& setting) const {
  for (const TunedSetting& s : settings) {
    if (s.setting == setting) return &s;
  }
  return nullptr;
}

std::string Tuning::budget() const {
  const std::optional<int64_t> tune_epochs = parse_integer(epochs), run_epochs = parse_integer(grid_epochs);
  const bool shorter = tune_epochs && run_epochs && *tune_epochs < *run_epochs;
  const std::string seeds = config.seeds == 1 ? fmt::format("seed {}", kFirstTuningSeed)
                                              : fmt::format("seeds {}–{}", kFirstTuningSeed, kFirstTuningSeed + config.seeds - 1);
  return fmt::format("every setting got the same budget: {} learning rate{} ({}) × {} tuning seed{} ({}) × {} epochs{}, "
                     "each run trained on the training samples less a validation split of {} of them and evaluated on it "
                     "(the test split unused); the rate with the {} was chosen{}, and the grid's seeds ran at it on the whole "
                     "training split",
                     config.rates.size(), config.rates.size() == 1 ? "" : "s", fmt::join(config.rates, ", "), config.seeds,
                     config.seeds == 1 ? "" : "s", seeds, epochs,
                     shorter ? fmt::format(" (the grid's runs: {}; tuning shorter than the runs favours rates that learn fast)",
                                           grid_epochs)
                             : "",
                     config.validation,
                     config.select == "loss" ? "lowest mean final validation loss" : "highest mean final validation accuracy",
                     config.seeds == 1 ? " (from one run per rate)" : "");
}

bool is_divergence(const std::string& error) { return error.find("the training loss became") != std::string::npos; }

Tuning choose_rates(const Sweep& sweep) {
  if (!sweep.tune) throw std::logic_error("choose_rates: the sweep has no [tune] section");
  Tuning tuning;
  tuning.config = *sweep.tune;
  const Settings& first = sweep.tune_points.front().train;
  const std::string default_epochs = std::to_string(train::TrainConfig().epochs);
  tuning.epochs = option_value(first, "epochs", default_epochs);
  tuning.grid_epochs = option_value(sweep.points.front().train, "epochs", default_epochs);
  for (const Point& t : sweep.tune_points) {
    TunedSetting* s = const_cast<TunedSetting*>(tuning.find(t.setting));
    if (s == nullptr) {
      tuning.settings.push_back({t.setting, {}, {}, ""});
      s = &tuning.settings.back();
      for (const auto& kv : t.settings) {
        if (kv.first != "lr" && kv.first != "seed") s->settings.push_back(kv);
      }
      for (const std::string& rate : tuning.config.rates) s->rates.push_back({rate});
    }
    RateResult& r = *std::find_if(s->rates.begin(), s->rates.end(), [&](const RateResult& x) { return x.rate == option_value(t.settings, "lr", ""); });
    std::string error;
    const State state = point_state(sweep, t, &error);
    if (state == State::pending) {
      throw UsageError(fmt::format("tuning point '{}' has not run yet; run the sweep until tuning is done", t.id));
    }
    if (state == State::failed && !is_divergence(error)) {
      throw UsageError(fmt::format("tuning point '{}' failed: {}; running the sweep again retries it", t.id, error));
    }
    if (state == State::failed) {
      ++r.diverged;
      continue;
    }
    const auto [loss, accuracy] = final_validation(point_directory(sweep, t));
    if (!std::isfinite(loss)) {
      ++r.diverged;
      continue;
    }
    // Running sums; divided below.
    r.validation_loss += loss;
    r.validation_accuracy += accuracy;
    ++r.finished;
  }
  const bool by_loss = tuning.config.select == "loss";
  for (TunedSetting& s : tuning.settings) {
    const RateResult* best = nullptr;
    for (RateResult& r : s.rates) {
      const double n = static_cast<double>(r.finished);
      r.validation_loss = r.finished > 0 ? r.validation_loss / n : std::numeric_limits<double>::quiet_NaN();
      r.validation_accuracy = r.finished > 0 ? r.validation_accuracy / n : std::numeric_limits<double>::quiet_NaN();
      if (r.diverged > 0 || r.finished == 0) continue;
      // Strictly better only: on a tie the rate listed first stays.
      if (best == nullptr || (by_loss ? r.validation_loss < best->validation_loss : r.validation_accuracy > best->validation_accuracy)) {
        best = &r;
      }
    }
    if (best == nullptr) {
      throw UsageError(fmt::format("setting '{}': every learning rate diverged in tuning (see {}/tune/*/failed); try smaller rates",
                                   s.setting, sweep.out));
    }
    s.chosen = best->rate;
  }
  return tuning;
}

void apply_rates(Sweep& sweep, const Tuning& tuning) {
  for (Point& p : sweep.points) {
    const TunedSetting* s = tuning.find(p.setting);
    if (s == nullptr) throw std::logic_error(fmt::format("no tuned rate for setting '{}'", p.setting));
    set_option(p.train, "lr", s->chosen);
  }
}

std::string option_value(const Settings& options, const std::string& key, const std::string& absent) {
  for (const auto& [k, v] : options) {
    if (k == key) return v;
  }
  return absent;
}

bool is_plain_point_id(const std::string& id) {
  return !id.empty() && id != "." && id != ".." && id.find('/') == std::string::npos && id.find('\0') == std::string::npos;
}

namespace {

Sweep sweep_from_entries(const std::vector<Entry>& entries, const std::string& file, const std::string& out_override) {
  Sweep sweep;
  sweep.file = file;
  sweep.name = std::filesystem::path(file).stem().string();
  std::vector<std::pair<std::string, std::vector<std::string>>> grid;
  Settings train_options;
  std::string analyze_text;
  std::set<std::string> train_keys;
  std::vector<Entry> tune_entries;
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
      train_options.emplace_back(e.key, e.value);
      train_keys.insert(e.key);
    } else if (e.section == "analyze") {
      analyze_text += fmt::format("{} = {}\n", e.key, e.value);
    } else if (e.section == "report") {
      sweep.report_options.emplace_back(e.key, e.value);
    } else if (e.section == "tune") {
      tune_entries.push_back(e);
    } else {
      fail(fmt::format("'{} = {}' outside the sections [sweep], [grid], [train], [analyze], [report], [tune]", e.key, e.value));
    }
  }
  if (grid.empty()) throw UsageError(fmt::format("'{}' declares no [grid]: nothing to sweep", file));
  for (const auto& [key, values] : grid) {
    if (train_keys.count(key)) throw UsageError(fmt::format("'{}': '{}' is both in [grid] and in [train]", file, key));
    sweep.grid_keys.push_back(key);
  }
  if (!out_override.empty()) sweep.out = out_override;
  if (sweep.out.empty()) sweep.out = "runs/" + sweep.name;

  if (std::count_if(grid.begin(), grid.end(), [](const auto& g) { return is_strength_key(g.first); }) > 1) {
    throw UsageError(fmt::format("'{}': [grid] gives both lambda and kappa; κ sets λ, so give one of them", file));
  }
  // The Cartesian product, first key slowest; λ (or κ) joins IBNorm variants only, so the
  // other norms' points repeat across it and are kept once.
  std::vector<size_t> at(grid.size(), 0);
  std::set<Settings> seen;
  while (true) {
    std::map<std::string, std::string> chosen;
    for (size_t k = 0; k < grid.size(); ++k) chosen[grid[k].first] = grid[k].second[at[k]];
    std::string strength_key;
    for (const char* key : {"lambda", "kappa"}) {
      if (chosen.count(key)) strength_key = key;
    }
    if (!strength_key.empty()) {
      const auto norm = chosen.count("norm") ? chosen["norm"] : std::string();
      bool ibnorm = false;
      try {
        ibnorm = !norm.empty() && norm != "none" && norm::parse_norm_spec(norm).is_ibnorm();
      } catch (const UsageError& e) {
        throw UsageError(fmt::format("'{}': grid norm '{}': {}", file, norm, e.what()));
      }
      if (!ibnorm) chosen[strength_key] = "";
    }
    Point p;
    p.train = train_options;
    for (const auto& [key, values] : grid) {
      const std::string& v = chosen[key];
      p.settings.emplace_back(key, v);
      if (!is_strength_key(key) && key != "norm") p.train.emplace_back(key, v);
    }
    if (chosen.count("norm")) {
      const std::string strength = strength_key.empty() ? "" : chosen[strength_key];
      p.train.emplace_back("norm", chosen["norm"] + (strength.empty() ? "" : ":" + strength_key + "=" + strength));
    }
    p.analyze = analyze_text;
    // The same settings twice are one point: λ repeats for the norms it does not apply to.
    if (seen.insert(p.settings).second) {
      p.index = static_cast<int64_t>(sweep.points.size());
      sweep.points.push_back(std::move(p));
    }
    size_t k = grid.size();
    while (k > 0 && ++at[k - 1] == grid[k - 1].second.size()) at[--k] = 0;
    if (k == 0) break;
  }
  assign_ids(sweep.points, file);
  assign_setting_keys(sweep.points);
  if (!tune_entries.empty()) {
    sweep.tune = read_tune_section(tune_entries, file);
    check_seeds_apart(grid, train_options, *sweep.tune, file);
    if (train_keys.count("lr")) {
      throw UsageError(fmt::format("'{}': lr is in [train] and [tune]; [tune] chooses it, so remove it from [train]", file));
    }
    for (const auto& [key, values] : grid) {
      if (key == "lr") throw UsageError(fmt::format("'{}': lr is in [grid] and [tune]; give its values in one of them", file));
    }
    sweep.tune_points = tuning_points(sweep);
    assign_ids(sweep.tune_points, file);
  }
  return sweep;
}

}  // namespace

Sweep load_sweep(const std::string& file, const std::string& out) { return sweep_from_entries(read_ini(file), file, out); }

Sweep load_sweep_text(const std::string& text, const std::string& file, const std::string& out) {
  return sweep_from_entries(io::parse_ini(text, file), file, out);
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

std::string point_directory(const Sweep& sweep, const Point& point) { return sweep.out + "/" + point.group + "/" + point.id; }

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
