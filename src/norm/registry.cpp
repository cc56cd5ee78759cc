// The normalizer family's registries. Adding an area, operation, compression or preset is its
// own file plus one line below.
#include "ibn/norm/registry.h"

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/norm/area.h"
#include "ibn/norm/compression.h"
#include "ibn/norm/operation.h"
#include "ibn/spec_string.h"

namespace ibn::norm {

// Defined in src/norm/area_*.cpp, op_*.cpp and compression_*.cpp.
std::unique_ptr<Area> make_batch_area(const NormSpec&);
std::unique_ptr<Area> make_token_area(const NormSpec&);
std::unique_ptr<Area> make_group_area(const NormSpec&);
std::unique_ptr<Operation> make_standardize(const NormSpec&);
std::unique_ptr<Operation> make_rms(const NormSpec&);
std::unique_ptr<Operation> make_ibnorm(const NormSpec&);
std::unique_ptr<Operation> make_dyt(const NormSpec&);
std::unique_ptr<Operation> make_normalnorm(const NormSpec&);
Compression sign_power_compression();
Compression log_compression();
Compression tanh_compression();

const std::vector<AreaEntry>& areas() {
  static const std::vector<AreaEntry> entries{
      {"batch", "per channel over N (and T, or H·W); running statistics for eval", make_batch_area},
      {"token", "per sample (per token) over the feature dim D", make_token_area},
      {"group", "per sample over each of `groups` channel groups (and H·W)", make_group_area},
  };
  return entries;
}

const std::vector<OperationEntry>& operations() {
  static const std::vector<OperationEntry> entries{
      {"standardize", "variance-centric: x̂ = (x − μ)/√(σ² + ε)", make_standardize},
      {"rms", "x̂ = x/√(mean(x²) + ε)", make_rms},
      {"ibnorm", "standardize, compress with ψ_λ, standardize again (order=first|between|last moves ψ)", make_ibnorm},
      {"dyt", "x̂ = tanh(α·x), one learned scalar α, no statistics", make_dyt},
      {"normalnorm", "standardize, Yeo–Johnson with a one-Newton-step λ̂, training noise ξ·s·N(0,1)", make_normalnorm},
  };
  return entries;
}

const std::vector<Compression>& compressions() {
  static const std::vector<Compression> entries{
      sign_power_compression(),
      log_compression(),
      tanh_compression(),
  };
  return entries;
}

const std::vector<Preset>& presets() {
  static const std::vector<Preset> entries{
      {"batchnorm", "batch", "standardize", "", "BatchNorm"},
      {"layernorm", "token", "standardize", "", "LayerNorm"},
      {"rmsnorm", "token", "rms", "", "RMSNorm"},
      {"groupnorm", "group", "standardize", "", "GroupNorm"},
      {"ibnorm-s", "token", "ibnorm", "s", "IBNorm-S, sign-power compression"},
      {"ibnorm-l", "token", "ibnorm", "l", "IBNorm-L, logarithmic compression"},
      {"ibnorm-t", "token", "ibnorm", "t", "IBNorm-T, tanh compression"},
      {"ln-tanh", "token", "ibnorm", "t", "LayerNorm then tanh(λz)/λ, no re-standardization (ibnorm-t:order=last)", "last"},
      {"dyt", "token", "dyt", "", "Dynamic Tanh (Zhu et al. 2025): tanh(α·x), learned α, no statistics"},
      {"normalnorm", "token", "normalnorm", "",
       "Normality normalization (Eftekhari & Papyan 2025), our reading: 'ibn norms --spec normalnorm' prints it"},
  };
  return entries;
}

const Preset& find_preset(const std::string& name) { return find_named(presets(), name, "normalizer"); }
const AreaEntry& find_area(const std::string& name) { return find_named(areas(), name, "area"); }
const OperationEntry& find_operation(const std::string& name) {
  return find_named(operations(), name, "operation");
}
const Compression& find_compression(const std::string& name) {
  return find_named(compressions(), name, "compression");
}

std::string describe(const NormSpec& spec) {
  std::string text = spec.name + " (area " + spec.area + (spec.area == "group" ? ", " + std::to_string(spec.groups) + " groups" : "") + "): ";
  if (spec.is_ibnorm()) {
    // The operation's own formula: it names ψ and where ψ sits (order).
    text += find_operation(spec.operation).make(spec)->formula() + " (" + find_compression(spec.compression).label +
            fmt::format("); λ = {}", spec.lambda);
    if (spec.kappa > 0) text += fmt::format(" (chosen for Gaussian contraction κ = {})", spec.kappa);
  } else if (spec.is_normalnorm()) {
    text += find_operation(spec.operation).make(spec)->formula();
  } else if (spec.is_dyt()) {
    text += find_operation(spec.operation).summary + fmt::format("; α starts at {}", spec.alpha);
  } else {
    text += find_operation(spec.operation).summary;
  }
  text += fmt::format("; ε = {}; {}", spec.eps, spec.affine ? "y = γ·x̂ + β (learned)" : "no affine");
  if (spec.area == "batch") text += fmt::format("; running-statistics momentum {}", spec.momentum);
  return text;
}

}  // namespace ibn::norm
