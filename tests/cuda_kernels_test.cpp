// The fused CUDA kernels on raw device arrays against their CPU reference (norm_math.h, itself
// checked against LibTorch's autograd in test_norm_fused.cpp): y, dx, dγ, dβ for every
// operation, compression, dtype, width tier and area. No LibTorch here: the same source builds
// with nvcc (run on a GPU; skipped without one) and for the SIMT emulator (tests/cuda_emu/,
// CTest label cuda-emu), which runs it on the CPU with fewer rows.
//
// Comparisons are NaN-aware: an element that is NaN on one side and not the other counts as an
// infinite error, so a kernel writing NaN cannot pass; NaN on both sides (ε = 0 on a constant
// group, where ATen gives NaN too) agrees.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "norm/fused/norm_kernels.h"
#include "require_gpu.h"

namespace {

namespace fused = ibn::norm::fused;
namespace fp8 = ibn::norm::fp8;

#if defined(IBN_SIMT)
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

bool have_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define SKIP_WITHOUT_DEVICE() IBN_SKIP_WITHOUT_GPU(have_device(), "no CUDA device")

template <typename V>
struct DeviceArray {
  explicit DeviceArray(const std::vector<V>& host) : n(host.size()) {
    cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(1, n) * sizeof(V));
    cudaMemcpy(ptr, host.data(), n * sizeof(V), cudaMemcpyHostToDevice);
  }
  explicit DeviceArray(size_t count) : n(count) {
    cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(1, n) * sizeof(V));
    cudaMemset(ptr, 0xFF, std::max<size_t>(1, n) * sizeof(V));  // NaN: an element never written shows
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr); }
  std::vector<V> host() const {
    std::vector<V> out(n);
    cudaMemcpy(out.data(), ptr, n * sizeof(V), cudaMemcpyDeviceToHost);
    return out;
  }
  V* ptr = nullptr;
  size_t n;
};

// Host conversions for each memory type.
double to_double(float v) { return v; }
double to_double(double v) { return v; }
double to_double(__half v) { return __half2float(v); }
double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> T from_double(double v);
template <> float from_double<float>(double v) { return static_cast<float>(v); }
template <> double from_double<double>(double v) { return v; }
template <> __half from_double<__half>(double v) { return __float2half(static_cast<float>(v)); }
template <> __nv_bfloat16 from_double<__nv_bfloat16>(double v) { return __float2bfloat16(static_cast<float>(v)); }

template <typename T> constexpr fused::DType dtype_of();
template <> constexpr fused::DType dtype_of<float>() { return fused::DType::f32; }
template <> constexpr fused::DType dtype_of<double>() { return fused::DType::f64; }
template <> constexpr fused::DType dtype_of<__half>() { return fused::DType::f16; }
template <> constexpr fused::DType dtype_of<__nv_bfloat16>() { return fused::DType::bf16; }
template <typename T> using Accumulate = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Error bounds against the fp64 reference, relative to max(1, max |reference|): for y and dx
// in T (a few units of T's rounding), for dγ/dβ in the accumulation type.
struct Tolerance {
  double y, dx, affine;
};
template <typename T> Tolerance tolerance_of();
template <> Tolerance tolerance_of<double>() { return {1e-10, 1e-9, 1e-9}; }
template <> Tolerance tolerance_of<float>() { return {2e-5, 2e-4, 2e-4}; }
template <> Tolerance tolerance_of<__half>() { return {4 * 0x1p-11, 8 * 0x1p-11, 2e-4}; }
template <> Tolerance tolerance_of<__nv_bfloat16>() { return {4 * 0x1p-8, 8 * 0x1p-8, 2e-4}; }

template <typename V>
std::vector<double> widened(const std::vector<V>& values) {
  std::vector<double> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = to_double(values[i]);
  return out;
}

// The largest |reference − got| relative to max(1, max |reference|); infinite where one side is
// NaN and the other not, or the two are different infinities.
double worst_error(const std::vector<double>& reference, const std::vector<double>& got) {
  if (reference.size() != got.size()) return std::numeric_limits<double>::infinity();
  double worst = 0, scale = 1;
  for (size_t i = 0; i < reference.size(); ++i) {
    if (std::isfinite(reference[i])) scale = std::max(scale, std::abs(reference[i]));
    if (std::isnan(reference[i]) && std::isnan(got[i])) continue;
    if (reference[i] == got[i]) continue;  // equal infinities too
    const double error = std::abs(reference[i] - got[i]);
    if (!(error <= std::numeric_limits<double>::max())) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, error);
  }
  return worst / scale;
}

