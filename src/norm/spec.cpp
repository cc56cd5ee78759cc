#include "ibn/norm/spec.h"

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/norm/normalizer.h"
#include "ibn/norm/registry.h"
#include "ibn/spec_string.h"

namespace ibn::norm {
namespace {

// Keys every spec may carry, and the condition under which each applies.
constexpr const char* kAcceptedKeys =
    "area, eps, affine, lambda or kappa and order (ibnorm-*, ln-tanh), alpha (dyt), noise (normalnorm), groups "
    "(area=group), momentum (area=batch), fp8 and scaling (FP8 output)";

// Keys that only some operations take: each names the operations it applies to.
void refuse_foreign_keys(KeyValueSpec& kv, const NormSpec& spec) {
  for (const char* key : {"lambda", "kappa", "order"}) {
    if (kv.has(key) && !spec.is_ibnorm()) {
      kv.fail(fmt::format("key '{}' applies only to the IBNorm operations (ibnorm-*, ln-tanh), not to '{}'", key, spec.name));
    }
  }
  if (kv.has("alpha") && !spec.is_dyt()) kv.fail(fmt::format("key 'alpha' applies only to dyt, not to '{}'", spec.name));
  if (kv.has("noise") && !spec.is_normalnorm()) {
    kv.fail(fmt::format("key 'noise' applies only to normalnorm, not to '{}'", spec.name));
  }
  if (kv.has("lambda") && kv.has("kappa")) kv.fail("give lambda or kappa, not both: kappa chooses lambda");
  if (kv.has("groups") && spec.area != "group") {
    kv.fail(fmt::format("key 'groups' applies only to area=group, not to area={}", spec.area));
  }
  if (kv.has("scaling") && !kv.has("fp8")) kv.fail("key 'scaling' applies only with fp8=e4m3 or fp8=e5m2");
  if (kv.has("momentum") && spec.area != "batch") {
    kv.fail(fmt::format("key 'momentum' applies only to area=batch, not to area={}", spec.area));
  }
}

}  // namespace

NormSpec parse_norm_spec(const std::string& text) {
  KeyValueSpec kv(text, "norm spec");
  if (kv.name().empty()) kv.fail(fmt::format("missing normalizer name; expected one of: {}", names_of(presets())));
  const Preset& preset = kv.find_entry(presets(), "normalizer");
  NormSpec spec;
  spec.name = preset.name;
  spec.operation = preset.operation;
  spec.compression = preset.compression;
  spec.order = preset.order;
  spec.area = kv.find_entry(areas(), "area", kv.text_value("area", preset.area)).name;
  spec.eps = kv.number("eps", spec.eps);
  kv.require_at_least("eps", spec.eps, 0);
  spec.affine = kv.boolean("affine", spec.affine);

  refuse_foreign_keys(kv, spec);
  spec.lambda = kv.number("lambda", spec.lambda);
  kv.require_within("lambda", spec.lambda, 0, kMaxLambda);
  spec.order = kv.text_value("order", spec.order);
  if (spec.order != "first" && spec.order != "between" && spec.order != "last") {
    kv.fail(fmt::format("order='{}' must be first, between or last", spec.order));
  }
  if (kv.has("kappa")) {
    spec.kappa = kv.number("kappa", spec.kappa);
    if (!(spec.kappa > 0 && spec.kappa < 1)) kv.fail(fmt::format("kappa={} must lie strictly between 0 and 1", spec.kappa));
    try {
      spec.lambda = lambda_for_contraction(spec, spec.kappa);
    } catch (const UsageError& e) {
      kv.fail(e.what());
    }
  }
  spec.alpha = kv.number("alpha", spec.alpha);
  if (!(spec.alpha > 0)) kv.fail(fmt::format("alpha={} must be positive", spec.alpha));
  spec.noise = kv.number("noise", spec.noise);
  kv.require_at_least("noise", spec.noise, 0);
  spec.groups = kv.integer_at_least("groups", spec.groups, 1);
  spec.momentum = kv.number("momentum", spec.momentum);
  kv.require_within("momentum", spec.momentum, 0, 1);
  spec.fp8 = kv.word("fp8", spec.fp8, {"e4m3", "e5m2"});
  spec.scaling = kv.word("scaling", spec.scaling, {"tensor", "row"});
  kv.finish(kAcceptedKeys);
  return spec;
}

std::string NormSpec::str() const {
  std::string out = fmt::format("{}:area={}", name, area);
  if (area == "group") out += fmt::format(":groups={}", groups);
  // kappa=K rather than the λ it resolves to: parsing the text again gives the same λ.
  if (is_ibnorm()) out += kappa > 0 ? fmt::format(":kappa={}", kappa) : fmt::format(":lambda={}", lambda);
  if (is_ibnorm() && order != find_preset(name).order) out += ":order=" + order;
  if (is_dyt()) out += fmt::format(":alpha={}", alpha);
  if (is_normalnorm()) out += fmt::format(":noise={}", noise);
  out += fmt::format(":eps={}:affine={}", eps, affine);
  if (area == "batch") out += fmt::format(":momentum={}", momentum);
  if (has_fp8_output()) out += fmt::format(":fp8={}:scaling={}", fp8, scaling);
  return out;
}

bool operator==(const NormSpec& a, const NormSpec& b) {
  return a.name == b.name && a.area == b.area && a.operation == b.operation &&
         a.compression == b.compression && a.groups == b.groups && a.lambda == b.lambda &&
         a.eps == b.eps && a.affine == b.affine && a.momentum == b.momentum && a.kappa == b.kappa && a.order == b.order &&
         a.alpha == b.alpha && a.noise == b.noise && a.fp8 == b.fp8 && a.scaling == b.scaling;
}

}  // namespace ibn::norm
