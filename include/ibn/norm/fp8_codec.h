#pragma once
// OCP 8-bit floating point (OCP "8-bit Floating Point Specification (OFP8)", rev. 1.0, 2023):
// the encode and decode of one value, in plain C++ that compiles for the host, for nvcc's device
// code and for the project's SIMT emulator alike, so that the normalizers' CPU path, the CUDA
// output stage and the tests share one definition. LibTorch 1.13 has no float8 type.
//
//   E4M3 (e4m3fn): 1 sign, 4 exponent bits (bias 7), 3 mantissa bits. No infinities; S.1111.111
//                  is NaN. Max normal 448 (S.1111.110), min normal 2^-6, min subnormal 2^-9.
//   E5M2:          1 sign, 5 exponent bits (bias 15), 2 mantissa bits; IEEE-like: S.11111.00 is
//                  ±inf, S.11111.{01,10,11} NaN. Max normal 57344, min normal 2^-14, min
//                  subnormal 2^-16.
//
// encode() rounds once, to nearest with ties to even, from the value it is given (float or
// double: the accumulator, never an intermediate bf16), and saturates (the OCP spec's
// "saturation mode", TransformerEngine's and cuDNN's choice for FP8 training): every finite
// value beyond max normal and ±inf encode as ±max normal; NaN encodes as NaN (S.1111.111, the
// sign kept). ±0 keep their sign; values below half the min subnormal flush to ±0.
#include <cstdint>

#if defined(__CUDACC__)
#define IBN_FP8_HD __host__ __device__ __forceinline__
#define IBN_FP8_MATH(name) ::name  // CUDA's float and double overloads
#else
#include <cmath>
#define IBN_FP8_HD inline
#define IBN_FP8_MATH(name) std::name
#endif