TEST(CudaKernelsTestTools, WorstErrorCountsNanAsInfinite) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(worst_error({1, 2}, {1, nan}), inf);
  EXPECT_EQ(worst_error({1, nan}, {1, 2}), inf);
  EXPECT_EQ(worst_error({1, nan}, {1, nan}), 0);
  EXPECT_EQ(worst_error({inf, -inf}, {inf, -inf}), 0);
  EXPECT_EQ(worst_error({inf}, {1}), inf);
  EXPECT_DOUBLE_EQ(worst_error({4, 1}, {4, 1.5}), 0.5 / 4);
}

struct Case {
  fused::Params params;
  std::string name;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (double eps : {0.0, 1e-5, 1.0}) {
    out.push_back({{fused::Op::standardize, fused::Psi::identity, 0, eps, true}, "standardize eps=" + std::to_string(eps)});
  }
  out.push_back({{fused::Op::rms, fused::Psi::identity, 0, 1e-5, true}, "rms"});
  for (auto psi : {fused::Psi::sign_power, fused::Psi::log, fused::Psi::tanh}) {
    for (double lambda : {0.0, 0.5, 2.0}) {
      out.push_back({{fused::Op::ibnorm, psi, lambda, 1e-5, true},
                     "ibnorm psi=" + std::to_string(static_cast<int>(psi)) + " lambda=" + std::to_string(lambda)});
    }
  }
  out.push_back({{fused::Op::ibnorm, fused::Psi::tanh, 1.0, 1e-5, false}, "ibnorm-t affine=false"});
  return out;
}

// Inputs of one test: x and dy quantized to T (the reference sees the same values), γ and β.
template <typename T>
struct Inputs {
  std::vector<T> x, dy;
  std::vector<Accumulate<T>> gamma, beta;
};
template <typename T>
Inputs<T> make_inputs(int64_t size, int64_t features, unsigned seed, bool constant) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Inputs<T> in;
  for (int64_t i = 0; i < size; ++i) in.x.push_back(from_double<T>(constant ? 1.5 : normal(rng) * 2 + 0.3));
  for (int64_t i = 0; i < size; ++i) in.dy.push_back(from_double<T>(normal(rng)));
  for (int64_t f = 0; f < features; ++f) in.gamma.push_back(static_cast<Accumulate<T>>(0.5 + std::abs(normal(rng))));
  for (int64_t f = 0; f < features; ++f) in.beta.push_back(static_cast<Accumulate<T>>(normal(rng)));
  return in;
}

struct Reference {
  std::vector<double> y, dx, dgamma, dbeta;
};
template <typename T, typename Group, typename Groups>
Reference reference_of(const fused::Params& p, const Inputs<T>& in, int64_t features, int64_t groups, Groups group_of) {
  const std::vector<double> x = widened(in.x), dy = widened(in.dy);
  const std::vector<double> gamma(in.gamma.begin(), in.gamma.end()), beta(in.beta.begin(), in.beta.end());
  Reference r{std::vector<double>(x.size()), std::vector<double>(x.size()), std::vector<double>(features, 0),
              std::vector<double>(features, 0)};
  for (int64_t g = 0; g < groups; ++g) {
    const Group group = group_of(g);
    const auto s = fused::group_forward<double>(p, x.data(), r.y.data(), group, gamma.data(), beta.data());
    fused::group_backward<double>(p, x.data(), dy.data(), r.dx.data(), group, gamma.data(), s, r.dgamma.data(),
                                  r.dbeta.data());
  }
  return r;
}

// y, dx (in T, widened) and dγ, dβ (when affine) against the reference, within T's tolerance.
template <typename T>
void expect_matches(const Reference& ref, const std::vector<double>& y, const std::vector<double>& dx,
                    const std::vector<double>& dgamma, const std::vector<double>& dbeta, bool affine,
                    const std::string& where) {
  const Tolerance tolerance = tolerance_of<T>();
  EXPECT_LT(worst_error(ref.y, y), tolerance.y) << "y " << where;
  EXPECT_LT(worst_error(ref.dx, dx), tolerance.dx) << "dx " << where;
  if (affine) {
    EXPECT_LT(worst_error(ref.dgamma, dgamma), tolerance.affine) << "dgamma " << where;
    EXPECT_LT(worst_error(ref.dbeta, dbeta), tolerance.affine) << "dbeta " << where;
  }
}

