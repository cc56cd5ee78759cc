#include "ibn/norm/spec.h"

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/norm/registry.h"
#include "ibn/spec_string.h"

namespace ibn::norm {
namespace {

// Keys every spec may carry, and the condition under which each applies.
constexpr const char* kAcceptedKeys =
    "area, eps, affine, lambda (ibnorm-*), groups (area=group), momentum (area=batch)";

}  // namespace

NormSpec parse_norm_spec(const std::string& text) {
  KeyValueSpec kv(text, "norm spec");
  if (kv.name().empty()) kv.fail(fmt::format("missing normalizer name; expected one of: {}", names_of(presets())));
  const Preset& preset = kv.find_entry(presets(), "normalizer");
  NormSpec spec;
  spec.name = preset.name;
  spec.operation = preset.operation;
  spec.compression = preset.compression;
  spec.area = kv.find_entry(areas(), "area", kv.text_value("area", preset.area)).name;
  spec.eps = kv.number("eps", spec.eps);
  kv.require_at_least("eps", spec.eps, 0);
  spec.affine = kv.boolean("affine", spec.affine);

  // Keys that only mean something for some operations or areas.
  if (kv.has("lambda") && !spec.is_ibnorm()) {
    kv.fail(fmt::format("key 'lambda' applies only to the ibnorm-* normalizers, not to '{}'", spec.name));
  }
  if (kv.has("groups") && spec.area != "group") {
    kv.fail(fmt::format("key 'groups' applies only to area=group, not to area={}", spec.area));
  }
  if (kv.has("momentum") && spec.area != "batch") {
    kv.fail(fmt::format("key 'momentum' applies only to area=batch, not to area={}", spec.area));
  }
  spec.lambda = kv.number("lambda", spec.lambda);
  kv.require_within("lambda", spec.lambda, 0, kMaxLambda);
  spec.groups = kv.integer_at_least("groups", spec.groups, 1);
  spec.momentum = kv.number("momentum", spec.momentum);
  kv.require_within("momentum", spec.momentum, 0, 1);
  kv.finish(kAcceptedKeys);
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
