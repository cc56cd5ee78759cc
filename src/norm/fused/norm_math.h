#pragma once
// The fused normalizers' arithmetic, shared by the CUDA kernels (norm_kernels.cu) and by the
// CPU reference below that the tests compare with LibTorch's autograd of the ATen path.
// Plain C++ (no LibTorch): it compiles with nvcc and with the host compiler alike.
//
// One group g (a row of the token area, or a channel of the batch area over N·H·W) of n values:
//   standardize: x̂ = (x − μ)·r,               r = 1/√(mean((x − μ)²) + ε)
//   rms:         x̂ = x·r,                     r = 1/√(mean(x²) + ε)
//   ibnorm:      z = (x − μ)·r, u = ψ_λ(z),   x̂ = (u − μ_u)·r_u   (λ = 0: x̂ = z)
//   y = γ_c·x̂ + β_c
// Backward, with ĝ = γ·dy, for s = (v − m)·r over the group: dv = r·(ĝ − mean ĝ − s·mean(ĝ·s));
// for rms (no centring): dv = r·(ĝ − s·mean(ĝ·s)); ibnorm chains both through ψ'(z).
// Saved per group: μ, r (and μ_u, r_u); z, u, x̂ are recomputed in the backward pass.
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define IBN_HD __host__ __device__ __forceinline__
#else
#define IBN_HD inline
#endif

namespace ibn::norm::fused {

enum class Op : int { standardize = 0, rms = 1, ibnorm = 2 };
enum class Psi : int { identity = 0, sign_power = 1, log = 2, tanh = 3 };

struct Params {
  Op op = Op::standardize;
  Psi psi = Psi::identity;
  double lambda = 0;
  double eps = 1e-5;
  bool affine = true;
  // ibnorm with λ > 0: the second standardization runs (λ = 0 is exactly `standardize`).
  IBN_HD bool compresses() const { return op == Op::ibnorm && lambda != 0.0; }
};

// δ of IBNorm-S: keeps ψ' finite at 0 (compression_sign_power.cpp, the ATen path, uses it too).
constexpr double kSignPowerDelta = 1e-3;

template <typename A>
IBN_HD A psi(const Params& p, A z) {
  const A lambda = static_cast<A>(p.lambda);
  const A sign = z < A(0) ? A(-1) : (z > A(0) ? A(1) : A(0));
  const A a = z < A(0) ? -z : z;
  switch (p.psi) {
    case Psi::sign_power: {
      const A power = A(1) / (A(1) + lambda), delta = static_cast<A>(kSignPowerDelta);
      return sign * (pow(a + delta, power) - pow(delta, power));
    }
    case Psi::log: return sign * log1p(lambda * a) / lambda;
    case Psi::tanh: return tanh(lambda * z) / lambda;
    default: return z;
  }
}

template <typename A>
IBN_HD A dpsi(const Params& p, A z) {
  const A lambda = static_cast<A>(p.lambda);
  const A a = z < A(0) ? -z : z;
  switch (p.psi) {
    case Psi::sign_power: {
      const A power = A(1) / (A(1) + lambda), delta = static_cast<A>(kSignPowerDelta);
      return power * pow(a + delta, power - A(1));
    }
    case Psi::log: return A(1) / (A(1) + lambda * a);
    case Psi::tanh: {
      const A t = tanh(lambda * z);
      return A(1) - t * t;
    }
    default: return A(1);
  }
}

// Per-group statistics saved by the forward pass.
template <typename A>
struct GroupStats {
  A mean = 0, rstd = 1, mean_u = 0, rstd_u = 1;
};

// Which elements form group g, and which γ/β index each element uses.
// Token area: a row of D features; γ per feature.
struct TokenGroup {
  int64_t D = 0, row = 0;
  IBN_HD int64_t size() const { return D; }
  IBN_HD int64_t at(int64_t i) const { return row * D + i; }
  IBN_HD int64_t feature(int64_t i) const { return i; }
};
// Batch area: channel c of an [N, C, HW] tensor, over N·HW values; γ per channel.
struct ChannelGroup {
  int64_t N = 0, C = 0, HW = 0, c = 0;
  IBN_HD int64_t size() const { return N * HW; }
  IBN_HD int64_t at(int64_t i) const { return ((i / HW) * C + c) * HW + i % HW; }
  IBN_HD int64_t feature(int64_t) const { return c; }
};

// x̂ of one value from its group's statistics.
template <typename A>
IBN_HD A normalized(const Params& p, A x, const GroupStats<A>& s) {
  const A z = (x - s.mean) * s.rstd;
  return p.compresses() ? (psi(p, z) - s.mean_u) * s.rstd_u : z;
}

// ---- CPU reference: one group at a time, plain loops (the kernels do the same sums with
// block reductions). A is the accumulation type; γ, β, dγ, dβ are in A.

template <typename A, typename T, typename Group>
GroupStats<A> group_forward(const Params& p, const T* x, T* y, const Group& g, const A* gamma, const A* beta) {
  const int64_t n = g.size();
  GroupStats<A> s;
  A sum = 0;
  if (p.op != Op::rms) {
    for (int64_t i = 0; i < n; ++i) sum += static_cast<A>(x[g.at(i)]);
    s.mean = sum / static_cast<A>(n);
  }
  A sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    const A d = static_cast<A>(x[g.at(i)]) - s.mean;
    sq += d * d;
  }
  s.rstd = A(1) / std::sqrt(sq / static_cast<A>(n) + static_cast<A>(p.eps));
  if (p.compresses()) {
    A sum_u = 0;
    for (int64_t i = 0; i < n; ++i) sum_u += psi(p, (static_cast<A>(x[g.at(i)]) - s.mean) * s.rstd);
    s.mean_u = sum_u / static_cast<A>(n);
    A sq_u = 0;
    for (int64_t i = 0; i < n; ++i) {
      const A d = psi(p, (static_cast<A>(x[g.at(i)]) - s.mean) * s.rstd) - s.mean_u;
      sq_u += d * d;
    }
    s.rstd_u = A(1) / std::sqrt(sq_u / static_cast<A>(n) + static_cast<A>(p.eps));
  }
  for (int64_t i = 0; i < n; ++i) {
    const A xhat = normalized(p, static_cast<A>(x[g.at(i)]), s);
    const int64_t f = g.feature(i);
    y[g.at(i)] = static_cast<T>(p.affine ? gamma[f] * xhat + beta[f] : xhat);
  }
  return s;
}

