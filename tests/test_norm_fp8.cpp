// FP8 output (fp8_codec.h, fp8.h): the codec against the OCP spec's landmarks, its own formula
// for all 256 codes of each format and a brute-force nearest-code search; the tensor level
// against the codec applied element by element; every normalizer's FP8 output against its
// unquantized output quantized independently, with the gradient passing straight through.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/analysis/quantization.h"
#include "ibn/norm/area.h"
#include "ibn/norm/fp8.h"
#include "ibn/norm/normalizer.h"
#include "ibn/norm/registry.h"
#include "test_util.h"

namespace {

namespace fp8 = ibn::norm::fp8;
using ibn::norm::Fp8Output;
using ibn::norm::Fp8Scaling;

constexpr fp8::Format kFormats[] = {fp8::Format::e4m3, fp8::Format::e5m2};

struct FormatFacts {  // from the OCP OFP8 spec, table 1
  int exponent_bits, mantissa_bits, bias;
  double max_normal, min_normal, min_subnormal;
  int nan_codes;  // of 256
  bool infinities;
};
FormatFacts facts(fp8::Format f) {
  return f == fp8::Format::e4m3 ? FormatFacts{4, 3, 7, 448.0, 0x1p-6, 0x1p-9, 2, false}
                                : FormatFacts{5, 2, 15, 57344.0, 0x1p-14, 0x1p-16, 6, true};
}

// The value of a code from the spec's definition, written out independently of the codec:
// (−1)^S · 2^(E−bias) · (1 + M/2^m) for E > 0, (−1)^S · 2^(1−bias) · M/2^m for E = 0, and the
// special codes.
double spec_value(uint8_t code, fp8::Format f) {
  const FormatFacts k = facts(f);
  const int sign = code >> 7, exponent = (code >> k.mantissa_bits) & ((1 << k.exponent_bits) - 1);
  const int mantissa = code & ((1 << k.mantissa_bits) - 1);
  const int all_ones = (1 << k.exponent_bits) - 1;
  const double s = sign ? -1.0 : 1.0;
  if (!k.infinities && exponent == all_ones && mantissa == (1 << k.mantissa_bits) - 1) return std::nan("");
  if (k.infinities && exponent == all_ones) return mantissa == 0 ? s * INFINITY : std::nan("");
  const double fraction = static_cast<double>(mantissa) / (1 << k.mantissa_bits);
  if (exponent == 0) return s * std::ldexp(fraction, 1 - k.bias);
  return s * std::ldexp(1.0 + fraction, exponent - k.bias);
}

// Brute force: the finite code nearest to v (ties to the even code, i.e. the even mantissa),
// beyond max normal the max normal (saturation); NaN → NaN. Over the non-negative codes, with
// the sign applied after.
uint8_t nearest_code(double v, fp8::Format f) {
  if (std::isnan(v)) return std::signbit(v) ? 0xFF : 0x7F;
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;
  const double a = std::abs(v);
  int best = 0;
  double best_distance = INFINITY;
  for (int c = 0; c < 0x80; ++c) {
    const double value = spec_value(static_cast<uint8_t>(c), f);
    if (!std::isfinite(value)) continue;
    const double distance = std::abs(value - a);
    if (distance < best_distance || (distance == best_distance && (c & 1) == 0)) best = c, best_distance = distance;
  }
  return static_cast<uint8_t>(sign | best);
}

TEST(Fp8Codec, SpecLandmarks) {
  for (fp8::Format f : kFormats) {
    const FormatFacts k = facts(f);
    const uint8_t max_code = f == fp8::Format::e4m3 ? 0x7E : 0x7B;
    EXPECT_EQ(fp8::decode<double>(max_code, f), k.max_normal);
    EXPECT_EQ(fp8::decode<double>(0x80 | max_code, f), -k.max_normal);
    EXPECT_EQ(fp8::max_normal(f), k.max_normal);
    EXPECT_EQ(fp8::decode<double>(0x01, f), k.min_subnormal);
    EXPECT_EQ(fp8::decode<double>(static_cast<uint8_t>(1 << k.mantissa_bits), f), k.min_normal);
    EXPECT_EQ(fp8::encode<double>(k.max_normal, f), max_code);
    EXPECT_EQ(fp8::encode<double>(k.min_subnormal, f), 0x01);
    EXPECT_EQ(fp8::encode<double>(k.min_normal, f), 1 << k.mantissa_bits);
    int nan_codes = 0;
    for (int c = 0; c < 256; ++c) nan_codes += std::isnan(fp8::decode<double>(static_cast<uint8_t>(c), f)) ? 1 : 0;
    EXPECT_EQ(nan_codes, k.nan_codes);
    EXPECT_EQ(std::isinf(fp8::decode<double>(0x7C, f)), k.infinities);
    // Saturation: beyond max normal and ±inf go to ±max normal; NaN stays NaN.
    for (double big : {k.max_normal * 1.5, 1e30, static_cast<double>(INFINITY)}) {
      EXPECT_EQ(fp8::encode<double>(big, f), max_code) << big;
      EXPECT_EQ(fp8::encode<double>(-big, f), 0x80 | max_code) << big;
      EXPECT_EQ(fp8::encode<float>(static_cast<float>(big), f), max_code) << big;
    }
    EXPECT_TRUE(std::isnan(fp8::decode<double>(fp8::encode<double>(std::nan(""), f), f)));
    EXPECT_EQ(fp8::encode<double>(std::nan(""), f), 0x7F);
    EXPECT_EQ(fp8::encode<double>(-std::nan(""), f), 0xFF);  // the sign kept (x86's default NaN is negative)
    EXPECT_EQ(fp8::encode<float>(-std::numeric_limits<float>::quiet_NaN(), f), 0xFF);
    EXPECT_EQ(fp8::encode<float>(-0.0f, f), 0x80);
    EXPECT_EQ(fp8::encode<float>(0.0f, f), 0x00);
    // Half the min subnormal is a tie between 0 and it: to even, 0; anything above rounds up.
    EXPECT_EQ(fp8::encode<double>(k.min_subnormal / 2, f), 0x00);
    EXPECT_EQ(fp8::encode<double>(std::nextafter(k.min_subnormal / 2, 1.0), f), 0x01);
    EXPECT_EQ(fp8::encode<float>(std::numeric_limits<float>::denorm_min(), f), 0x00);
  }
}

TEST(Fp8Codec, EveryCodeDecodesAsTheSpecDefinesIt) {
  for (fp8::Format f : kFormats) {
    for (int c = 0; c < 256; ++c) {
      const auto code = static_cast<uint8_t>(c);
      const double expected = spec_value(code, f);
      const double got_double = fp8::decode<double>(code, f);
      const float got_float = fp8::decode<float>(code, f);
      if (std::isnan(expected)) {
        EXPECT_TRUE(std::isnan(got_double) && std::isnan(got_float)) << c;
        continue;
      }
      EXPECT_EQ(got_double, expected) << "code " << c;
      EXPECT_EQ(static_cast<double>(got_float), expected) << "code " << c;
      EXPECT_EQ(std::signbit(got_double), (c & 0x80) != 0) << "code " << c;
    }
  }
}

TEST(Fp8Codec, EveryCodeRoundTripsAndMagnitudesAreOrdered) {
  for (fp8::Format f : kFormats) {
    const uint8_t max_code = f == fp8::Format::e4m3 ? 0x7E : 0x7B;
    for (int c = 0; c < 256; ++c) {
      const auto code = static_cast<uint8_t>(c);
      const double v = fp8::decode<double>(code, f);
      if (std::isnan(v)) continue;
      // ±inf (E5M2) saturates to ±max normal; every finite code is its own encoding.
      const uint8_t expected = std::isinf(v) ? static_cast<uint8_t>((c & 0x80) | max_code) : code;
      EXPECT_EQ(fp8::encode<double>(v, f), expected) << "code " << c;
      EXPECT_EQ(fp8::encode<float>(static_cast<float>(v), f), expected) << "code " << c;
    }
    for (int c = 1; c <= max_code; ++c) {
      EXPECT_LT(fp8::decode<double>(static_cast<uint8_t>(c - 1), f), fp8::decode<double>(static_cast<uint8_t>(c), f)) << c;
    }
  }
}

// Values that probe every rounding decision: each midpoint between neighbouring codes (a tie),
// one ulp either side of it (in float and in double), the codes themselves, the region beyond
// max normal, and log-uniform random values from far below the min subnormal to far above max.
std::vector<double> probe_values(fp8::Format f) {
  std::vector<double> values;
  const uint8_t max_code = f == fp8::Format::e4m3 ? 0x7E : 0x7B;
  for (int c = 0; c <= max_code; ++c) {
    const double low = fp8::decode<double>(static_cast<uint8_t>(c), f);
    const double high = c < max_code ? fp8::decode<double>(static_cast<uint8_t>(c + 1), f) : 2 * low;
    const double mid = (low + high) / 2;
    const auto mid_f = static_cast<float>(mid);
    for (double v : {low, mid, std::nextafter(mid, 0.0), std::nextafter(mid, INFINITY),
                     static_cast<double>(std::nextafter(mid_f, 0.0f)), static_cast<double>(std::nextafter(mid_f, INFINITY))}) {
      values.push_back(v);
      values.push_back(-v);
    }
  }
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<double> exponent(-30, 20);
  for (int i = 0; i < 20000; ++i) values.push_back((i % 2 ? -1 : 1) * std::exp2(exponent(rng)));
  return values;
}

TEST(Fp8Codec, EncodeIsTheNearestCodeTiesToEvenSaturating) {
  for (fp8::Format f : kFormats) {
    int64_t checked = 0;
    for (double v : probe_values(f)) {
      ASSERT_EQ(fp8::encode<double>(v, f), nearest_code(v, f)) << "double " << v << " format " << static_cast<int>(f);
      const auto vf = static_cast<float>(v);
      ASSERT_EQ(fp8::encode<float>(vf, f), nearest_code(vf, f)) << "float " << vf << " format " << static_cast<int>(f);
      ++checked;
    }
    EXPECT_GT(checked, 1000);
  }
}

TEST(Fp8Codec, ScaleMapsAmaxToMaxNormal) {
  for (fp8::Format f : kFormats) {
    EXPECT_EQ(fp8::scale_for<double>(7.0, f), 7.0 / fp8::max_normal(f));
    EXPECT_EQ(fp8::scale_for<double>(0.0, f), 1.0);
    EXPECT_EQ(fp8::scale_for<double>(INFINITY, f), 1.0);
    EXPECT_EQ(fp8::scale_for<double>(std::nan(""), f), 1.0);
    // A scale that would be subnormal is 1: amax/s would otherwise overflow or lose its value.
    EXPECT_EQ(fp8::scale_for<float>(std::numeric_limits<float>::denorm_min() * 8, f), 1.0f);
    EXPECT_EQ(fp8::scale_for<double>(1e-310, f), 1.0);
    // amax / s rounds to max normal exactly or within an ulp of it: never saturated.
    const float amax = 3.7f, s = fp8::scale_for<float>(amax, f);
    EXPECT_FALSE(fp8::saturates(amax / s, f));
    EXPECT_EQ(fp8::encode<float>(amax / s, f), f == fp8::Format::e4m3 ? 0x7E : 0x7B);
  }
  // Saturation thresholds: the midpoint above max normal (a tie rounds to even: E4M3 down to
  // 448, E5M2 up past 57344).
  EXPECT_FALSE(fp8::saturates(464.0, fp8::Format::e4m3));
  EXPECT_TRUE(fp8::saturates(std::nextafter(464.0, 1e9), fp8::Format::e4m3));
  EXPECT_TRUE(fp8::saturates(61440.0, fp8::Format::e5m2));
  EXPECT_FALSE(fp8::saturates(std::nextafter(61440.0, 0.0), fp8::Format::e5m2));
}

#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1))
// LibTorch 2.1 and later have float8 types: its casts (round to nearest even; not saturating: beyond max
// normal it gives NaN or inf) must agree within the normal range.
TEST(Fp8Codec, AgreesWithLibTorchFloat8WithinRange) {
  std::vector<float> values;
  for (double v : probe_values(fp8::Format::e4m3)) {
    if (std::abs(v) <= 448.0) values.push_back(static_cast<float>(v));
  }
  const torch::Tensor x = torch::tensor(values);
  const torch::Tensor bytes = x.to(at::kFloat8_e4m3fn).view(at::kByte);
  const uint8_t* b = bytes.data_ptr<uint8_t>();
  for (size_t i = 0; i < values.size(); ++i) ASSERT_EQ(b[i], fp8::encode<float>(values[i], fp8::Format::e4m3)) << values[i];
}
#endif

// ---- Tensor level ----

// encode(y / s) element by element, s from the amax of the whole tensor or of each row along dim.
torch::Tensor expected_bytes(const torch::Tensor& y, const torch::Tensor& scale, fp8::Format f) {
  const torch::Tensor s = scale.expand(y.sizes()).contiguous();
  torch::Tensor out = torch::empty(y.sizes(), torch::kByte);
  const torch::Tensor yc = y.contiguous();
  for (int64_t i = 0; i < y.numel(); ++i) {
    out.data_ptr<uint8_t>()[i] = fp8::encode<float>(yc.data_ptr<float>()[i] / s.data_ptr<float>()[i], f);
  }
  return out;
}

TEST(Fp8Tensor, TensorAndRowScalingQuantizeEveryElementWithItsBlocksScale) {
  torch::manual_seed(3);
  const torch::Tensor y = torch::randn({4, 6, 3, 5}) * 3;  // [N, C, H, W]: rows are a pixel's C values
  for (fp8::Format f : kFormats) {
    const auto tensor = ibn::norm::quantize_fp8(y, Fp8Output{f, Fp8Scaling::tensor}, 1);
    EXPECT_EQ(tensor.scale.dim(), 0);
    EXPECT_EQ(tensor.scale.item<float>(), y.abs().max().item<float>() / static_cast<float>(fp8::max_normal(f)));
    EXPECT_TRUE(torch::equal(tensor.bytes, expected_bytes(y, tensor.scale, f)));
    const auto row = ibn::norm::quantize_fp8(y, Fp8Output{f, Fp8Scaling::row}, 1);
    EXPECT_EQ(row.scale.sizes(), torch::IntArrayRef({4, 1, 3, 5}));
    const torch::Tensor row_amax = std::get<0>(y.abs().max(1, true));
    EXPECT_TRUE(torch::equal(row.scale, row_amax / static_cast<float>(fp8::max_normal(f))));
    EXPECT_TRUE(torch::equal(row.bytes, expected_bytes(y, row.scale, f)));
    for (const auto* q : {&tensor, &row}) {
      const torch::Tensor decoded = ibn::norm::dequantize_fp8(q->bytes, q->scale, f, torch::kFloat);
      EXPECT_TRUE(torch::equal(decoded, q->dequantized));
      EXPECT_LE(ibn::test::max_abs_diff(decoded, y), y.abs().max().item<double>() / 8);  // within 2^-3 of amax
    }
    // Row scaling never loses more than tensor scaling on the row with the smallest amax.
    const auto e_tensor = ibn::norm::fp8_error(y, tensor, f), e_row = ibn::norm::fp8_error(y, row, f);
    EXPECT_EQ(e_tensor.count, y.numel());
    EXPECT_EQ(e_tensor.saturated, 0.0);
    EXPECT_GT(e_tensor.relative_mse, 0.0);
    EXPECT_NEAR(e_tensor.snr_db, -10 * std::log10(e_tensor.relative_mse), 1e-9);
    EXPECT_LE(e_row.relative_mse, e_tensor.relative_mse * 1.05);
  }
}

TEST(Fp8Tensor, ZeroAndNanRowsGetScaleOne) {
  torch::Tensor y = torch::randn({3, 8});
  y[1].zero_();
  y[2][4] = std::nan("");
  const auto q = ibn::norm::quantize_fp8(y, Fp8Output{fp8::Format::e4m3, Fp8Scaling::row}, 1);
  EXPECT_EQ(q.scale[1][0].item<float>(), 1.0f);
  EXPECT_EQ(q.scale[2][0].item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(q.dequantized[1], y[1]));
  EXPECT_EQ(q.bytes[2][4].item<uint8_t>() & 0x7F, 0x7F);
  EXPECT_TRUE(std::isnan(q.dequantized[2][4].item<float>()));
  const auto e = ibn::norm::fp8_error(y, q, fp8::Format::e4m3);
  EXPECT_EQ(e.count, y.numel() - 1);  // the NaN is left out
}

TEST(Fp8Tensor, ErrorCountsSaturationAndUnderflow) {
  // With a scale of 1 fixed by hand: 500 saturates in E4M3, 1e-4 flushes to zero.
  const torch::Tensor y = torch::tensor({500.0f, 1e-4f, 1.0f, 0.0f});
  ibn::norm::Fp8Tensor q;
  q.scale = torch::ones({});
  q.bytes = torch::empty({4}, torch::kByte);
  for (int i = 0; i < 4; ++i) q.bytes[i] = fp8::encode<float>(y[i].item<float>(), fp8::Format::e4m3);
  q.dequantized = ibn::norm::dequantize_fp8(q.bytes, q.scale, fp8::Format::e4m3, torch::kFloat);
  const auto e = ibn::norm::fp8_error(y, q, fp8::Format::e4m3);
  EXPECT_DOUBLE_EQ(e.saturated, 0.25);
  EXPECT_DOUBLE_EQ(e.underflow, 1.0 / 3);  // of the three nonzero values
  const double expected = (52.0 * 52.0 + 1e-8) / (500.0 * 500.0 + 1e-8 + 1.0);
  EXPECT_NEAR(e.relative_mse, expected, 1e-12);
}

// ---- Normalizers ----

TEST(Fp8Normalizer, SpecKeys) {
  const auto spec = ibn::norm::parse_norm_spec("ibnorm-t:lambda=2:fp8=e5m2:scaling=row");
  EXPECT_EQ(spec.fp8, "e5m2");
  EXPECT_EQ(spec.scaling, "row");
  EXPECT_EQ(ibn::norm::parse_norm_spec(spec.str()), spec);
  EXPECT_EQ(ibn::norm::parse_norm_spec("layernorm:fp8=e4m3").scaling, "tensor");
  EXPECT_TRUE(ibn::test::throws_usage_error([] { ibn::norm::parse_norm_spec("layernorm:scaling=row"); }, "only with fp8"));
  EXPECT_TRUE(ibn::test::throws_usage_error([] { ibn::norm::parse_norm_spec("layernorm:fp8=e3m4"); }, "fp8='e3m4'"));
}

// The input shape each area's layer takes in these tests.
torch::Tensor input_for(const ibn::norm::NormSpec& spec) {
  if (spec.area == "group") return torch::randn({4, 8, 3, 3}) * 2 + 0.5;
  return torch::randn({6, 5, 8}) * 2 + 0.5;
}

TEST(Fp8Normalizer, EveryNormalizerEmitsFp8OfItsOwnOutputWithStraightThroughGradient) {
  for (const auto& preset : ibn::norm::presets()) {
    for (const char* scaling : {"tensor", "row"}) {
      const std::string plain_spec = preset.name + (preset.area == "group" ? ":groups=4" : "");
      const std::string fp8_spec = plain_spec + ":fp8=e4m3:scaling=" + scaling;
      SCOPED_TRACE(fp8_spec);
      torch::manual_seed(5);
      ibn::norm::Normalizer plain(plain_spec, 8), quantized(fp8_spec, 8);
      const torch::Tensor x0 = input_for(plain->spec());
      const torch::Tensor x1 = x0.clone().requires_grad_(true), x2 = x0.clone().requires_grad_(true);
      torch::manual_seed(9);  // NormalNorm draws noise in training
      const torch::Tensor y = plain(x1);
      torch::manual_seed(9);
      const torch::Tensor y_hat = quantized(x2);
      const auto expected = ibn::norm::quantize_fp8(y.detach(), quantized->fp8_output(),
                                                    ibn::norm::feature_dim(static_cast<size_t>(x0.dim())));
      EXPECT_TRUE(torch::equal(y_hat.detach(), expected.dequantized));
      EXPECT_FALSE(torch::equal(y_hat.detach(), y.detach()));  // it did quantize
      const torch::Tensor upstream = torch::randn_like(y);
      y.backward(upstream);
      y_hat.backward(upstream);
      EXPECT_TRUE(torch::equal(x1.grad(), x2.grad()));
    }
  }
}

TEST(Fp8Normalizer, StraightThroughKeepsSaturatedInfinitiesAndCountsOneBatch) {
  // DyT has no statistics, so an output that overflows to +inf stays one element: y = γ·tanh(x) + β
  // with γ = β = 3e38 is inf where tanh(x) is near 1, and finite elsewhere.
  ibn::norm::Normalizer norm("dyt:alpha=1", 4);
  {
    torch::NoGradGuard no_grad;
    norm->weight.fill_(3e38f);
    norm->bias.fill_(3e38f);
  }
  const torch::Tensor x = torch::tensor({{-1.0f, -2.0f, -0.5f, -3.0f}, {std::numeric_limits<float>::infinity(), -0.25f, -1.0f, -2.0f}})
                              .requires_grad_(true);
  const auto q = norm->forward_fp8(x, Fp8Output{fp8::Format::e4m3, Fp8Scaling::row});
  EXPECT_EQ(q.bytes[1][0].item<uint8_t>(), 0x7E);  // +inf saturates to max normal (the row's scale is 1)
  EXPECT_TRUE(torch::equal(q.dequantized.detach(),
                           ibn::norm::dequantize_fp8(q.bytes, q.scale, fp8::Format::e4m3, torch::kFloat)));
  EXPECT_TRUE(torch::isfinite(q.dequantized).all().item<bool>());
  q.dequantized.sum().backward();
  EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());

