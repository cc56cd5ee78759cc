// Spec strings: parsing, canonical text, and one clear error per kind of mistake.
#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/error.h"
#include "ibn/norm/normalizer.h"
#include "ibn/norm/registry.h"
#include "ibn/norm/spec.h"
#include "ibn/spec_string.h"
#include "test_util.h"

namespace {

using ibn::norm::Normalizer;
using ibn::norm::parse_norm_spec;
using ibn::test::throws_usage_error;

TEST(NormSpec, PresetsResolveToTheirAreaOperationAndCompression) {
  const auto ln = parse_norm_spec("layernorm");
  EXPECT_EQ(ln.area, "token");
  EXPECT_EQ(ln.operation, "standardize");
  const auto bn = parse_norm_spec("batchnorm");
  EXPECT_EQ(bn.area, "batch");
  const auto rms = parse_norm_spec("rmsnorm");
  EXPECT_EQ(rms.operation, "rms");
  const auto gn = parse_norm_spec("groupnorm:groups=8");
  EXPECT_EQ(gn.area, "group");
  EXPECT_EQ(gn.groups, 8);
  const auto s = parse_norm_spec("ibnorm-s:lambda=0.5");
  EXPECT_EQ(s.operation, "ibnorm");
  EXPECT_EQ(s.compression, "s");
  EXPECT_DOUBLE_EQ(s.lambda, 0.5);
  const auto t = parse_norm_spec("ibnorm-t:lambda=2:area=batch");
  EXPECT_EQ(t.compression, "t");
  EXPECT_EQ(t.area, "batch");
  EXPECT_DOUBLE_EQ(t.lambda, 2.0);
  const auto full = parse_norm_spec("batchnorm:eps=1e-3:affine=false:momentum=0.01");
  EXPECT_DOUBLE_EQ(full.eps, 1e-3);
  EXPECT_FALSE(full.affine);
  EXPECT_DOUBLE_EQ(full.momentum, 0.01);
  const auto l = parse_norm_spec("ibnorm-l:area=group:groups=4:lambda=1.5");
  EXPECT_EQ(l.area, "group");
  EXPECT_EQ(l.groups, 4);
}

TEST(NormSpec, CanonicalTextRoundTrips) {
  for (const char* text : {"layernorm", "batchnorm:momentum=0.3", "rmsnorm:eps=1e-6:affine=false",
                           "groupnorm:groups=8", "ibnorm-s:lambda=0.5", "ibnorm-t:lambda=2:area=batch",
                           "ibnorm-l:area=group:groups=3:lambda=0.125:eps=0", "ln-tanh:lambda=2", "ln-tanh:order=between", "dyt:alpha=0.25",
                           "ibnorm-t:order=first:lambda=1", "ibnorm-s:order=last:area=batch", "ibnorm-l:kappa=0.5", "normalnorm:noise=0.1:area=batch"}) {
    const auto spec = parse_norm_spec(text);
    EXPECT_EQ(parse_norm_spec(spec.str()), spec) << text << " -> " << spec.str();
  }
  EXPECT_EQ(parse_norm_spec("ibnorm-t:lambda=2:area=batch").str(),
            "ibnorm-t:area=batch:lambda=2:eps=1e-05:affine=true:momentum=0.1");
  // kappa stays in the text (λ follows from it); the order only when it is not the default.
  EXPECT_EQ(parse_norm_spec("ibnorm-l:kappa=0.5:order=first").str(), "ibnorm-l:area=token:kappa=0.5:order=first:eps=1e-05:affine=true");
  // The order is written when it differs from the preset's own (ln-tanh's is last).
  EXPECT_EQ(parse_norm_spec("ln-tanh").str(), "ln-tanh:area=token:lambda=1:eps=1e-05:affine=true");
  EXPECT_EQ(parse_norm_spec("ln-tanh:order=between").str(), "ln-tanh:area=token:lambda=1:order=between:eps=1e-05:affine=true");
  EXPECT_EQ(parse_norm_spec("dyt").str(), "dyt:area=token:alpha=0.5:eps=1e-05:affine=true");
}

TEST(NormSpec, TinyPositiveNumbersAreNumbers) {
  // strtod reports ERANGE for an underflow, yet 1e-320 (a denormal) is a finite number.
  EXPECT_EQ(parse_norm_spec("ibnorm-t:lambda=1e-320").lambda, 1e-320);
  EXPECT_EQ(parse_norm_spec("ibnorm-t:lambda=1e-400").lambda, 0.0);
}

TEST(NormSpec, MalformedSpecsNameTheirMistake) {
  const auto parse = [](const char* text) { return [text] { parse_norm_spec(text); }; };
  EXPECT_TRUE(throws_usage_error(parse("fancynorm"), "unknown normalizer 'fancynorm'; expected one of: batchnorm"));
  EXPECT_TRUE(throws_usage_error(parse(""), "missing normalizer name"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:lamda=2"), "unknown key 'lamda'; ibnorm-t accepts: area, eps, affine, lambda"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:lambda="), "key 'lambda' has no value in norm spec 'ibnorm-t:lambda='"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:lambda"), "'lambda' is not key=value"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:lambda=two"), "lambda='two' is not a number"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:lambda=2x"), "lambda='2x' is not a number"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:lambda=nan"), "lambda='nan' is not a finite number"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-s:lambda=-0.5"), "lambda=-0.5 must lie in [0, 10000]"));
  // λ so large that ψ_λ is flat (or overflows) in float32: NaN outputs, not a stronger norm.
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-l:lambda=1e308"), "lambda=1e+308 must lie in [0, 10000]"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:lambda=1e999"), "lambda='1e999' is not a finite number"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:lambda=1:lambda=2"), "key 'lambda' given twice"));
  EXPECT_TRUE(throws_usage_error(parse("layernorm:lambda=1"), "key 'lambda' applies only to the IBNorm operations"));
  EXPECT_TRUE(throws_usage_error(parse("dyt:kappa=0.5"), "key 'kappa' applies only to the IBNorm operations"));
  EXPECT_TRUE(throws_usage_error(parse("rmsnorm:order=first"), "key 'order' applies only to the IBNorm operations"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:alpha=1"), "key 'alpha' applies only to dyt"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:order=middle"), "order='middle' must be first, between or last"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:lambda=1:kappa=0.5"), "give lambda or kappa, not both"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:kappa=1"), "kappa=1 must lie strictly between 0 and 1"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:kappa=0"), "kappa=0 must lie strictly between 0 and 1"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-s:kappa=1e-12"), "no lambda <= 10000 brings ibnorm-s's Gaussian contraction"));
  EXPECT_TRUE(throws_usage_error(parse("dyt:alpha=0"), "alpha=0 must be positive"));
  EXPECT_TRUE(throws_usage_error(parse("layernorm:noise=0.4"), "key 'noise' applies only to normalnorm"));
  EXPECT_TRUE(throws_usage_error(parse("normalnorm:noise=-1"), "noise=-1 must be >= 0"));
  EXPECT_TRUE(throws_usage_error(parse("ibnorm-t:area=pixel"), "unknown area 'pixel'; expected one of: batch, token, group"));
  EXPECT_TRUE(throws_usage_error(parse("groupnorm:groups=0"), "groups=0 must be >= 1"));
  EXPECT_TRUE(throws_usage_error(parse("groupnorm:groups=2.5"), "groups='2.5' is not an integer"));
  EXPECT_TRUE(throws_usage_error(parse("layernorm:groups=4"), "key 'groups' applies only to area=group"));
  EXPECT_TRUE(throws_usage_error(parse("layernorm:momentum=0.1"), "key 'momentum' applies only to area=batch"));
  EXPECT_TRUE(throws_usage_error(parse("batchnorm:momentum=1.5"), "momentum=1.5 must lie in [0, 1]"));
  EXPECT_TRUE(throws_usage_error(parse("layernorm:eps=-1"), "eps=-1 must be >= 0"));
  EXPECT_TRUE(throws_usage_error(parse("layernorm:affine=maybe"), "affine='maybe' is not a boolean"));
}

