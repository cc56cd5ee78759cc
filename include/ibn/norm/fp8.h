#pragma once
// FP8 output of a normalizer (the start of an FP8 dataflow, as TransformerEngine's LayerNorm and
// RMSNorm write it): the OCP E4M3 or E5M2 bytes, the scale, and the dequantized tensor that the
// next layer and autograd see. The codec is fp8_codec.h; this is the tensor level.
//
//   quantize:    s = amax / max_normal (per tensor, or per row),  byte = encode(y / s)
//   dequantize:  ŷ = decode(byte) · s
//
// A row is every feature at one position: a token's D values of [N, D] and [N, T, D], a pixel's
// C channels of [N, C, H, W] (what the next layer's matrix product reduces over). y is quantized
// from the precision it was computed in, once: a normalizer with FP8 output computes y in float
// (double for double inputs) even for bf16 and half inputs.
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "ibn/norm/fp8_codec.h"

namespace ibn::norm {

enum class Fp8Scaling { tensor, row };

struct Fp8Output {
  fp8::Format format = fp8::Format::e4m3;
  Fp8Scaling scaling = Fp8Scaling::tensor;
};

struct Fp8Tensor {
  at::Tensor bytes;        // uint8, y's shape
  at::Tensor scale;        // float (double for double y): 0-dim per tensor; y's shape with the features dim 1 per row
  at::Tensor dequantized;  // decode(bytes) · scale, in y's dtype
};

// "e4m3", "e5m2"; "tensor", "row". The parsers throw ibn::UsageError naming what is accepted.
std::string format_name(fp8::Format format);
fp8::Format parse_format(const std::string& text);
std::string scaling_name(Fp8Scaling scaling);
Fp8Scaling parse_scaling(const std::string& text);

// Quantizes y (float or double, any device; CPU does the work) with one scale per tensor or per
// row along `feature_dim`. No autograd: the result's tensors do not require grad.
Fp8Tensor quantize_fp8(const at::Tensor& y, const Fp8Output& output, int64_t feature_dim);

// decode(bytes) · scale in `dtype` (float or double); scale broadcasts against bytes.
at::Tensor dequantize_fp8(const at::Tensor& bytes, const at::Tensor& scale, fp8::Format format, at::ScalarType dtype);

// What quantizing costs one tensor: the error of ŷ against y over y's finite values.
struct Fp8Error {
  double relative_mse = 0;  // Σ(ŷ − y)² / Σ y²
  double snr_db = 0;        // −10·log10(relative_mse); +inf when exact
  double saturated = 0;     // share of finite values with |y/s| > max normal (clamped)
  double underflow = 0;     // share of nonzero finite values stored as ±0
  int64_t count = 0;        // finite values compared
};
Fp8Error fp8_error(const at::Tensor& y, const Fp8Tensor& quantized, fp8::Format format);

}  // namespace ibn::norm
