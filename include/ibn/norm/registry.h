#pragma once
// The normalizer family's plug-in points, one registry each (SPEC §1–2):
//   areas        (NAP): which elements share statistics           src/norm/area_*.cpp
//   operations   (NOP): what is done with each group's values       src/norm/op_*.cpp
//   compressions (ψ_λ): IBNorm's bounded compression               src/norm/compression_*.cpp
//   presets: the names users type (layernorm, ibnorm-t, ...)       src/norm/registry.cpp
// Adding one is one file plus one line in src/norm/registry.cpp.
#include <memory>
#include <string>
#include <vector>

#include "ibn/norm/compression.h"
#include "ibn/norm/spec.h"

namespace ibn::norm {

class Area;
class Operation;

struct Preset {
  std::string name;         // what users type
  std::string area;         // default area
  std::string operation;    // fixed operation
  std::string compression;  // fixed compression (IBNorm presets only)
  std::string summary;      // one line for `ibn norms`
  std::string order = "between";  // IBNorm presets: where ψ sits (spec key order=)
};

struct AreaEntry {
  std::string name;
  std::string summary;
  std::unique_ptr<Area> (*make)(const NormSpec&);
};

struct OperationEntry {
  std::string name;
  std::string summary;
  std::unique_ptr<Operation> (*make)(const NormSpec&);
};

const std::vector<Preset>& presets();
const std::vector<AreaEntry>& areas();
const std::vector<OperationEntry>& operations();
const std::vector<Compression>& compressions();

// Lookups throw ibn::UsageError naming the accepted values.
const Preset& find_preset(const std::string& name);
const AreaEntry& find_area(const std::string& name);
const OperationEntry& find_operation(const std::string& name);
const Compression& find_compression(const std::string& name);

// What a normalizer computes, in one line with every parameter, for reports: "ibnorm-t
// (area token): standardize z = (x − μ)/√(σ² + ε), compress ψ(z) = tanh(λz)/λ, standardize
// again; λ = 2, ε = 1e-05, affine (γ, β learned)".
std::string describe(const NormSpec& spec);

// "a, b, c": for error messages and help texts.
template <typename Entry>
std::string names_of(const std::vector<Entry>& entries) {
  std::string out;
  for (const auto& e : entries) out += (out.empty() ? "" : ", ") + e.name;
  return out;
}

}  // namespace ibn::norm
