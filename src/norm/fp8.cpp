#include "ibn/norm/fp8.h"

#include <cmath>
#include <limits>

#include <ATen/Parallel.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include "ibn/error.h"

namespace ibn::norm {

std::string format_name(fp8::Format format) { return format == fp8::Format::e4m3 ? "e4m3" : "e5m2"; }

fp8::Format parse_format(const std::string& text) {
  if (text == "e4m3") return fp8::Format::e4m3;
  if (text == "e5m2") return fp8::Format::e5m2;
  throw UsageError(fmt::format("unknown FP8 format '{}'; expected e4m3 or e5m2", text));
}

std::string scaling_name(Fp8Scaling scaling) { return scaling == Fp8Scaling::tensor ? "tensor" : "row"; }

Fp8Scaling parse_scaling(const std::string& text) {
  if (text == "tensor") return Fp8Scaling::tensor;
  if (text == "row") return Fp8Scaling::row;
  throw UsageError(fmt::format("unknown FP8 scaling '{}'; expected tensor or row", text));
}

namespace {

void check_floating(const at::Tensor& y, const char* what) {
  if (y.scalar_type() != at::kFloat && y.scalar_type() != at::kDouble) {
    throw UsageError(fmt::format("FP8 {}: expected a float or double tensor, got {}", what, c10::toString(y.scalar_type())));
  }
}

// The scale of every block from its amax (fp8::scale_for, elementwise).
template <typename A>
at::Tensor scales_from(const at::Tensor& amax, fp8::Format format) {
  const at::Tensor a = amax.contiguous();
  at::Tensor scale = at::empty_like(a);
  const A* in = a.data_ptr<A>();
  A* out = scale.data_ptr<A>();
  for (int64_t i = 0; i < a.numel(); ++i) out[i] = fp8::scale_for(in[i], format);
  return scale;
}

template <typename A>
void encode_all(const at::Tensor& y, const at::Tensor& scale, fp8::Format format, at::Tensor& bytes, at::Tensor& dequantized) {
  const A* in = y.data_ptr<A>();
  const A* s = scale.data_ptr<A>();
  uint8_t* code = bytes.data_ptr<uint8_t>();
  A* out = dequantized.data_ptr<A>();
  at::parallel_for(0, y.numel(), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      code[i] = fp8::encode<A>(in[i] / s[i], format);
      out[i] = fp8::decode<A>(code[i], format) * s[i];
    }
  });
}

// The amax of y's blocks: one per tensor (0-dim), or one per row (y's shape, feature dim 1).
// NaN propagates (at::amax does), so a block holding NaN gets scale 1.
at::Tensor block_amax(const at::Tensor& y, Fp8Scaling scaling, int64_t feature_dim) {
  const at::Tensor magnitude = at::abs(y);
  if (scaling == Fp8Scaling::tensor) return at::amax(magnitude.reshape({-1}), {0}, /*keepdim=*/false);
  return at::amax(magnitude, {feature_dim}, /*keepdim=*/true);
}

}  // namespace

Fp8Tensor quantize_fp8(const at::Tensor& y_in, const Fp8Output& output, int64_t feature_dim) {
  check_floating(y_in, "quantize");
  const at::NoGradGuard no_grad;
  const at::Tensor y = y_in.detach().to(at::kCPU).contiguous();
  if (output.scaling == Fp8Scaling::row && (feature_dim < 0 || feature_dim >= y.dim())) {
    throw UsageError(fmt::format("FP8 row scaling: feature dimension {} out of range for a {}-dim tensor", feature_dim, y.dim()));
  }
  Fp8Tensor q;
  at::Tensor amax;
  if (y.numel() > 0) {
    amax = block_amax(y, output.scaling, feature_dim);
  } else {  // no values: scale 1, in the shape the scaling gives
    std::vector<int64_t> shape = y.sizes().vec();
    if (output.scaling == Fp8Scaling::row) shape[static_cast<size_t>(feature_dim)] = 1;
    amax = at::zeros(output.scaling == Fp8Scaling::row ? shape : std::vector<int64_t>{}, y.options());
  }
  q.bytes = at::empty(y.sizes(), y.options().dtype(at::kByte));
  q.dequantized = at::empty_like(y);
  if (y.scalar_type() == at::kDouble) {
    q.scale = scales_from<double>(amax, output.format);
    encode_all<double>(y, q.scale.expand(y.sizes()).contiguous(), output.format, q.bytes, q.dequantized);
  } else {
    q.scale = scales_from<float>(amax, output.format);
    encode_all<float>(y, q.scale.expand(y.sizes()).contiguous(), output.format, q.bytes, q.dequantized);
  }
  if (!y_in.device().is_cpu()) {
    q.bytes = q.bytes.to(y_in.device());
    q.scale = q.scale.to(y_in.device());
    q.dequantized = q.dequantized.to(y_in.device());
  }
  return q;
}