// Token area in T against the fp64 reference: y, dx, dγ, dβ; then a second backward must give
// the same bits. `offset` > 0 starts the tensors one element past an aligned address.
template <typename T>
void check_token(const Case& c, int64_t rows, int64_t D, bool constant_rows = false, int64_t offset = 0) {
  using A = Accumulate<T>;
  constexpr fused::DType dtype = dtype_of<T>();
  const Inputs<T> in = make_inputs<T>(rows * D, D, static_cast<unsigned>(rows * 131 + D), constant_rows);
  const Reference ref = reference_of<T, fused::TokenGroup>(c.params, in, D, rows, [&](int64_t r) { return fused::TokenGroup{D, r}; });
  std::vector<T> x_padded(offset, from_double<T>(0)), dy_padded(offset, from_double<T>(0));
  x_padded.insert(x_padded.end(), in.x.begin(), in.x.end());
  dy_padded.insert(dy_padded.end(), in.dy.begin(), in.dy.end());
  DeviceArray<T> x(x_padded), dy(dy_padded), y(offset + rows * D), dx(offset + rows * D);
  DeviceArray<A> gamma(in.gamma), beta(in.beta), stats(fused::kStatsPerGroup * rows), dgamma(D), dbeta(D);
  DeviceArray<char> workspace(fused::token_backward_workspace(dtype, rows, D));
  const std::string where = c.name + " " + std::to_string(static_cast<int>(dtype)) + " rows=" + std::to_string(rows) +
                            " D=" + std::to_string(D) + " (" + fused::tier_name(fused::token_tier(D)) + ")" +
                            (offset ? " unaligned" : "") + (constant_rows ? " constant rows" : "");
  fused::token_forward(dtype, c.params, x.ptr + offset, gamma.ptr, beta.ptr, y.ptr + offset, stats.ptr, rows, D, nullptr);
  ASSERT_EQ(fused::last_error(), nullptr) << where;
  void* dg = c.params.affine ? dgamma.ptr : nullptr;
  void* db = c.params.affine ? dbeta.ptr : nullptr;
  fused::token_backward(dtype, c.params, x.ptr + offset, dy.ptr + offset, gamma.ptr, stats.ptr, dx.ptr + offset, dg, db,
                        workspace.ptr, rows, D, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << where;
  ASSERT_EQ(fused::last_error(), nullptr) << where;
  const auto tail = [&](const std::vector<T>& all) { return widened(std::vector<T>(all.begin() + offset, all.end())); };
  expect_matches<T>(ref, tail(y.host()), tail(dx.host()), widened(dgamma.host()), widened(dbeta.host()), c.params.affine, where);
  const auto first_dx = dx.host();
  const auto first_dgamma = dgamma.host();
  fused::token_backward(dtype, c.params, x.ptr + offset, dy.ptr + offset, gamma.ptr, stats.ptr, dx.ptr + offset, dg, db,
                        workspace.ptr, rows, D, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(std::memcmp(first_dx.data(), dx.host().data(), first_dx.size() * sizeof(T)), 0) << "bits of dx " << where;
  EXPECT_EQ(std::memcmp(first_dgamma.data(), dgamma.host().data(), first_dgamma.size() * sizeof(A)), 0)
      << "bits of dgamma " << where;
}

// Widths that reach every tier and path: the warp tier (1 to 256), the block tier (to 4096), its
// 16-per-thread variant (to 8192) and streaming; widths that leave a scalar tail or unaligned
// rows (33, 1025, 6000 + 1 element of offset).
const std::vector<int64_t>& token_widths() {
  static const std::vector<int64_t> widths = {1, 33, 132, 260, 1025, 4096, 6000, 8192, 9000, 16411};
  return widths;
}
const std::vector<int64_t>& token_rows() {
  static const std::vector<int64_t> rows = kEmulated ? std::vector<int64_t>{1, 7, 23} : std::vector<int64_t>{1, 7, 300};
  return rows;
}

template <typename T>
void check_token_area(double max_elements) {
  for (const Case& c : cases()) {
    for (int64_t D : token_widths()) {
      for (int64_t rows : token_rows()) {
        if (static_cast<double>(rows * D) > max_elements && rows > 1) continue;
        check_token<T>(c, rows, D);
      }
    }
  }
}

// Full-precision types on every case; the narrow ones (whose slots hold 8 values per vector)
// on every case too, with fewer rows under the emulator.
TEST(CudaKernels, TokenAreaDoubleMatchesTheReference) {
  SKIP_WITHOUT_DEVICE();
  check_token_area<double>(kEmulated ? 40000 : 1e9);
}
TEST(CudaKernels, TokenAreaFloatMatchesTheReference) {
  SKIP_WITHOUT_DEVICE();
  check_token_area<float>(kEmulated ? 40000 : 1e9);
  for (const Case& c : cases()) check_token<float>(c, kEmulated ? 1500 : 65536, 64);
}
TEST(CudaKernels, TokenAreaHalfMatchesTheReference) {
  SKIP_WITHOUT_DEVICE();
  check_token_area<__half>(kEmulated ? 20000 : 1e9);
}
TEST(CudaKernels, TokenAreaBfloat16MatchesTheReference) {
  SKIP_WITHOUT_DEVICE();
  check_token_area<__nv_bfloat16>(kEmulated ? 20000 : 1e9);
}

// ε = 0 on constant rows is NaN on both sides; unaligned tensors take the scalar path.
TEST(CudaKernels, TokenAreaConstantRowsAndUnalignedTensors) {
  SKIP_WITHOUT_DEVICE();
  for (const Case& c : cases()) {
    for (int64_t D : {33, 260, 4096, 6000, 16411}) {
      check_token<double>(c, 3, D, /*constant_rows=*/true);
      check_token<__nv_bfloat16>(c, 3, D, /*constant_rows=*/true);
      check_token<float>(c, 5, D, false, /*offset=*/1);
      check_token<__half>(c, 5, D, false, /*offset=*/1);
    }
  }
}

// Batch area, [N, C, HW]: channel tiles (HW = 1) and one channel per block (HW > 1), several
// chunks of N (the partials merged in order) and one.
template <typename T>
void check_channel(const Case& c, int64_t N, int64_t C, int64_t HW, bool constant = false) {
  using A = Accumulate<T>;
  constexpr fused::DType dtype = dtype_of<T>();
  const int64_t size = N * C * HW;
  const Inputs<T> in = make_inputs<T>(size, C, static_cast<unsigned>(N * 7 + C), constant);
  const Reference ref = reference_of<T, fused::ChannelGroup>(c.params, in, C, C, [&](int64_t ch) { return fused::ChannelGroup{N, C, HW, ch}; });
  DeviceArray<T> x(in.x), dy(in.dy), y(size), dx(size);
  DeviceArray<A> gamma(in.gamma), beta(in.beta), stats(fused::kStatsPerGroup * C), dgamma(C), dbeta(C);
  DeviceArray<char> workspace(fused::channel_workspace(dtype, N, C, HW));
  const std::string where = c.name + " " + std::to_string(static_cast<int>(dtype)) + " [" + std::to_string(N) + "," +
                            std::to_string(C) + "," + std::to_string(HW) + "]" + (constant ? " constant" : "");
  fused::channel_forward(dtype, c.params, x.ptr, gamma.ptr, beta.ptr, y.ptr, stats.ptr, workspace.ptr, N, C, HW, nullptr);
  ASSERT_EQ(fused::last_error(), nullptr) << where;
  void* dg = c.params.affine ? dgamma.ptr : nullptr;
  void* db = c.params.affine ? dbeta.ptr : nullptr;
  fused::channel_backward(dtype, c.params, x.ptr, dy.ptr, gamma.ptr, stats.ptr, dx.ptr, dg, db, workspace.ptr, N, C, HW, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << where;
  ASSERT_EQ(fused::last_error(), nullptr) << where;
  expect_matches<T>(ref, widened(y.host()), widened(dx.host()), widened(dgamma.host()), widened(dbeta.host()), c.params.affine,
                    where);
  const auto first_dx = dx.host();
  fused::channel_backward(dtype, c.params, x.ptr, dy.ptr, gamma.ptr, stats.ptr, dx.ptr, dg, db, workspace.ptr, N, C, HW, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(std::memcmp(first_dx.data(), dx.host().data(), first_dx.size() * sizeof(T)), 0) << "bits of dx " << where;
}

using Shape3 = std::tuple<int64_t, int64_t, int64_t>;
const std::vector<Shape3>& channel_shapes() {
  static const std::vector<Shape3> shapes = {{8, 3, 5}, {64, 16, 49}, {2, 1, 1}, {300, 40, 1}, {64, 2, 9}, {9, 70, 1}};
  return shapes;
}

TEST(CudaKernels, ChannelAreaMatchesTheReference) {
  SKIP_WITHOUT_DEVICE();
  for (const Case& c : cases()) {
    for (const auto& [N, C, HW] : channel_shapes()) {
      check_channel<double>(c, N, C, HW);
      check_channel<float>(c, N, C, HW);
      check_channel<__half>(c, N, C, HW);
      check_channel<__nv_bfloat16>(c, N, C, HW);
    }
    check_channel<double>(c, 16, 3, 4, /*constant=*/true);
  }
}

// ---- FP8 output stage ----
// The kernels' bytes, scales and dequantized values against the same stage computed here from
// the kernels' own saved statistics with norm_math.h's normalized() and the codec: the same
// arithmetic, so under the emulator every byte and scale agrees. On a GPU, nvcc's fused
// multiply-adds may move a value across a rounding boundary: one code at most, rarely. The saved
// statistics themselves are checked through y against the fp64 reference, within T's tolerance.
struct Fp8Case {
  fp8::Format format;
  bool per_row;
};

// `nan_at` >= 0 puts a NaN into x there: its group's y is NaN, and so is the amax of its block,
// whose scale is then 1 (the codes keep the NaN; its sign is the arithmetic's, not compared).
template <typename T>
void check_fp8(const Case& c, const Fp8Case& q, bool channels, int64_t outer, int64_t features, int64_t inner,
               int64_t nan_at = -1) {
  using A = Accumulate<T>;
  constexpr fused::DType dtype = dtype_of<T>();
  const int64_t n = outer * features * inner;
  Inputs<T> in = make_inputs<T>(n, features, static_cast<unsigned>(outer * 5 + features + inner), false);
  if (nan_at >= 0) in.x[nan_at] = from_double<T>(std::numeric_limits<double>::quiet_NaN());
  const int64_t groups = channels ? features : outer;
  DeviceArray<T> x(in.x), y(n), dequantized(n);
  DeviceArray<A> gamma(in.gamma), beta(in.beta), stats(fused::kStatsPerGroup * groups);
  const std::string where = c.name + " " + std::to_string(static_cast<int>(dtype)) + (channels ? " channels [" : " tokens [") +
                            std::to_string(outer) + "," + std::to_string(features) + "," + std::to_string(inner) + "] " +
                            (q.format == fp8::Format::e4m3 ? "e4m3" : "e5m2") + (q.per_row ? " per row" : " per tensor") +
                            (nan_at >= 0 ? " NaN at " + std::to_string(nan_at) : "");
  if (channels) {
    DeviceArray<char> workspace(fused::channel_workspace(dtype, outer, features, inner));
    fused::channel_forward(dtype, c.params, x.ptr, gamma.ptr, beta.ptr, y.ptr, stats.ptr, workspace.ptr, outer, features,
                           inner, nullptr);
  } else {
    fused::token_forward(dtype, c.params, x.ptr, gamma.ptr, beta.ptr, y.ptr, stats.ptr, outer, features, nullptr);
  }
  ASSERT_EQ(fused::last_error(), nullptr) << where;
  const fused::Fp8Layout layout{outer, features, inner, channels};
  DeviceArray<uint8_t> bytes(n);
  DeviceArray<A> scale(q.per_row ? layout.rows() : 1);
  DeviceArray<char> workspace(fused::fp8_workspace(dtype, layout));
  fused::fp8_output(dtype, c.params, q.format, q.per_row, x.ptr, c.params.affine ? gamma.ptr : nullptr,
                    c.params.affine ? beta.ptr : nullptr, stats.ptr, bytes.ptr, scale.ptr, dequantized.ptr, workspace.ptr,
                    layout, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << where;
  ASSERT_EQ(fused::last_error(), nullptr) << where;

  // y in A from the kernels' statistics, the rows' amax, the scales, the codes.
  const std::vector<A> saved = stats.host();
  const auto index = [&](int64_t o, int64_t f, int64_t i) { return (o * features + f) * inner + i; };
  std::vector<A> y_ref(n);
  std::vector<double> y_wide(n);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t f = 0; f < features; ++f) {
      for (int64_t i = 0; i < inner; ++i) {
        const A* s = saved.data() + (channels ? f : o) * fused::kStatsPerGroup;
        fused::GroupStats<A> g;
        g.mean = s[fused::kMean], g.rstd = s[fused::kRstd], g.mean_u = s[fused::kMeanU], g.rstd_u = s[fused::kRstdU];
        const A xhat = fused::normalized(c.params, static_cast<A>(to_double(in.x[index(o, f, i)])), g);
        const int64_t e = index(o, f, i);
        y_ref[e] = c.params.affine ? in.gamma[f] * xhat + in.beta[f] : xhat;
        y_wide[e] = static_cast<double>(y_ref[e]);
      }
    }
  }
  const Reference ref = channels ? reference_of<T, fused::ChannelGroup>(c.params, in, features, features, [&](int64_t ch) {
    return fused::ChannelGroup{outer, features, inner, ch};
  })
                                 : reference_of<T, fused::TokenGroup>(c.params, in, features, outer, [&](int64_t r) {
                                     return fused::TokenGroup{features, r};
                                   });
  if (nan_at < 0) {
    EXPECT_LT(worst_error(ref.y, y_wide), tolerance_of<T>().y) << "statistics " << where;
  }
  std::vector<A> scale_ref(q.per_row ? layout.rows() : 1, A(0));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      for (int64_t f = 0; f < features; ++f) {
        A& amax = scale_ref[q.per_row ? o * inner + i : 0];
        const A magnitude = std::abs(y_ref[index(o, f, i)]);
        amax = std::isnan(amax) || std::isnan(magnitude) ? std::numeric_limits<A>::quiet_NaN() : std::max(amax, magnitude);
      }
    }
  }
  for (A& s : scale_ref) s = fp8::scale_for(s, q.format);
  const std::vector<A> got_scale = scale.host();
  for (size_t r = 0; r < scale_ref.size(); ++r) {
    if (kEmulated) {
      ASSERT_EQ(got_scale[r], scale_ref[r]) << "scale " << r << " " << where;
    } else {
      ASSERT_NEAR(got_scale[r], scale_ref[r], 1e-5 * scale_ref[r]) << "scale " << r << " " << where;
    }
  }
  const std::vector<uint8_t> got = bytes.host();
  const std::vector<double> got_dequantized = widened(dequantized.host());
  int64_t differing = 0;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t f = 0; f < features; ++f) {
      for (int64_t i = 0; i < inner; ++i) {
        const int64_t e = index(o, f, i);
        const A s = scale_ref[q.per_row ? o * inner + i : 0];
        const uint8_t expected = fp8::encode<A>(y_ref[e] / s, q.format);
        if ((expected & 0x7F) == fp8::kNanCode) {
          ASSERT_EQ(got[e] & 0x7F, fp8::kNanCode) << "NaN byte " << e << " " << where;
          ASSERT_TRUE(std::isnan(got_dequantized[e])) << "NaN dequantized " << e << " " << where;
          continue;
        }
        if (got[e] == expected) {
          if (kEmulated) {
            ASSERT_EQ(got_dequantized[e], to_double(from_double<T>(static_cast<double>(fp8::decode<A>(expected, q.format) * s))))
                << "dequantized " << e << " " << where;
          }
          continue;
        }
        ++differing;
        ASSERT_FALSE(kEmulated) << "byte " << e << ": " << int(got[e]) << " != " << int(expected) << " " << where;
        ASSERT_EQ(got[e] & 0x80, expected & 0x80) << where;
        ASSERT_LE(std::abs((got[e] & 0x7F) - (expected & 0x7F)), 1) << where;
      }
    }
  }
  EXPECT_LE(differing, n / 1000 + 1) << where;
}