// dx of one group; adds the group's Σ dy·x̂ and Σ dy into dgamma/dbeta (by feature).
template <typename A, typename T, typename Group>
void group_backward(const Params& p, const T* x, const T* dy, T* dx, const Group& g, const A* gamma,
                    const GroupStats<A>& s, A* dgamma, A* dbeta) {
  const int64_t n = g.size();
  const A inv_n = A(1) / static_cast<A>(n);
  const auto gamma_of = [&](int64_t i) { return p.affine ? gamma[g.feature(i)] : A(1); };
  // Sums of ĝ = γ·dy and ĝ·x̂ (the outer standardization), then of g_z and g_z·z (the inner).
  A g_sum = 0, g_dot = 0;
  for (int64_t i = 0; i < n; ++i) {
    const A xhat = normalized(p, static_cast<A>(x[g.at(i)]), s);
    const A dyi = static_cast<A>(dy[g.at(i)]);
    if (dgamma != nullptr) {
      dgamma[g.feature(i)] += dyi * xhat;
      dbeta[g.feature(i)] += dyi;
    }
    g_sum += gamma_of(i) * dyi;
    g_dot += gamma_of(i) * dyi * xhat;
  }
  if (!p.compresses()) {
    for (int64_t i = 0; i < n; ++i) {
      const A z = (static_cast<A>(x[g.at(i)]) - s.mean) * s.rstd;
      const A gi = gamma_of(i) * static_cast<A>(dy[g.at(i)]);
      const A centred = p.op == Op::rms ? gi : gi - g_sum * inv_n;
      dx[g.at(i)] = static_cast<T>(s.rstd * (centred - z * g_dot * inv_n));
    }
    return;
  }
  const auto g_z = [&](int64_t i, A z) {
    const A xhat = (psi(p, z) - s.mean_u) * s.rstd_u;
    const A gu = s.rstd_u * (gamma_of(i) * static_cast<A>(dy[g.at(i)]) - g_sum * inv_n - xhat * g_dot * inv_n);
    return gu * dpsi(p, z);
  };
  A gz_sum = 0, gz_dot = 0;
  for (int64_t i = 0; i < n; ++i) {
    const A z = (static_cast<A>(x[g.at(i)]) - s.mean) * s.rstd;
    const A gz = g_z(i, z);
    gz_sum += gz;
    gz_dot += gz * z;
  }
  for (int64_t i = 0; i < n; ++i) {
    const A z = (static_cast<A>(x[g.at(i)]) - s.mean) * s.rstd;
    dx[g.at(i)] = static_cast<T>(s.rstd * (g_z(i, z) - gz_sum * inv_n - z * gz_dot * inv_n));
  }
}

}  // namespace ibn::norm::fused
