#pragma once
// Shared by the neural estimators (mine.cpp, infonce.cpp, smile.cpp): a critic network T(a, b)
// trained on a training split to maximise a variational lower bound of I(A;B), with early
// stopping on a validation split, and the bound evaluated on a held-out test split.
#include <string>

#include "ibn/mi/estimator.h"

namespace ibn {
class KeyValueSpec;
}

namespace ibn::mi::neural {

enum class Bound {
  DonskerVaradhan,  // MINE: E_P[T] − log E_Q[e^T], moving-average bias correction in training
  InfoNCE,          // E[T(a_i,b_i) − log Σ_j e^{T(a_i,b_j)}] + log B, capped at log B
  Smile,            // E_P[T] − log E_Q[clip(e^T, e^{−τ}, e^{τ})]; critic trained on the JS bound
};

struct Options {
  std::string critic;    // "concat": MLP([a, b]); "separable": f(a)·g(b)
  int64_t hidden = 128;  // units per hidden layer
  int64_t layers = 2;    // hidden layers
  int64_t batch = 256;
  int64_t steps = 2000;  // at most; early stopping may end sooner
  int64_t eval_every = 50;
  int64_t patience = 8;  // evaluations without improvement before stopping
  double lr = 1e-3;      // Adam
  double test = 0.2;     // fraction held out for the reported estimate
  double valid = 0.1;    // fraction of the rest for early stopping
  double ema = 0.01;     // MINE's moving-average rate
  double tau = 5.0;      // SMILE's clip
  int64_t seed = 0;
};

// Reads the shared keys (and ema for MINE, tau for SMILE) with this bound's defaults.
Options read_options(KeyValueSpec& kv, Bound bound);
std::string options_str(const Options& o, Bound bound);
const char* accepted_keys(Bound bound);

Estimate estimate(const Variable& a, const Variable& b, const Options& options, Bound bound,
                  const std::string& spec);

}  // namespace ibn::mi::neural
