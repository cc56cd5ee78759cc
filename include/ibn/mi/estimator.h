#pragma once
// Mutual-information estimators (SPEC §4): one interface, one registry (estimators/*.cpp).
//
//   auto kde = ibn::mi::make_estimator("kde:var=0.1");
//   ibn::mi::Estimate e = kde->estimate({t, false}, {labels, true});   // I(T;Y) in nats
//
// Every estimator runs on CPU and CUDA tensors alike (both sides on the same device).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ibn {
class KeyValueSpec;
}

namespace ibn::mi {

// One side of a pair: continuous values [N, d] (or [N], read as [N, 1]) of a float type, or
// discrete values: labels [N] or rows of integer codes [N, k].
struct Variable {
  at::Tensor values;
  bool discrete = false;
};

struct Estimate {
  std::string spec;  // canonical estimator spec with every parameter resolved
  double nats = 0;   // the estimate, in nats
  // Bound estimators (KDE) report both bounds; `nats` is then the upper bound's estimate.
  std::optional<double> lower_nats, upper_nats;
  // What else the estimator measured: ("train_nats", "0.81"), ("steps", "1200"), ...
  std::vector<std::pair<std::string, std::string>> details;
};

class Estimator {
 public:
  virtual ~Estimator() = default;
  // Canonical spec: name and every parameter, e.g. "kde:var=0.1:memory_mb=1024".
  virtual std::string spec() const = 0;
  // I(A;B) in nats. Throws ibn::DataError for unusable data (see check_pair) and
  // ibn::UsageError for a pair this estimator cannot take (e.g. both sides discrete for KSG).
  virtual Estimate estimate(const Variable& a, const Variable& b) const = 0;
  // True when, for two continuous sides, the estimate reads B alone: it assumes B = f(A) is
  // deterministic and measures H(B + noise) − H(noise) (KDE's channel mode). The analysis then
  // reuses I(X;T_l) as I(T_{l−1};T_l) instead of computing the same number twice.
  virtual bool channel_only() const { return false; }
  // The estimate's `nats` alone: an estimator may skip what only the details need (KDE's lower
  // bound, half its work). Same number as estimate(a, b).nats.
  virtual double nats(const Variable& a, const Variable& b) const { return estimate(a, b).nats; }
};

struct EstimatorEntry {
  std::string name;
  std::string summary;  // one line, for `ibn mi --help`
  std::string keys;     // accepted keys with defaults, for help texts and errors
  std::unique_ptr<Estimator> (*make)(KeyValueSpec& spec);
};

const std::vector<EstimatorEntry>& estimators();

// Parses "name:key=value..." and builds the estimator; ibn::UsageError for an unknown name or
// key, or a bad value.
std::unique_ptr<Estimator> make_estimator(const std::string& spec);

// `values` as side `name` ("A", "B") of a pair: discrete when `discrete` says so, or, left
// unset, when the values are integers. Floats taken as discrete (0/1 inputs stored as float)
// have their rounded values as codes; they must be finite (NaN or Inf cast to an integer would
// become one arbitrary class): ibn::DataError otherwise. `ibn mi` and the Python package read
// their inputs through here.
Variable make_variable(at::Tensor values, std::optional<bool> discrete, const std::string& name);

// Checks a pair before estimation: same number of samples N ≥ 2, no empty side, every value
// finite, discrete sides integer-typed, both on one device. Throws ibn::DataError naming the
// side and the problem. Returns N.
int64_t check_pair(const Variable& a, const Variable& b);

// Continuous values as [N, d] in floating point (double stays double, everything else float).
at::Tensor as_matrix(const Variable& v);

constexpr double kNatsPerBit = 0.69314718055994530942;  // ln 2
inline double to_bits(double nats) { return nats / kNatsPerBit; }

// Default bytes that KDE and KSG blocks may occupy on a device (`memory_mb` overrides it).
int64_t default_memory_mb(const at::Tensor& on);

}  // namespace ibn::mi
