// The fused CUDA kernels on raw device arrays against their CPU reference (norm_math.h, itself
// checked against LibTorch's autograd in test_norm_fused.cpp). No LibTorch here, so this
// builds wherever nvcc is, and skips when no CUDA device is found.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "norm/fused/norm_kernels.h"

namespace {

namespace fused = ibn::norm::fused;

bool have_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

template <typename V>
struct DeviceArray {
  explicit DeviceArray(const std::vector<V>& host) : n(host.size()) {
    cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(1, n) * sizeof(V));
    cudaMemcpy(ptr, host.data(), n * sizeof(V), cudaMemcpyHostToDevice);
  }
  explicit DeviceArray(size_t count) : n(count) { cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(1, n) * sizeof(V)); }
  ~DeviceArray() { cudaFree(ptr); }
  std::vector<V> host() const {
    std::vector<V> out(n);
    cudaMemcpy(out.data(), ptr, n * sizeof(V), cudaMemcpyDeviceToHost);
    return out;
  }
  V* ptr = nullptr;
  size_t n;
};

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
  return out;
}

// Token area in T (float or double) against the double reference: y, dx, dγ, dβ.
template <typename T>
void check_token(const Case& c, int64_t rows, int64_t D, bool constant_rows, double tolerance) {
  std::mt19937 rng(static_cast<unsigned>(rows * 131 + D));
  std::normal_distribution<double> normal;
  std::vector<double> x(rows * D), dy(rows * D), gamma(D), beta(D);
  for (auto& v : x) v = constant_rows ? 1.5 : normal(rng) * 2 + 0.3;
  for (auto& v : dy) v = normal(rng);
  for (auto& v : gamma) v = 0.5 + std::abs(normal(rng));
  for (auto& v : beta) v = normal(rng);
  std::vector<double> y_ref(x.size()), dx_ref(x.size()), dgamma_ref(D, 0), dbeta_ref(D, 0);
  for (int64_t r = 0; r < rows; ++r) {
    const fused::TokenGroup g{D, r};
    const auto s = fused::group_forward<double>(c.params, x.data(), y_ref.data(), g, gamma.data(), beta.data());
    fused::group_backward<double>(c.params, x.data(), dy.data(), dx_ref.data(), g, gamma.data(), s, dgamma_ref.data(),
                                  dbeta_ref.data());
  }
  using A = T;  // float inputs accumulate in float, double in double
  const fused::DType dtype = sizeof(T) == 8 ? fused::DType::f64 : fused::DType::f32;
  const std::vector<T> xt(x.begin(), x.end()), dyt(dy.begin(), dy.end());
  const std::vector<A> gt(gamma.begin(), gamma.end()), bt(beta.begin(), beta.end());
  DeviceArray<T> dx_in(xt), ddy(dyt), dy_out(x.size()), ddx(x.size());
  DeviceArray<A> dgam(gt), dbet(bt), stats(4 * rows), dgamma(D), dbeta(D);
  DeviceArray<char> workspace(fused::token_backward_workspace(dtype, rows, D));
  fused::token_forward(dtype, c.params, dx_in.ptr, dgam.ptr, dbet.ptr, dy_out.ptr, stats.ptr, rows, D, nullptr);
  fused::token_backward(dtype, c.params, dx_in.ptr, ddy.ptr, dgam.ptr, stats.ptr, ddx.ptr, dgamma.ptr, dbeta.ptr,
                        workspace.ptr, rows, D, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(fused::last_error(), nullptr);
  const auto worst = [](const std::vector<double>& ref, const std::vector<T>& got) {
    double w = 0, scale = 1;
    for (size_t i = 0; i < ref.size(); ++i) {
      w = std::max(w, std::abs(ref[i] - static_cast<double>(got[i])));
      scale = std::max(scale, std::abs(ref[i]));
    }
    return w / scale;
  };
  const std::string where = c.name + " rows=" + std::to_string(rows) + " D=" + std::to_string(D);
  EXPECT_LT(worst(y_ref, dy_out.host()), tolerance) << where;
  EXPECT_LT(worst(dx_ref, ddx.host()), tolerance * 10) << where;
  EXPECT_LT(worst(dgamma_ref, dgamma.host()), tolerance * 10) << where;
  EXPECT_LT(worst(dbeta_ref, dbeta.host()), tolerance * 10) << where;

  // Determinism: a second backward gives the same bits.
  const auto first_dx = ddx.host();
  const auto first_dgamma = dgamma.host();
  fused::token_backward(dtype, c.params, dx_in.ptr, ddy.ptr, dgam.ptr, stats.ptr, ddx.ptr, dgamma.ptr, dbeta.ptr,
                        workspace.ptr, rows, D, nullptr);
  cudaDeviceSynchronize();
  EXPECT_EQ(std::memcmp(first_dx.data(), ddx.host().data(), first_dx.size() * sizeof(T)), 0) << where;
  EXPECT_EQ(std::memcmp(first_dgamma.data(), dgamma.host().data(), first_dgamma.size() * sizeof(A)), 0) << where;
}

TEST(CudaKernels, TokenAreaMatchesTheReference) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : cases()) {
    for (int64_t D : {1, 33, 132, 260, 1025, 4096, 8192}) {
      for (int64_t rows : {1, 7, 300}) {
        check_token<double>(c, rows, D, false, 1e-10);
        check_token<float>(c, rows, D, false, 2e-4);
      }
    }
    check_token<float>(c, 65536, 64, false, 2e-4);
    check_token<double>(c, 9, 260, /*constant_rows=*/true, 1e-10);
  }
}

