#include "ibn/norm/spec.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

// Keys every spec may carry, and the condition under which each applies.
constexpr const char* kAcceptedKeys =
    "area, eps, affine, lambda (ibnorm-*), groups (area=group), momentum (area=batch)";

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(sep, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

struct Parser {
  const std::string& text;

  [[noreturn]] void fail(const std::string& what) const {
    throw UsageError(fmt::format("{} in norm spec '{}'", what, text));
  }

  double number(const std::string& key, const std::string& value) const {
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (value.empty() || end != value.c_str() + value.size() || errno == ERANGE || !std::isfinite(v)) {
      fail(fmt::format("{}='{}' is not a finite number", key, value));
    }
    return v;
  }

  int64_t integer(const std::string& key, const std::string& value) const {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(value.c_str(), &end, 10);
    if (value.empty() || end != value.c_str() + value.size() || errno == ERANGE) {
      fail(fmt::format("{}='{}' is not an integer", key, value));
    }
    return v;
  }

  // A registry lookup whose error also names this spec.
  template <typename Find>
  const auto& lookup(Find find, const std::string& name) const {
    try {
      return find(name);
    } catch (const UsageError& e) {
      fail(e.what());
    }
  }

  bool boolean(const std::string& key, const std::string& value) const {
    if (value == "true" || value == "1" || value == "yes") return true;
    if (value == "false" || value == "0" || value == "no") return false;
    fail(fmt::format("{}='{}' is not a boolean; expected true or false", key, value));
  }
};

}  // namespace

NormSpec parse_norm_spec(const std::string& text) {
  const Parser parser{text};
  const std::vector<std::string> parts = split(text, ':');
  if (parts[0].empty()) {
    parser.fail(fmt::format("missing normalizer name; expected one of: {}", names_of(presets())));
  }
  const Preset& preset = parser.lookup(find_preset, parts[0]);
  NormSpec spec;
  spec.name = preset.name;
  spec.area = preset.area;
  spec.operation = preset.operation;
  spec.compression = preset.compression;

  std::set<std::string> seen;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const size_t eq = part.find('=');
    if (eq == std::string::npos) {
      parser.fail(fmt::format("'{}' is not key=value (keys: {})", part, kAcceptedKeys));
    }
    const std::string key = part.substr(0, eq);
    const std::string value = part.substr(eq + 1);
    if (!seen.insert(key).second) parser.fail(fmt::format("key '{}' given twice", key));
    if (value.empty()) parser.fail(fmt::format("key '{}' has no value", key));

    if (key == "area") {
      spec.area = parser.lookup(find_area, value).name;
    } else if (key == "groups") {
      spec.groups = parser.integer(key, value);
      if (spec.groups < 1) parser.fail(fmt::format("groups={} must be at least 1", value));
    } else if (key == "lambda") {
      spec.lambda = parser.number(key, value);
      if (spec.lambda < 0) parser.fail(fmt::format("lambda={} must be >= 0", value));
    } else if (key == "eps") {
      spec.eps = parser.number(key, value);
      if (spec.eps < 0) parser.fail(fmt::format("eps={} must be >= 0", value));
    } else if (key == "affine") {
      spec.affine = parser.boolean(key, value);
    } else if (key == "momentum") {
      spec.momentum = parser.number(key, value);
      if (spec.momentum < 0 || spec.momentum > 1) {
        parser.fail(fmt::format("momentum={} must lie in [0, 1]", value));
      }
    } else {
      parser.fail(fmt::format("unknown key '{}'; {} accepts: {}", key, spec.name, kAcceptedKeys));
    }
  }

  // Keys that only mean something for some operations or areas.
  if (seen.count("lambda") && !spec.is_ibnorm()) {
    parser.fail(fmt::format("key 'lambda' applies only to the ibnorm-* normalizers, not to '{}'", spec.name));
  }
  if (seen.count("groups") && spec.area != "group") {
    parser.fail(fmt::format("key 'groups' applies only to area=group, not to area={}", spec.area));
  }
  if (seen.count("momentum") && spec.area != "batch") {
    parser.fail(fmt::format("key 'momentum' applies only to area=batch, not to area={}", spec.area));
  }
  return spec;
}

std::string NormSpec::str() const {
  std::string out = fmt::format("{}:area={}", name, area);
  if (area == "group") out += fmt::format(":groups={}", groups);
  if (is_ibnorm()) out += fmt::format(":lambda={}", lambda);
  out += fmt::format(":eps={}:affine={}", eps, affine);
  if (area == "batch") out += fmt::format(":momentum={}", momentum);
  return out;
}

bool operator==(const NormSpec& a, const NormSpec& b) {
  return a.name == b.name && a.area == b.area && a.operation == b.operation &&
         a.compression == b.compression && a.groups == b.groups && a.lambda == b.lambda &&
         a.eps == b.eps && a.affine == b.affine && a.momentum == b.momentum;
}

}  // namespace ibn::norm