  ibn::norm::Normalizer batch("batchnorm", 4);
  batch->forward_fp8(torch::randn({8, 4}), Fp8Output{});
  EXPECT_EQ(batch->num_batches_tracked.item<int64_t>(), 1);
}

TEST(Fp8Normalizer, Bfloat16InputIsQuantizedOnceFromFloat) {
  torch::manual_seed(1);
  const torch::Tensor x = (torch::randn({64, 32}) * 3).to(torch::kBFloat16);
  ibn::norm::Normalizer norm("ibnorm-t:lambda=1", 32);
  const auto q = norm->forward_fp8(x, Fp8Output{fp8::Format::e4m3, Fp8Scaling::row});
  const torch::Tensor y32 = norm(x.to(torch::kFloat)).detach();
  const auto direct = ibn::norm::quantize_fp8(y32, Fp8Output{fp8::Format::e4m3, Fp8Scaling::row}, 1);
  EXPECT_TRUE(torch::equal(q.bytes, direct.bytes));
  EXPECT_EQ(q.dequantized.scalar_type(), torch::kBFloat16);
  // Through bf16 first (double quantization) the bytes differ somewhere in 2048 values.
  const torch::Tensor y16 = y32.to(torch::kBFloat16).to(torch::kFloat);
  const auto twice = ibn::norm::quantize_fp8(y16, Fp8Output{fp8::Format::e4m3, Fp8Scaling::row}, 1);
  EXPECT_FALSE(torch::equal(twice.bytes, direct.bytes));
}

