#pragma once
// A sweep: an experiment file (experiments/X.ini) declaring a grid over any `ibn train` option,
// with λ and the normalizer variant handled as a pair (λ applies to IBNorm variants only; the
// others run once per remaining grid point). Each point is a run directory SWEEP/points/<id>
// trained, then analyzed; a file `done` marks a finished point, `failed` a failed one.
//
//   [sweep]   name = default            out = runs/default
//   [grid]    norm = layernorm | ibnorm-s | ibnorm-t      lambda = 0.5 | 2      seed = 0 | 1
//   [train]   any `ibn train` option, the same for every point
//   [analyze] any `ibn analyze` option (repeat `estimator = ...` for several)
//   [report]  any `ibn report` option
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ibn::sweep {

struct Point {
  int64_t index = 0;  // position in the grid (shards split by it)
  std::string id;     // directory name, e.g. "ibnorm-s_lambda0.5_seed1"
  std::vector<std::pair<std::string, std::string>> settings;  // grid key -> value; "lambda" empty when n/a
  std::string ini;    // the point's config: [train] and [analyze] sections
};

struct Sweep {
  std::string name;
  std::string file;  // the experiment file
  std::string out;   // the sweep directory
  std::vector<std::string> grid_keys;
  std::vector<Point> points;
  std::vector<std::pair<std::string, std::string>> report_options;
};

// Reads an experiment file; `out` (when not empty) replaces its [sweep] out. Throws
// ibn::UsageError naming the file and line for anything malformed.
Sweep load_sweep(const std::string& file, const std::string& out);

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
std::string point_directory(const Sweep& sweep, const Point& point);

}  // namespace ibn::sweep