TEST(NormSpec, ChannelsAndShapesTheAreaCannotHandle) {
  EXPECT_TRUE(throws_usage_error([] { Normalizer("groupnorm:groups=8", 12); },
                                 "groups=8 cannot split 12 channels: groups must divide"));
  EXPECT_TRUE(throws_usage_error([] { Normalizer("ibnorm-t:area=group:groups=5", 12); },
                                 "cannot split 12 channels"));
  EXPECT_TRUE(throws_usage_error([] { Normalizer("layernorm", 0); }, "needs at least one feature"));

  Normalizer ln("layernorm", 8);
  EXPECT_TRUE(throws_usage_error([&] { ln(torch::randn({4, 7})); },
                                 "got input [4, 7] with 7 features in dim 1; the layer was built for 8"));
  EXPECT_TRUE(throws_usage_error([&] { ln(torch::randn({8})); }, "got input [8]: expected [N, D]"));
  Normalizer bn("batchnorm", 8);
  EXPECT_TRUE(throws_usage_error([&] { bn(torch::randn({1, 8})); },
                                 "area 'batch' in training needs more than one value per channel"));
  bn->eval();
  EXPECT_EQ(bn(torch::randn({1, 8})).sizes(), torch::IntArrayRef({1, 8}));  // eval takes one sample
}

TEST(NormSpec, ModuleStateFollowsLibTorchNaming) {
  Normalizer bn("ibnorm-t:area=batch", 4);
  const auto params = bn->named_parameters();
  EXPECT_TRUE(params.contains("weight"));
  EXPECT_TRUE(params.contains("bias"));
  const auto buffers = bn->named_buffers();
  for (const char* name : {"running_mean", "running_var", "running_mean_u", "running_var_u", "num_batches_tracked"}) {
    EXPECT_TRUE(buffers.contains(name)) << name;
  }
  Normalizer dyt("dyt:alpha=0.7", 4);
  ASSERT_TRUE(dyt->named_parameters().contains("alpha"));
  EXPECT_FLOAT_EQ(dyt->named_parameters()["alpha"].item<float>(), 0.7f);
  EXPECT_EQ(dyt->named_parameters()["alpha"].dim(), 0);
  EXPECT_EQ(dyt->parameters().size(), 3u);  // alpha, weight, bias: what an optimizer is handed
  Normalizer plain("layernorm:affine=false", 4);
  EXPECT_EQ(plain->parameters().size(), 0u);
  EXPECT_EQ(plain->buffers().size(), 0u);
}

