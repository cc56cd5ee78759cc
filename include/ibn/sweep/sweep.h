#pragma once
// A sweep: an experiment file (experiments/X.ini) declaring a grid over any `ibn train` option,
// with λ and the normalizer variant handled as a pair (λ applies to IBNorm variants only; the
// others run once per remaining grid point). `kappa` in place of `lambda` gives each IBNorm
// variant the λ whose Gaussian variance contraction is κ (norm spec key kappa=K), so the
// variants compare at equal compression. Each point is a run directory SWEEP/points/<id>
// trained, then analyzed; a file `done` marks a finished point, `failed` a failed one.
//
//   [sweep]   name = default            out = runs/default
//   [grid]    norm = layernorm | ibnorm-s | ibnorm-t      lambda = 0.5 | 2      seed = 0 | 1
//   [train]   any `ibn train` option, the same for every point
//   [analyze] any `ibn analyze` option (repeat `estimator = ...` for several)
//   [report]  any `ibn report` option
//   [tune]    lr = 0.001 | 0.003 | 0.01   seeds = 1   validation = 0.1   epochs = 5   select = loss
//
// With [tune], every setting (a grid point without its seed) first trains once per rate and
// tuning seed on the training samples less a held-out validation split (SWEEP/tune/<id>, never
// the test split), the same budget for every setting; the rate with the best mean final
// validation loss (or accuracy) is chosen per setting, and the grid's seeds then run at it.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ibn::sweep {

using Settings = std::vector<std::pair<std::string, std::string>>;

struct Point {
  int64_t index = 0;  // position in its list (shards split by it)
  std::string id;     // directory name, e.g. "ibnorm-s_lambda0.5_seed1"
  Settings settings;  // grid key -> value; "lambda"/"kappa" empty when n/a; tuning points add lr
  std::string group = "points";  // its directory's parent in the sweep: points, or tune
  std::string setting;           // the settings without the seed, as an id: what tuning chooses a rate for
  Settings train;                // its [train] options, in order
  std::string analyze;           // its [analyze] section's lines; a tuning point is not analyzed
  std::string ini() const;       // the point's config file: [train] and [analyze]
};

// Tuning seeds are 1000, 1001, ...: not the grid's seeds, so no run that is compared was also
// used to choose its own rate.
constexpr int64_t kFirstTuningSeed = 1000;

struct TuneConfig {
  std::vector<std::string> rates;  // the learning rates tried, as written
  int64_t seeds = 1;               // runs per setting and rate
  double validation = 0.1;         // fraction of the training samples held out to evaluate on
  std::string epochs;              // of each tuning run; empty: [train]'s
  std::string select = "loss";     // loss: the lowest mean final validation loss; accuracy: the highest accuracy
};

struct Sweep {
  std::string name;
  std::string file;  // the experiment file
  std::string out;   // the sweep directory
  std::vector<std::string> grid_keys;
  std::vector<Point> points;
  std::vector<std::pair<std::string, std::string>> report_options;
  std::optional<TuneConfig> tune;  // the [tune] section
  std::vector<Point> tune_points;  // every setting x rate x tuning seed; empty without [tune]
};

// What tuning found: per setting, each rate's mean final validation metrics over the tuning
// seeds, and the chosen rate. A rate with a diverged run (training stopped at a NaN or
// infinite loss) is never chosen.
struct RateResult {
  std::string rate;
  int64_t finished = 0, diverged = 0;  // tuning runs
  double validation_loss = 0, validation_accuracy = 0;  // means over the finished runs; NaN if none
};
struct TunedSetting {
  std::string setting;  // Point::setting
  Settings settings;    // the grid's keys and values without the seed
  std::vector<RateResult> rates;
  std::string chosen;
};
struct Tuning {
  TuneConfig config;
  std::string epochs;       // of each tuning run, resolved
  std::string grid_epochs;  // of the grid's runs
  std::vector<TunedSetting> settings;
  const TunedSetting* find(const std::string& setting) const;
  std::string budget() const;  // one sentence for people: what every setting got
};

// Reads the finished tuning points and chooses each setting's rate. ibn::UsageError when a
// tuning point has not run yet or failed other than by diverging, or when every rate of a
// setting diverged.
Tuning choose_rates(const Sweep& sweep);

// Whether a failed point's error says its training loss diverged (a result of its rate, not a
// fault to retry).
bool is_divergence(const std::string& error);

// Sets every grid point's lr to its setting's chosen rate.
void apply_rates(Sweep& sweep, const Tuning& tuning);

// Reads an experiment file; `out` (when not empty) replaces its [sweep] out. Throws
// ibn::UsageError naming the file and line for anything malformed.
Sweep load_sweep(const std::string& file, const std::string& out);
// The same from an experiment's text that is not (yet) in `file`: `ibn repro` checks each
// platform's experiment before it writes any of them.
Sweep load_sweep_text(const std::string& text, const std::string& file, const std::string& out);

// The value of `key` in an ordered option list (a point's [train] options), or `absent`.
std::string option_value(const Settings& options, const std::string& key, const std::string& absent);

// Whether `id` has the form point ids have: a plain file name, never "." or "..", no
// separator. A sweep deletes only directories named so under its own points/.
bool is_plain_point_id(const std::string& id);

// "i/n" with 0 <= i < n: every n-th point starting at i (cluster array jobs split a sweep so).
std::pair<int64_t, int64_t> parse_shard(const std::string& text);

// The points a sweep directory lists in its points.csv (index, id and settings; no ini),
// every one checked to be a plain point id. ibn::DataError for a malformed file.
std::vector<Point> read_points(const std::string& sweep_dir);

enum class State { pending, done, failed };
// A point's state from its directory; `error` gets a failed point's message.
State point_state(const Sweep& sweep, const Point& point, std::string* error = nullptr);
// SWEEP/points/<id>, or SWEEP/tune/<id> for a tuning point.
std::string point_directory(const Sweep& sweep, const Point& point);

}  // namespace ibn::sweep