TEST(CudaKernels, ChannelAreaMatchesTheReference) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : cases()) {
    for (auto [N, C, HW] : {std::tuple<int64_t, int64_t, int64_t>{8, 3, 5}, {64, 16, 49}, {2, 1, 1}}) {
      std::mt19937 rng(static_cast<unsigned>(N * 7 + C));
      std::normal_distribution<double> normal;
      const int64_t size = N * C * HW;
      std::vector<double> x(size), dy(size), gamma(C), beta(C), y_ref(size), dx_ref(size), dg_ref(C, 0), db_ref(C, 0);
      std::vector<double> stats_ref;
      for (auto& v : x) v = normal(rng) + 1;
      for (auto& v : dy) v = normal(rng);
      for (auto& v : gamma) v = 1 + normal(rng) * 0.1;
      for (auto& v : beta) v = normal(rng);
      for (int64_t ch = 0; ch < C; ++ch) {
        const fused::ChannelGroup g{N, C, HW, ch};
        const auto s = fused::group_forward<double>(c.params, x.data(), y_ref.data(), g, gamma.data(), beta.data());
        fused::group_backward<double>(c.params, x.data(), dy.data(), dx_ref.data(), g, gamma.data(), s, dg_ref.data(),
                                      db_ref.data());
      }
      DeviceArray<double> dxin(x), ddy(dy), dgam(gamma), dbet(beta), y(size), dx(size), stats(4 * C), dg(C), db(C);
      fused::channel_forward(fused::DType::f64, c.params, dxin.ptr, dgam.ptr, dbet.ptr, y.ptr, stats.ptr, N, C, HW, nullptr);
      fused::channel_backward(fused::DType::f64, c.params, dxin.ptr, ddy.ptr, dgam.ptr, stats.ptr, dx.ptr, dg.ptr, db.ptr,
                              N, C, HW, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const auto close = [](const std::vector<double>& a, const std::vector<double>& b) {
        double w = 0;
        for (size_t i = 0; i < a.size(); ++i) w = std::max(w, std::abs(a[i] - b[i]));
        return w;
      };
      EXPECT_LT(close(y_ref, y.host()), 1e-10) << c.name;
      EXPECT_LT(close(dx_ref, dx.host()), 1e-9) << c.name;
      EXPECT_LT(close(dg_ref, dg.host()), 1e-9) << c.name;
      EXPECT_LT(close(db_ref, db.host()), 1e-9) << c.name;
    }
  }
}

}  // namespace