TEST(CudaKernels, Fp8OutputStageMatchesTheReference) {
  SKIP_WITHOUT_DEVICE();
  const std::vector<Case> fp8_cases = {
      {{fused::Op::standardize, fused::Psi::identity, 0, 1e-5, true}, "standardize"},
      {{fused::Op::rms, fused::Psi::identity, 0, 1e-5, true}, "rms"},
      {{fused::Op::ibnorm, fused::Psi::tanh, 2.0, 1e-5, true}, "ibnorm-t lambda=2"},
      {{fused::Op::ibnorm, fused::Psi::sign_power, 0.5, 1e-5, true}, "ibnorm-s lambda=0.5"},
      {{fused::Op::ibnorm, fused::Psi::log, 1.0, 1e-5, false}, "ibnorm-l affine=false"},
  };
  using Shape = std::tuple<bool, int64_t, int64_t, int64_t>;  // channels, outer, features, inner
  // The last two have more rows than the launch has warps (a second grid-stride pass) and than
  // the tensor-scale block has threads.
  const std::vector<Shape> shapes = {{false, 7, 33, 1}, {false, 5, 260, 1}, {false, 3, 1025, 1}, {true, 4, 6, 5},
                                     {true, 9, 40, 1},  {false, 600, 9, 1}, {true, 3, 4, 130}};
  for (const Case& c : fp8_cases) {
    for (const auto& [channels, outer, features, inner] : shapes) {
      for (fp8::Format format : {fp8::Format::e4m3, fp8::Format::e5m2}) {
        for (bool per_row : {false, true}) {
          check_fp8<float>(c, {format, per_row}, channels, outer, features, inner);
          check_fp8<__nv_bfloat16>(c, {format, per_row}, channels, outer, features, inner);
        }
      }
      check_fp8<double>(c, {fp8::Format::e4m3, true}, channels, outer, features, inner);
    }
  }
  // A NaN in x: per tensor every scale is 1; per row only its group's rows.
  const Case layernorm = fp8_cases.front();
  for (bool per_row : {false, true}) {
    check_fp8<float>(layernorm, {fp8::Format::e4m3, per_row}, false, 7, 33, 1, /*nan_at=*/40);
    check_fp8<float>(layernorm, {fp8::Format::e5m2, per_row}, true, 4, 6, 5, /*nan_at=*/17);
  }
}

