// The toolkit's normalizers and MI estimators as PyTorch custom operators (namespace `ibn`), for
// the Python package `ibnorm` (python/ibnorm), which loads this library with
// torch.ops.load_library: no pybind11. Every operator calls the same C++ code as `ibn`, so
// Python gets the C++ numbers.
//
// The normalizer operators are stateless: the Python layer owns its parameters and buffers and
// hands them in on every call (NormalizerImpl::bind), so autograd reaches them, training
// updates the running statistics in them, and `state_dict`, `.to()` and optimizers work as for
// any torch.nn module. The operators are composite (the ATen ops they call carry autograd), and
// on CUDA the layer takes the fused kernels under the same condition as `ibn` (IBN_FUSED_NORM=1
// and a build with them). norm_forward updates the running statistics in `state` in place in
// training mode, which its schema does not declare: it is for eager PyTorch (the `ibnorm.Norm`
// module), not for tracing or functionalization.
//
// Errors: ibn::UsageError and ibn::DataError (a bad spec, a wrong shape, NaN data) become
// c10::ValueError, which PyTorch raises as Python's ValueError; anything else a RuntimeError.
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include <torch/library.h>
#include <torch/torch.h>

#include "ibn/build_info.h"
#include "ibn/error.h"
#include "ibn/mi/estimator.h"
#include "ibn/norm/normalizer.h"
#include "ibn/norm/registry.h"
#include "ibn/norm/spec.h"

namespace ibn::python {
namespace {

template <typename Body>
auto as_python_errors(Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const UsageError& e) {
    C10_THROW_ERROR(ValueError, e.what());
  } catch (const DataError& e) {
    C10_THROW_ERROR(ValueError, e.what());
  }
}

// A layer of `spec` over `num_features` computing with `state` (its tensors, in state_names()
// order), in training or eval mode.
norm::Normalizer bound_layer(const std::string& spec, int64_t num_features, const std::vector<at::Tensor>& state,
                             bool training) {
  norm::Normalizer layer(spec, num_features);
  layer->bind(state);
  layer->train(training);
  return layer;
}

// A fresh layer's tensors: (names, values, how many of them are parameters). The values are
// new tensors the caller owns.
std::tuple<std::vector<std::string>, std::vector<at::Tensor>, int64_t> norm_state(const std::string& spec,
                                                                                  int64_t num_features) {
  return as_python_errors([&] {
    const norm::Normalizer layer(spec, num_features);
    std::vector<at::Tensor> values;
    for (const auto& parameter : layer->named_parameters(/*recurse=*/false)) values.push_back(parameter.value().detach());
    const auto parameters = static_cast<int64_t>(values.size());
    for (const auto& buffer : layer->named_buffers(/*recurse=*/false)) values.push_back(buffer.value());
    return std::make_tuple(layer->state_names(), values, parameters);
  });
}

at::Tensor norm_forward(const at::Tensor& x, const std::string& spec, int64_t num_features,
                        const std::vector<at::Tensor>& state, bool training) {
  return as_python_errors([&] { return bound_layer(spec, num_features, state, training)->forward(x); });
}

// κ of the layer on this batch (its own statistics; running estimates neither used nor moved).
at::Tensor norm_contraction(const at::Tensor& x, const std::string& spec, int64_t num_features,
                            const std::vector<at::Tensor>& state) {
  return as_python_errors([&] { return bound_layer(spec, num_features, state, /*training=*/false)->contraction(x); });
}

// (canonical spec with every parameter, one-line description with the formula).
std::tuple<std::string, std::string> norm_describe(const std::string& spec) {
  return as_python_errors([&] {
    const norm::NormSpec parsed = norm::parse_norm_spec(spec);
    return std::make_tuple(parsed.str(), norm::describe(parsed));
  });
}

std::vector<std::string> norm_presets() {
  std::vector<std::string> names;
  for (const norm::Preset& preset : norm::presets()) names.push_back(preset.name);
  return names;
}

double gaussian_contraction(const std::string& spec) {
  return as_python_errors([&] { return norm::gaussian_contraction(norm::parse_norm_spec(spec)); });
}

double lambda_for_contraction(const std::string& spec, double kappa) {
  return as_python_errors([&] { return norm::lambda_for_contraction(norm::parse_norm_spec(spec), kappa); });
}

// I(A;B) as `ibn mi` estimates it: (nats, lower bound, upper bound (NaN when the estimator has none), canonical spec,
// detail keys, detail values).
std::tuple<double, double, double, std::string, std::vector<std::string>, std::vector<std::string>> mutual_information(
    const at::Tensor& a, const at::Tensor& b, const std::string& estimator, c10::optional<bool> a_discrete,
    c10::optional<bool> b_discrete) {
  return as_python_errors([&] {
    // Unset: integers are discrete, floats continuous (as `ibn mi --discrete auto`).
    const auto side = [](const at::Tensor& values, c10::optional<bool> discrete, const char* name) {
      return mi::make_variable(values, discrete ? std::optional<bool>(*discrete) : std::nullopt, name);
    };
    const std::unique_ptr<mi::Estimator> made = mi::make_estimator(estimator);
    const mi::Estimate estimate = made->estimate(side(a, a_discrete, "A"), side(b, b_discrete, "B"));
    constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
    std::vector<std::string> keys, values;
    for (const auto& [key, value] : estimate.details) {
      keys.push_back(key);
      values.push_back(value);
    }
    return std::make_tuple(estimate.nats, estimate.lower_nats.value_or(kNone), estimate.upper_nats.value_or(kNone),
                           estimate.spec, keys, values);
  });
}

// What the library was built from: (LibTorch version, ibn version, git commit).
std::tuple<std::string, std::string, std::string> library_build() {
  const BuildInfo& info = build_info();
  return std::make_tuple(info.torch_version, info.version, info.git_commit);
}

}  // namespace

TORCH_LIBRARY(ibn, m) {
  m.def("norm_state(str spec, int num_features) -> (str[], Tensor[], int)", norm_state);
  m.def("norm_forward(Tensor x, str spec, int num_features, Tensor[] state, bool training) -> Tensor", norm_forward);
  m.def("norm_contraction(Tensor x, str spec, int num_features, Tensor[] state) -> Tensor", norm_contraction);
  m.def("norm_describe(str spec) -> (str, str)", norm_describe);
  m.def("norm_presets() -> str[]", norm_presets);
  m.def("gaussian_contraction(str spec) -> float", gaussian_contraction);
  m.def("lambda_for_contraction(str spec, float kappa) -> float", lambda_for_contraction);
  m.def("mutual_information(Tensor a, Tensor b, str estimator, bool? a_discrete, bool? b_discrete) "
        "-> (float, float, float, str, str[], str[])",
        mutual_information);
  m.def("library_build() -> (str, str, str)", library_build);
}

}  // namespace ibn::python