namespace ibn::norm::fp8 {

enum class Format : int { e4m3 = 0, e5m2 = 1 };

struct Layout {
  int mantissa_bits;
  int bias;
  uint8_t max_code;  // magnitude bits of max normal
  bool has_inf;      // E5M2: S.11111.00 is infinity
};

IBN_FP8_HD Layout layout_of(Format format) {
  return format == Format::e4m3 ? Layout{3, 7, 0x7E, false} : Layout{2, 15, 0x7B, true};
}

// The largest finite magnitude: 448 (E4M3), 57344 (E5M2).
IBN_FP8_HD double max_normal(Format format) { return format == Format::e4m3 ? 448.0 : 57344.0; }

constexpr uint8_t kNanCode = 0x7F;  // S.1111.111 in E4M3, S.11111.11 in E5M2
constexpr uint8_t kSignBit = 0x80;

template <typename A>
IBN_FP8_HD bool is_nan(A v) {
  return v != v;
}
template <typename A>
IBN_FP8_HD bool is_finite(A v) {
  return v - v == v - v;  // inf − inf and NaN − NaN are NaN
}

template <typename A>
IBN_FP8_HD uint8_t encode(A value, Format format) {
  const Layout f = layout_of(format);
  const bool negative = IBN_FP8_MATH(signbit)(value);  // −0 and NaN's sign bit too
  const uint8_t sign = negative ? kSignBit : 0;
  if (is_nan(value)) return static_cast<uint8_t>(sign | kNanCode);
  const A magnitude = negative ? -value : value;
  if (!is_finite(magnitude)) return static_cast<uint8_t>(sign | f.max_code);
  if (magnitude == A(0)) return sign;
  int exponent = 0;  // magnitude = m·2^exponent with m in [0.5, 1): it lies in [2^(e−1), 2^e)
  IBN_FP8_MATH(frexp)(magnitude, &exponent);
  const int min_exponent = 1 - f.bias;           // of the min normal, 2^(1−bias)
  int unbiased = exponent - 1;                   // magnitude in [2^unbiased, 2^(unbiased+1))
  const bool subnormal = unbiased < min_exponent;
  if (subnormal) unbiased = min_exponent;
  // The magnitude in units of the last mantissa bit: below 2^(m+1), so exact in A, and its
  // integer and fractional parts are exact too.
  const A units = IBN_FP8_MATH(ldexp)(magnitude, f.mantissa_bits - unbiased);
  const A whole = IBN_FP8_MATH(floor)(units);
  const A fraction = units - whole;
  int64_t rounded = static_cast<int64_t>(whole);
  if (fraction > A(0.5) || (fraction == A(0.5) && (rounded & 1) != 0)) ++rounded;
  // Subnormal: the code is the mantissa (rounding up to 2^m lands on the min normal's code).
  // Normal: exponent field (unbiased + bias) and the mantissa without its hidden bit; a mantissa
  // rounded up to 2^(m+1) carries into the exponent field by the same addition.
  const int64_t code = subnormal ? rounded
                                 : (static_cast<int64_t>(unbiased + f.bias) << f.mantissa_bits) +
                                       (rounded - (int64_t{1} << f.mantissa_bits));
  const int64_t saturated = code > f.max_code ? f.max_code : code;
  return static_cast<uint8_t>(sign | static_cast<uint8_t>(saturated));
}

template <typename A>
IBN_FP8_HD A decode(uint8_t code, Format format) {
  const Layout f = layout_of(format);
  const bool negative = (code & kSignBit) != 0;
  const int exponent_mask = (1 << (7 - f.mantissa_bits)) - 1;
  const int exponent_field = (code >> f.mantissa_bits) & exponent_mask;
  const int mantissa = code & ((1 << f.mantissa_bits) - 1);
  A magnitude;
  if (!f.has_inf && (code & kNanCode) == kNanCode) {
    magnitude = A(IBN_FP8_MATH(nan)(""));
  } else if (f.has_inf && exponent_field == exponent_mask) {
    magnitude = mantissa == 0 ? A(1) / A(0) : A(IBN_FP8_MATH(nan)(""));
  } else if (exponent_field == 0) {
    magnitude = IBN_FP8_MATH(ldexp)(A(mantissa), 1 - f.bias - f.mantissa_bits);
  } else {
    magnitude = IBN_FP8_MATH(ldexp)(A(mantissa + (1 << f.mantissa_bits)), exponent_field - f.bias - f.mantissa_bits);
  }
  return negative ? -magnitude : magnitude;
}

// Whether encode() clamps this magnitude to max normal: it (or ±inf) would round beyond it
// without saturation. E4M3 rounds to max normal (448) up to the midpoint 464 to the next
// value it would have (480); E5M2's midpoint 61440 between 57344 and 65536 is a tie that
// rounds to even, up.
template <typename A>
IBN_FP8_HD bool saturates(A magnitude, Format format) {
  return format == Format::e4m3 ? magnitude > A(464) : magnitude >= A(61440);
}

// The scale s of a block of values (the tensor, or one row) whose largest magnitude is `amax`:
// the block is stored as encode(y / s) and read back as decode(·)·s, so that amax maps to max
// normal (TransformerEngine's "current scaling", with no margin). An all-zero block, or one
// whose amax is not finite, gets s = 1: zeros stay exact, and NaN and ±inf pass to the codes; so
// does a block whose s would be subnormal.
template <typename A>
IBN_FP8_HD A scale_for(A amax, Format format) {
  if (!(amax > A(0)) || !is_finite(amax)) return A(1);
  const A scale = amax / static_cast<A>(max_normal(format));
  // A subnormal (or zero) scale is imprecise and would turn y/s into ±inf or NaN: such a block
  // is all but zero, and s = 1 stores it as well as FP8 can.
  const A smallest_normal = sizeof(A) == sizeof(float) ? static_cast<A>(0x1p-126) : static_cast<A>(0x1p-1022);
  return scale < smallest_normal ? A(1) : scale;
}

}  // namespace ibn::norm::fp8