TEST(NormSpec, RegistriesListEveryPlugIn) {
  EXPECT_EQ(ibn::norm::names_of(ibn::norm::presets()),
            "batchnorm, layernorm, rmsnorm, groupnorm, ibnorm-s, ibnorm-l, ibnorm-t, ln-tanh, dyt, normalnorm");
  EXPECT_EQ(ibn::norm::names_of(ibn::norm::operations()), "standardize, rms, ibnorm, dyt, normalnorm");
  EXPECT_EQ(ibn::norm::names_of(ibn::norm::areas()), "batch, token, group");
  EXPECT_EQ(ibn::norm::names_of(ibn::norm::compressions()), "s, l, t");
  EXPECT_TRUE(throws_usage_error([] { ibn::norm::find_compression("q"); }, "unknown compression 'q'; expected one of: s, l, t"));
}

}  // namespace

// The one integer reader behind every count, seed and width the tool takes from its user.
TEST(SpecString, ParseIntegerTakesWholeBase10IntegersInRangeOnly) {
  using ibn::parse_integer;
  EXPECT_EQ(parse_integer("0"), 0);
  EXPECT_EQ(parse_integer("42"), 42);
  EXPECT_EQ(parse_integer("-3"), -3);
  EXPECT_EQ(parse_integer("007"), 7);
  EXPECT_EQ(parse_integer("9223372036854775807"), INT64_MAX);
  EXPECT_EQ(parse_integer("-9223372036854775808"), INT64_MIN);
  for (const char* bad : {"", " 4", "4 ", "+4", "4x", "x4", "1e3", "1.0", "0x10", "-", "9223372036854775808",
                          "-9223372036854775809", "99999999999999999999"}) {
    EXPECT_EQ(parse_integer(bad), std::nullopt) << "'" << bad << "'";
  }
  // A spec's integer key and a widths list read through it: the same texts refused.
  EXPECT_TRUE(throws_usage_error([] { parse_norm_spec("groupnorm:groups= 4"); }, "groups"));
  EXPECT_TRUE(throws_usage_error([] { parse_norm_spec("groupnorm:groups=+4"); }, "groups"));
}

// The one floating-point reader: whole texts only, as strtod reads them (the decimal literals
// below are their own exact expected values, which strtod must round the same way).
TEST(SpecString, ParseNumberTakesWholeNumbersOnly) {
  using ibn::parse_number;
  EXPECT_EQ(parse_number("0.5"), 0.5);
  EXPECT_EQ(parse_number("1e-3"), 1e-3);
  EXPECT_EQ(parse_number("-2"), -2.0);
  EXPECT_EQ(parse_number("+4"), 4.0);
  EXPECT_EQ(parse_number(".25"), 0.25);
  EXPECT_EQ(parse_number("1e-400"), 0.0);  // underflow: a number, rounded
  EXPECT_EQ(parse_number("inf"), std::numeric_limits<double>::infinity());
  ASSERT_TRUE(parse_number("nan").has_value());
  EXPECT_TRUE(std::isnan(*parse_number("nan")));
  for (const char* bad : {"", " 4", "4 ", "4x", "x4", "0.5.", "1e", "-", ".", "1,5"}) {
    EXPECT_EQ(parse_number(bad), std::nullopt) << "'" << bad << "'";
  }
  // A spec's number key reads through it: a leading blank is refused there too.
  EXPECT_TRUE(throws_usage_error([] { parse_norm_spec("ibnorm-s:lambda= 0.5"); }, "lambda"));
  EXPECT_TRUE(throws_usage_error([] { parse_norm_spec("ibnorm-s:lambda=1e999"); }, "not a finite number"));
}

TEST(TestTools, NanAwareMaxDiff) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const auto t = [](std::vector<double> v) { return torch::tensor(v, torch::kDouble); };
  EXPECT_EQ(ibn::test::nan_aware_max_diff(t({1, 2}), t({1, nan})), inf);
  EXPECT_EQ(ibn::test::nan_aware_max_diff(t({nan, 2}), t({1, 2})), inf);
  EXPECT_EQ(ibn::test::nan_aware_max_diff(t({nan, 2}), t({nan, 2.5})), 0.5);
  EXPECT_EQ(ibn::test::nan_aware_max_diff(t({inf, 1}), t({inf, 1})), 0);
  EXPECT_EQ(ibn::test::nan_aware_max_diff(t({inf, 1}), t({-inf, 1})), inf);
  EXPECT_EQ(ibn::test::nan_aware_max_diff(t({nan}), t({nan})), 0);
}