// A small launch set reaching every token tier, both channel layouts, the vector and scalar
// paths and two dtypes, with few rows: what scripts/gpu-verify.sh runs under compute-sanitizer's
// memcheck, racecheck and synccheck (each slows kernels by 10-100×).
TEST(CudaKernels, SanitizerLaunchSet) {
  SKIP_WITHOUT_DEVICE();
  const Case rms{{fused::Op::rms, fused::Psi::identity, 0, 1e-5, true}, "rms"};
  const Case tanh{{fused::Op::ibnorm, fused::Psi::tanh, 1.0, 1e-5, true}, "ibnorm-t"};
  for (const Case& c : {rms, tanh}) {
    for (int64_t D : {100, 1025, 6000, 9000}) {
      check_token<__nv_bfloat16>(c, 5, D);
      check_token<float>(c, 3, D, false, /*offset=*/1);
    }
    check_channel<__nv_bfloat16>(c, 40, 33, 1);
    check_channel<float>(c, 9, 3, 49);
  }
}

#if defined(IBN_SIMT)
// The bytes-per-element accounting that `ibn bench norm` prints is the emulator's count of the
// kernels' global loads and stores, for every tier and area.
TEST(CudaKernels, TrafficAccountingMatchesTheEmulatorsCount) {
  int multiprocessors = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  const auto measure = [](auto body, double elements) {
    simt::traffic() = {};
    body();
    return static_cast<double>(simt::traffic().loaded + simt::traffic().stored) / elements;
  };
  for (const Case& c : cases()) {
    for (int64_t D : {100, 1025, 6000, 9000}) {
      const int64_t rows = 13;
      const fused::DType dtype = fused::DType::bf16;
      DeviceArray<__nv_bfloat16> x(rows * D), dy(rows * D), out(rows * D);
      cudaMemset(x.ptr, 0, rows * D * 2), cudaMemset(dy.ptr, 0, rows * D * 2);
      DeviceArray<float> gamma(std::vector<float>(D, 1)), beta(std::vector<float>(D, 0)), stats(fused::kStatsPerGroup * rows);
      DeviceArray<float> dgamma(D), dbeta(D);
      DeviceArray<char> workspace(fused::token_backward_workspace(dtype, rows, D));
      const double n = static_cast<double>(rows * D);
      const double forward = measure([&] { fused::token_forward(dtype, c.params, x.ptr, gamma.ptr, beta.ptr, out.ptr, stats.ptr, rows, D, nullptr); }, n);
      void* dg = c.params.affine ? dgamma.ptr : nullptr;
      void* db = c.params.affine ? dbeta.ptr : nullptr;
      const double backward = measure([&] { fused::token_backward(dtype, c.params, x.ptr, dy.ptr, gamma.ptr, stats.ptr, out.ptr, dg, db, workspace.ptr, rows, D, nullptr); }, n);
      const fused::Traffic expected = fused::token_traffic(dtype, c.params, rows, D, multiprocessors);
      EXPECT_NEAR(forward, expected.forward, 1e-9) << c.name << " token forward D=" << D;
      EXPECT_NEAR(backward, expected.backward, 1e-9) << c.name << " token backward D=" << D;
    }
    for (const auto& [N, C, HW] : channel_shapes()) {
      const fused::DType dtype = fused::DType::f32;
      const int64_t size = N * C * HW;
      DeviceArray<float> x(std::vector<float>(size, 1)), dy(std::vector<float>(size, 1)), out(size);
      DeviceArray<float> gamma(std::vector<float>(C, 1)), beta(std::vector<float>(C, 0)), stats(fused::kStatsPerGroup * C);
      DeviceArray<float> dgamma(C), dbeta(C);
      DeviceArray<char> workspace(fused::channel_workspace(dtype, N, C, HW));
      const double n = static_cast<double>(size);
      const double forward = measure([&] { fused::channel_forward(dtype, c.params, x.ptr, gamma.ptr, beta.ptr, out.ptr, stats.ptr, workspace.ptr, N, C, HW, nullptr); }, n);
      void* dg = c.params.affine ? dgamma.ptr : nullptr;
      void* db = c.params.affine ? dbeta.ptr : nullptr;
      const double backward = measure([&] { fused::channel_backward(dtype, c.params, x.ptr, dy.ptr, gamma.ptr, stats.ptr, out.ptr, dg, db, workspace.ptr, N, C, HW, nullptr); }, n);
      const fused::Traffic expected = fused::channel_traffic(dtype, c.params, N, C, HW, multiprocessors);
      EXPECT_NEAR(forward, expected.forward, 1e-9) << c.name << " channel forward " << N << "," << C << "," << HW;
      EXPECT_NEAR(backward, expected.backward, 1e-9) << c.name << " channel backward " << N << "," << C << "," << HW;
    }
  }
}
#endif