at::Tensor dequantize_fp8(const at::Tensor& bytes_in, const at::Tensor& scale_in, fp8::Format format, at::ScalarType dtype) {
  if (bytes_in.scalar_type() != at::kByte) throw UsageError("FP8 dequantize: the bytes must be a uint8 tensor");
  if (dtype != at::kFloat && dtype != at::kDouble) throw UsageError("FP8 dequantize: dtype must be float or double");
  const at::Tensor bytes = bytes_in.to(at::kCPU).contiguous();
  const at::Tensor scale = scale_in.to(at::kCPU).to(dtype).expand(bytes.sizes()).contiguous();
  at::Tensor out = at::empty(bytes.sizes(), bytes.options().dtype(dtype));
  const uint8_t* code = bytes.data_ptr<uint8_t>();
  if (dtype == at::kDouble) {
    const double* s = scale.data_ptr<double>();
    double* o = out.data_ptr<double>();
    for (int64_t i = 0; i < bytes.numel(); ++i) o[i] = fp8::decode<double>(code[i], format) * s[i];
  } else {
    const float* s = scale.data_ptr<float>();
    float* o = out.data_ptr<float>();
    for (int64_t i = 0; i < bytes.numel(); ++i) o[i] = fp8::decode<float>(code[i], format) * s[i];
  }
  return out.to(bytes_in.device());
}

Fp8Error fp8_error(const at::Tensor& y_in, const Fp8Tensor& quantized, fp8::Format format) {
  check_floating(y_in, "error");
  const at::Tensor y = y_in.detach().to(at::kCPU).to(at::kDouble).contiguous();
  const at::Tensor got = quantized.dequantized.detach().to(at::kCPU).to(at::kDouble).contiguous();
  const at::Tensor scale = quantized.scale.to(at::kCPU).to(at::kDouble).expand(y.sizes()).contiguous();
  const at::Tensor bytes = quantized.bytes.to(at::kCPU).contiguous();
  if (got.sizes() != y.sizes() || bytes.sizes() != y.sizes()) throw UsageError("FP8 error: y and its quantization differ in shape");
  const double* v = y.data_ptr<double>();
  const double* q = got.data_ptr<double>();
  const double* s = scale.data_ptr<double>();
  const uint8_t* code = bytes.data_ptr<uint8_t>();
  double squared_error = 0, energy = 0;
  int64_t count = 0, saturated = 0, nonzero = 0, flushed = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    if (!std::isfinite(v[i])) continue;
    ++count;
    squared_error += (q[i] - v[i]) * (q[i] - v[i]);
    energy += v[i] * v[i];
    if (fp8::saturates(std::abs(v[i] / s[i]), format)) ++saturated;
    if (v[i] != 0) {
      ++nonzero;
      if ((code[i] & 0x7F) == 0) ++flushed;
    }
  }
  Fp8Error e;
  e.count = count;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  e.relative_mse = energy > 0 ? squared_error / energy : (squared_error == 0 ? 0.0 : nan);
  e.snr_db = e.relative_mse > 0 ? -10.0 * std::log10(e.relative_mse)
                                : (e.relative_mse == 0 ? std::numeric_limits<double>::infinity() : nan);
  e.saturated = count > 0 ? static_cast<double>(saturated) / count : nan;
  e.underflow = nonzero > 0 ? static_cast<double>(flushed) / nonzero : 0.0;
  return e;
}

}  // namespace ibn::norm