// ---- ibn quant's inputs ----

TEST(QuantInputs, GeneratedReplicatesAreIndependentReproducibleDraws) {
  ibn::analysis::QuantConfig config;
  config.rows = 2000, config.width = 50, config.replicates = 3, config.seed = 7;
  for (const char* text : {"gaussian", "student-t:df=3"}) {
    const auto input = ibn::analysis::parse_quant_input(text);
    const auto a = ibn::analysis::input_replicates(input, config), b = ibn::analysis::input_replicates(input, config);
    ASSERT_EQ(a.size(), 3u);
    for (size_t r = 0; r < a.size(); ++r) {
      EXPECT_EQ(a[r].sizes(), torch::IntArrayRef({2000, 50}));
      EXPECT_TRUE(torch::equal(a[r], b[r])) << text << " replicate " << r;
      for (size_t q = 0; q < r; ++q) EXPECT_FALSE(torch::equal(a[r], a[q])) << text << " replicates " << q << ", " << r;
    }
    // Excess kurtosis: 0 for the Gaussian, large for t with 3 degrees of freedom (infinite in theory).
    const torch::Tensor z = (a[0] - a[0].mean()) / a[0].std();
    const double kurtosis = z.pow(4).mean().item<double>() - 3;
    if (std::string(text) == "gaussian") {
      EXPECT_LT(std::abs(kurtosis), 0.1);
    } else {
      EXPECT_GT(kurtosis, 2.0);
    }
  }
  EXPECT_TRUE(ibn::test::throws_usage_error([] { ibn::analysis::parse_quant_input("student-t:df=2"); }, "df"));
}

}  // namespace