// Indices beyond 2³¹ elements (int64 throughout), on a GPU only (about 17 GB for the token
// area, 9 GB for the batch area): the token area's last rows forward and backward, for a
// [2³¹/4096 + 2, 4096] bf16 tensor, and one channel of a [2, 2, 2²⁹ + 1] one, against the
// reference. The rest of each tensor is zeros.
template <typename V>
struct HugeArray {
  explicit HugeArray(size_t count) : n(count) {
    if (cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(V)) != cudaSuccess) ptr = nullptr;
    if (ptr != nullptr) cudaMemset(ptr, 0, n * sizeof(V));
  }
  HugeArray(const HugeArray&) = delete;
  HugeArray& operator=(const HugeArray&) = delete;
  ~HugeArray() { cudaFree(ptr); }
  void put(size_t at, const std::vector<V>& values) { cudaMemcpy(ptr + at, values.data(), values.size() * sizeof(V), cudaMemcpyHostToDevice); }
  std::vector<double> get(size_t at, size_t count) const {
    std::vector<V> out(count);
    cudaMemcpy(out.data(), ptr + at, count * sizeof(V), cudaMemcpyDeviceToHost);
    return widened(out);
  }
  V* ptr = nullptr;
  size_t n;
};

TEST(CudaKernels, TokenAreaBeyondTwoToThe31Elements) {
  if (kEmulated) GTEST_SKIP() << "2^31 elements are too many for the emulator";
  SKIP_WITHOUT_DEVICE();
  using T = __nv_bfloat16;
  const int64_t D = 4096, rows = (int64_t{1} << 31) / D + 2, size = rows * D, last = 3;
  const Case c{{fused::Op::ibnorm, fused::Psi::tanh, 1.0, 1e-5, true}, "ibnorm-t"};
  HugeArray<T> x(size), dy(size), y(size), dx(size);
  if (x.ptr == nullptr || dy.ptr == nullptr || y.ptr == nullptr || dx.ptr == nullptr) GTEST_SKIP() << "not enough device memory";
  const Inputs<T> tail = make_inputs<T>(last * D, D, 99, false);
  x.put((rows - last) * D, tail.x), dy.put((rows - last) * D, tail.dy);
  DeviceArray<float> gamma(tail.gamma), beta(tail.beta), stats(rows * fused::kStatsPerGroup), dgamma(D), dbeta(D);
  DeviceArray<char> workspace(fused::token_backward_workspace(fused::DType::bf16, rows, D));
  fused::token_forward(fused::DType::bf16, c.params, x.ptr, gamma.ptr, beta.ptr, y.ptr, stats.ptr, rows, D, nullptr);
  fused::token_backward(fused::DType::bf16, c.params, x.ptr, dy.ptr, gamma.ptr, stats.ptr, dx.ptr, dgamma.ptr, dbeta.ptr,
                        workspace.ptr, rows, D, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(fused::last_error(), nullptr);
  // The zero rows add nothing to dβ, but their x̂ (0 with ε) contributes 0 to dγ too: the sums
  // over all rows equal the tail's.
  const Reference ref = reference_of<T, fused::TokenGroup>(c.params, tail, D, last, [&](int64_t r) { return fused::TokenGroup{D, r}; });
  expect_matches<T>(ref, y.get((rows - last) * D, last * D), dx.get((rows - last) * D, last * D), widened(dgamma.host()),
                    widened(dbeta.host()), true, "rows beyond 2^31 elements");
}

TEST(CudaKernels, ChannelAreaBeyondTwoToThe31Elements) {
  if (kEmulated) GTEST_SKIP() << "2^31 elements are too many for the emulator";
  SKIP_WITHOUT_DEVICE();
  using T = __nv_bfloat16;
  const int64_t N = 2, C = 2, HW = (int64_t{1} << 29) + 1, size = N * C * HW;
  const fused::Params p{fused::Op::ibnorm, fused::Psi::tanh, 1.0, 1e-5, false};
  HugeArray<T> x(size), y(size);
  if (x.ptr == nullptr || y.ptr == nullptr) GTEST_SKIP() << "not enough device memory";
  std::vector<T> host(size);  // a fixed pattern: 4 GB of random draws would take minutes
  for (int64_t i = 0; i < size; ++i) host[i] = from_double<T>(static_cast<double>((uint64_t(i) * 2654435761u) % 1000) / 250.0 - 2.0);
  x.put(0, host);
  DeviceArray<float> stats(C * fused::kStatsPerGroup);
  DeviceArray<char> workspace(fused::channel_workspace(fused::DType::bf16, N, C, HW));
  fused::channel_forward(fused::DType::bf16, p, x.ptr, nullptr, nullptr, y.ptr, stats.ptr, workspace.ptr, N, C, HW, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(fused::last_error(), nullptr);
  // The last channel as one contiguous group for the reference; its last 1000 values are the
  // tensor's last 1000, past 2³¹.
  std::vector<double> channel(N * HW), reference(N * HW);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t hw = 0; hw < HW; ++hw) channel[n * HW + hw] = to_double(host[(n * C + C - 1) * HW + hw]);
  }
  fused::group_forward<double>(p, channel.data(), reference.data(), fused::TokenGroup{N * HW, 0},
                               static_cast<const double*>(nullptr), static_cast<const double*>(nullptr));
  EXPECT_LT(worst_error(std::vector<double>(reference.end() - 1000, reference.end()), y.get(size - 1000, 1000)),
            tolerance_of<T>().y);
}

}  // namespace
