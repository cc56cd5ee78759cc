// Fused normalizer kernels (see norm_kernels.h), the arithmetic of norm_math.h's reference.
// One source for nvcc and for the SIMT emulator (tests/cuda_emu/): launches, shared memory and
// global accesses go through device.h.
//
// Token area (a row of D values per group), three tiers by width:
//   warp        D ≤ 256:    a warp per row, 8 values per lane in registers, warp shuffles only
//   block       D ≤ 8192:   a block of ≤ 512 threads per row, 8 or 16 values per thread in registers
//   streaming   D > 8192:   a block of 1024 threads per row, each pass re-reads x (from L1/L2)
// Every kernel declares __launch_bounds__ for the most threads it is launched with, so nvcc keeps
// its registers within what such a block may have (65536 per block: 128 per thread at 512).
// In the register tiers x is read from memory once: the row is loaded with 16-byte vector loads
// (scalar loads for an unaligned row and for the tail), and every later pass works on registers.
// Blocks are persistent (a fixed number, each taking rows grid-stride), so γ, β are loaded into
// registers once per block, and the backward pass accumulates each block's dγ/dβ partials in
// registers as it goes; a second kernel (reduce_columns) combines the blocks' partials in a
// fixed order. The chunking depends only on the shape and the device's multiprocessor count, so
// the backward pass is bitwise deterministic on a given device.
// Statistics: each thread's values give (n, mean, M2), merged across lanes (butterfly shuffles,
// lower lane first, so every lane holds the same bits) and across warps (shared memory, warp
// order): one reduction and one barrier per standardization. ψ is a compile-time functor with
// its constants (1/λ, δ^p) computed on the host; t = tanh(λz) is computed once per element and
// ψ′ = 1 − t² is derived from u = t/λ, in the forward and the backward pass alike.
//
// Batch area (a channel of [N, C, HW] per group): a 2D grid of (channel tiles × chunks of N).
// With HW = 1 a block covers 32 consecutive channels (threadIdx.x, the contiguous dimension);
// otherwise a block covers one channel with threadIdx.x along HW. Each block writes per-chunk
// partial moments (Welford within a thread, Chan's merge across threads) or sums;
// reduce_columns combines the chunks of each channel in a fixed order; an elementwise kernel
// applies the result. Element offsets come from (n, c, hw) loops, with no division by HW.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "norm/fused/device.h"
#include "norm/fused/launch_plan.h"
#include "norm/fused/norm_kernels.h"

namespace ibn::norm::fused {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
thread_local const char* launch_error = nullptr;

// ---- Element types: T in memory, A for arithmetic (float, or double for double inputs) ----

template <typename A> IBN_DEVICE A widen(float v) { return static_cast<A>(v); }
template <typename A> IBN_DEVICE A widen(double v) { return static_cast<A>(v); }
template <typename A> IBN_DEVICE A widen(__half v) { return static_cast<A>(__half2float(v)); }
template <typename A> IBN_DEVICE A widen(__nv_bfloat16 v) { return static_cast<A>(__bfloat162float(v)); }
IBN_DEVICE void narrow(float v, float* out) { *out = v; }
IBN_DEVICE void narrow(double v, double* out) { *out = v; }
IBN_DEVICE void narrow(float v, __half* out) { *out = __float2half(v); }
IBN_DEVICE void narrow(float v, __nv_bfloat16* out) { *out = __float2bfloat16(v); }

// Values per 16-byte vector.
template <typename T> constexpr int kVec = static_cast<int>(16 / sizeof(T));

// ---- ψ_λ as compile-time functors; constants computed once, on the host ----

template <typename A>
struct PsiIdentity {
  static constexpr bool kCompresses = false;
  IBN_HD explicit PsiIdentity(const Params&) {}
  IBN_HD A value(A z) const { return z; }
  IBN_HD A slope(A, A) const { return A(1); }
};

// ψ = tanh(λz)/λ; ψ′ = 1 − tanh²(λz) = 1 − (λu)².
template <typename A>
struct PsiTanh {
  static constexpr bool kCompresses = true;
  A lambda, inv_lambda;
  IBN_HD explicit PsiTanh(const Params& p) : lambda(static_cast<A>(p.lambda)), inv_lambda(static_cast<A>(1.0 / p.lambda)) {}
  IBN_HD A value(A z) const { return tanh(lambda * z) * inv_lambda; }
  IBN_HD A slope(A, A u) const {
    const A t = lambda * u;
    return A(1) - t * t;
  }
};

// ψ = sign(z)·log(1 + λ|z|)/λ; ψ′ = 1/(1 + λ|z|).
template <typename A>
struct PsiLog {
  static constexpr bool kCompresses = true;
  A lambda, inv_lambda;
  IBN_HD explicit PsiLog(const Params& p) : lambda(static_cast<A>(p.lambda)), inv_lambda(static_cast<A>(1.0 / p.lambda)) {}
  IBN_HD A value(A z) const {
    const A magnitude = log1p(lambda * (z < A(0) ? -z : z)) * inv_lambda;
    return z < A(0) ? -magnitude : magnitude;
  }
  IBN_HD A slope(A z, A) const { return A(1) / (A(1) + lambda * (z < A(0) ? -z : z)); }
};

// ψ = sign(z)·((|z| + δ)^p − δ^p), p = 1/(1 + λ); ψ′ = p·(|z| + δ)^(p−1) = p·(|u| + δ^p)/(|z| + δ).
template <typename A>
struct PsiSignPower {
  static constexpr bool kCompresses = true;
  A power, delta, delta_pow;
  IBN_HD explicit PsiSignPower(const Params& p)
      : power(static_cast<A>(1.0 / (1.0 + p.lambda))),
        delta(static_cast<A>(kSignPowerDelta)),
        delta_pow(static_cast<A>(pow(kSignPowerDelta, 1.0 / (1.0 + p.lambda)))) {}
  IBN_HD A value(A z) const {
    const A magnitude = pow((z < A(0) ? -z : z) + delta, power) - delta_pow;
    return z < A(0) ? -magnitude : (z > A(0) ? magnitude : A(0));
  }
  IBN_HD A slope(A z, A u) const { return power * ((u < A(0) ? -u : u) + delta_pow) / ((z < A(0) ? -z : z) + delta); }
};

// ---- Reductions ----

// Count, mean and sum of squared deviations of a set of values (Chan et al.'s merge).
template <typename A>
struct Moments {
  A n, mean, m2;
};
template <typename A>
IBN_DEVICE Moments<A> combine(const Moments<A>& a, const Moments<A>& b) {
  const A n = a.n + b.n;
  if (n == A(0)) return a;
  const A delta = b.mean - a.mean, weight = b.n / n;
  return {n, a.mean + delta * weight, a.m2 + b.m2 + delta * delta * a.n * weight};
}
template <typename A>
IBN_DEVICE Moments<A> shuffle_xor(const Moments<A>& m, int offset) {
  return {__shfl_xor_sync(kFullMask, m.n, offset), __shfl_xor_sync(kFullMask, m.mean, offset),
          __shfl_xor_sync(kFullMask, m.m2, offset)};
}

// Two sums reduced together.
template <typename A>
struct Sums {
  A a, b;
};
template <typename A>
IBN_DEVICE Sums<A> combine(const Sums<A>& x, const Sums<A>& y) {
  return {x.a + y.a, x.b + y.b};
}
template <typename A>
IBN_DEVICE Sums<A> shuffle_xor(const Sums<A>& s, int offset) {
  return {__shfl_xor_sync(kFullMask, s.a, offset), __shfl_xor_sync(kFullMask, s.b, offset)};
}

// Over the 32 lanes of a warp; every lane gets the same bits (the lower lane's operand first).
template <typename V>
IBN_DEVICE V warp_all_reduce(V v, int lane) {
  for (int offset = 1; offset < 32; offset <<= 1) {
    const V other = shuffle_xor(v, offset);
    v = (lane & offset) ? combine(other, v) : combine(v, other);
  }
  return v;
}

// Over a 1D block (blockDim.x a multiple of 32); every thread gets the same bits. `scratch`
// holds 32 values in shared memory; callers alternate two scratch buffers between successive
// calls, so that one barrier per call suffices: a buffer is rewritten only after the next
// call's barrier, which every thread reaches after reading it.
template <typename V>
IBN_DEVICE V block_all_reduce(V v, V* scratch) {
  v = warp_all_reduce(v, static_cast<int>(threadIdx.x & 31));
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  V total = scratch[0];
  const int warps = static_cast<int>(blockDim.x >> 5);
  for (int w = 1; w < warps; ++w) total = combine(total, scratch[w]);
  return total;
}

// ---- Rows in registers ----
// Slot k of a thread (of `width` threads sharing a row, at position `lane`) holds element
// (k / V · width + lane) · V + k % V: consecutive lanes read consecutive 16-byte chunks, and the
// vector and scalar paths place every element in the same slot.

IBN_DEVICE int64_t chunk_base(int chunk, int lane, int width, int V) {
  return (static_cast<int64_t>(chunk) * width + lane) * V;
}

template <typename T, typename A>
IBN_DEVICE void load_chunk(const T* row, int64_t D, int64_t base, bool aligned, A* v) {
  constexpr int V = kVec<T>;
  if (aligned && base + V <= D) {
    const uint4 raw = ibn_load(reinterpret_cast<const uint4*>(row + base));
    T chunk[V];
    memcpy(chunk, &raw, sizeof(raw));
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = widen<A>(chunk[j]);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = base + j < D ? widen<A>(ibn_load(row + base + j)) : A(0);
  }
}

template <typename T, typename A>
IBN_DEVICE void store_chunk(T* row, int64_t D, int64_t base, bool aligned, const A* v) {
  constexpr int V = kVec<T>;
  T chunk[V];
#pragma unroll
  for (int j = 0; j < V; ++j) narrow(v[j], &chunk[j]);
  if (aligned && base + V <= D) {
    uint4 raw;
    memcpy(&raw, chunk, sizeof(raw));
    ibn_store(reinterpret_cast<uint4*>(row + base), raw);
  } else {
    for (int j = 0; j < V && base + j < D; ++j) ibn_store(row + base + j, chunk[j]);
  }
}

IBN_DEVICE bool is_aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// K values of a row per thread. T is the memory type (the row's vector width decides the slots).
template <int K, typename T, typename A>
IBN_DEVICE void load_slots(const T* row, int64_t D, int lane, int width, A (&v)[K]) {
  constexpr int V = kVec<T>;
  static_assert(K % V == 0, "slots must hold whole vectors");
  const bool aligned = is_aligned(row);
#pragma unroll
  for (int c = 0; c < K / V; ++c) load_chunk(row, D, chunk_base(c, lane, width, V), aligned, v + c * V);
}

template <int K, typename T, typename A>
IBN_DEVICE void store_slots(T* row, int64_t D, int lane, int width, const A (&v)[K]) {
  constexpr int V = kVec<T>;
  const bool aligned = is_aligned(row);
#pragma unroll
  for (int c = 0; c < K / V; ++c) {
    const int64_t base = chunk_base(c, lane, width, V);
    if (base < D) store_chunk(row, D, base, aligned, v + c * V);
  }
}

// γ or β ([D], type A) into the slots of a row of T: the slot layout follows T's vector width.
template <int K, typename T, typename A>
IBN_DEVICE void load_feature_slots(const A* values, int64_t D, int lane, int width, A (&v)[K]) {
  constexpr int V = kVec<T>;
#pragma unroll
  for (int c = 0; c < K / V; ++c) {
    const int64_t base = chunk_base(c, lane, width, V);
#pragma unroll
    for (int j = 0; j < V; ++j) v[c * V + j] = base + j < D ? ibn_load(values + base + j) : A(0);
  }
}

template <int K, typename T>
IBN_DEVICE int64_t slot_index(int k, int lane, int width) {
  return chunk_base(k / kVec<T>, lane, width, kVec<T>) + k % kVec<T>;
}

template <int K, typename T, typename A>
IBN_DEVICE Moments<A> slot_moments(const A (&v)[K], int64_t D, int lane, int width) {
  A n = 0, sum = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (slot_index<K, T>(k, lane, width) < D) n += A(1), sum += v[k];
  }
  const A mean = n > A(0) ? sum / n : A(0);
  A m2 = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const A d = v[k] - mean;
    if (slot_index<K, T>(k, lane, width) < D) m2 += d * d;
  }
  return {n, mean, m2};
}

// A group's mean and variance from its moments: about the mean, or (rms) about zero.
template <typename A>
struct Standardization {
  A mean, var, rstd;
};
template <typename A>
IBN_DEVICE Standardization<A> standardization(const Params& p, const Moments<A>& m, A inv_n, bool centre) {
  const A var = centre ? m.m2 * inv_n : m.m2 * inv_n + m.mean * m.mean;
  return {centre ? m.mean : A(0), var, rsqrt(var + static_cast<A>(p.eps))};
}

// A row's saved statistics (kStatsPerGroup values at out); those of u are 0, 1, 1 when ψ is the
// identity (no second standardization).
template <typename A>
IBN_DEVICE void store_row_stats(A* out, const Standardization<A>& s, const Standardization<A>& su, bool compressed) {
  ibn_store(out + kMean, s.mean), ibn_store(out + kRstd, s.rstd), ibn_store(out + kVar, s.var);
  ibn_store(out + kMeanU, compressed ? su.mean : A(0));
  ibn_store(out + kRstdU, compressed ? su.rstd : A(1));
  ibn_store(out + kVarU, compressed ? su.var : A(1));
}

// The row's saved statistics, loaded by lane 0 of each warp and broadcast.
template <typename A>
IBN_DEVICE A broadcast_load(const A* p, int lane) {
  return __shfl_sync(kFullMask, lane == 0 ? ibn_load(p) : A(0), 0);
}

// Where a block's threads find their row: the warp tier gives each warp its own rows.
template <bool kWarpPerRow>
struct RowPlan {
  int lane, width;
  int64_t first, stride;
  IBN_DEVICE RowPlan() {
    const int64_t warps = blockDim.x >> 5;
    lane = kWarpPerRow ? static_cast<int>(threadIdx.x & 31) : static_cast<int>(threadIdx.x);
    width = kWarpPerRow ? 32 : static_cast<int>(blockDim.x);
    first = kWarpPerRow ? blockIdx.x * warps + (threadIdx.x >> 5) : blockIdx.x;
    stride = kWarpPerRow ? gridDim.x * warps : gridDim.x;
  }
};

// Reduces within a row's threads: the warp (warp tier) or the block (alternating scratch).
template <bool kWarpPerRow, typename V>
IBN_DEVICE V row_all_reduce(V v, V* scratch, int* round) {
  if (kWarpPerRow) return warp_all_reduce(v, static_cast<int>(threadIdx.x & 31));
  return block_all_reduce(v, scratch + 32 * ((*round)++ & 1));
}

template <bool kWarpPerRow> constexpr int kRegisterTierThreads = kWarpPerRow ? kWarpBlockThreads : kRowBlockMaxThreads;

template <typename T, typename A, typename Psi, int K, bool kWarpPerRow>
__global__ void __launch_bounds__(kRegisterTierThreads<kWarpPerRow>) token_forward_registers(Params p, Psi psi, const T* x, const A* gamma, const A* beta, T* y, A* stats,
                                        int64_t rows, int64_t D) {
  IBN_DYNAMIC_SHARED(shared);
  Moments<A>* scratch = reinterpret_cast<Moments<A>*>(shared);  // [2][32]
  const RowPlan<kWarpPerRow> plan;
  A g[K], b[K];
  if (p.affine) {
    load_feature_slots<K, T>(gamma, D, plan.lane, plan.width, g);
    load_feature_slots<K, T>(beta, D, plan.lane, plan.width, b);
  }
  const A inv_n = A(1) / static_cast<A>(D);
  const bool centre = p.op != Op::rms;
  int round = 0;
  for (int64_t row = plan.first; row < rows; row += plan.stride) {
    A v[K];
    load_slots<K>(x + row * D, D, plan.lane, plan.width, v);
    const Moments<A> m = row_all_reduce<kWarpPerRow>(slot_moments<K, T>(v, D, plan.lane, plan.width), scratch, &round);
    const Standardization<A> s = standardization(p, m, inv_n, centre);
    Standardization<A> su{0, 1, 1};
    if (Psi::kCompresses) {
#pragma unroll
      for (int k = 0; k < K; ++k) v[k] = psi.value((v[k] - s.mean) * s.rstd);
      const Moments<A> mu = row_all_reduce<kWarpPerRow>(slot_moments<K, T>(v, D, plan.lane, plan.width), scratch, &round);
      su = standardization(p, mu, inv_n, true);
    } else {
      su = s;  // x̂ = (x − μ)·r
    }
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const A xhat = (v[k] - su.mean) * su.rstd;
      v[k] = p.affine ? g[k] * xhat + b[k] : xhat;
    }
    store_slots<K>(y + row * D, D, plan.lane, plan.width, v);
    if (plan.lane == 0) store_row_stats(stats + row * kStatsPerGroup, s, su, Psi::kCompresses);
  }
}

// The saved statistics of one row, as every thread of the row needs them.
template <typename A>
struct RowStats {
  A mean, rstd, mean_u, rstd_u;
};
template <typename A>
IBN_DEVICE RowStats<A> load_row_stats(const A* stats, int64_t row, bool compresses) {
  const A* s = stats + row * kStatsPerGroup;
  const int lane = static_cast<int>(threadIdx.x & 31);
  RowStats<A> out{broadcast_load(s + kMean, lane), broadcast_load(s + kRstd, lane), A(0), A(1)};
  if (compresses) out.mean_u = broadcast_load(s + kMeanU, lane), out.rstd_u = broadcast_load(s + kRstdU, lane);
  return out;
}

// dx of each row; dγ/dβ partials of the block's rows into partial[blockIdx.x] ([D] of (dγ, dβ)).
template <typename T, typename A, typename Psi, int K, bool kWarpPerRow>
__global__ void __launch_bounds__(kRegisterTierThreads<kWarpPerRow>) token_backward_registers(Params p, Psi psi, const T* x, const T* dy, const A* gamma, const A* stats,
                                         T* dx, Sums<A>* partial, int64_t rows, int64_t D) {
  IBN_DYNAMIC_SHARED(shared);
  Sums<A>* scratch = reinterpret_cast<Sums<A>*>(shared);  // [2][32]
  const RowPlan<kWarpPerRow> plan;
  const bool grads = partial != nullptr;
  A gam[K], acc_gamma[K], acc_beta[K];
#pragma unroll
  for (int k = 0; k < K; ++k) gam[k] = A(1), acc_gamma[k] = A(0), acc_beta[k] = A(0);
  if (p.affine) load_feature_slots<K, T>(gamma, D, plan.lane, plan.width, gam);
  const A inv_n = A(1) / static_cast<A>(D);
  const bool centre = p.op != Op::rms;
  int round = 0;
  for (int64_t row = plan.first; row < rows; row += plan.stride) {
    const RowStats<A> s = load_row_stats(stats, row, Psi::kCompresses);
    A z[K], g[K], u[K];
    load_slots<K>(x + row * D, D, plan.lane, plan.width, z);
    load_slots<K>(dy + row * D, D, plan.lane, plan.width, g);
    Sums<A> sums{0, 0};
#pragma unroll
    for (int k = 0; k < K; ++k) {
      z[k] = (z[k] - s.mean) * s.rstd;
      u[k] = psi.value(z[k]);
      const A xhat = Psi::kCompresses ? (u[k] - s.mean_u) * s.rstd_u : z[k];
      acc_gamma[k] += g[k] * xhat;  // padding slots hold dy = 0
      acc_beta[k] += g[k];
      g[k] *= gam[k];  // ĝ = γ·dy
      sums.a += g[k], sums.b += g[k] * xhat;
    }
    const Sums<A> total = row_all_reduce<kWarpPerRow>(sums, scratch, &round);
    if (Psi::kCompresses) {
      // The gradient reaching z through the outer standardization and ψ.
      Sums<A> sums_z{0, 0};
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const A xhat = (u[k] - s.mean_u) * s.rstd_u;
        const bool valid = slot_index<K, T>(k, plan.lane, plan.width) < D;
        g[k] = valid ? s.rstd_u * (g[k] - total.a * inv_n - xhat * total.b * inv_n) * psi.slope(z[k], u[k]) : A(0);
        sums_z.a += g[k], sums_z.b += g[k] * z[k];
      }
      const Sums<A> total_z = row_all_reduce<kWarpPerRow>(sums_z, scratch, &round);
#pragma unroll
      for (int k = 0; k < K; ++k) g[k] = s.rstd * (g[k] - total_z.a * inv_n - z[k] * total_z.b * inv_n);
    } else {
#pragma unroll
      for (int k = 0; k < K; ++k) g[k] = s.rstd * ((centre ? g[k] - total.a * inv_n : g[k]) - z[k] * total.b * inv_n);
    }
    store_slots<K>(dx + row * D, D, plan.lane, plan.width, g);
  }
  if (!grads) return;
  Sums<A>* out = partial + static_cast<int64_t>(blockIdx.x) * D;  // (dγ, dβ) per feature
  if (!kWarpPerRow) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t f = slot_index<K, T>(k, plan.lane, plan.width);
      if (f < D) ibn_store(out + f, Sums<A>{acc_gamma[k], acc_beta[k]});
    }
    return;
  }
  // Warp tier (no block reductions above): the block's warps add their partials in warp order
  // through shared memory.
  Sums<A>* by_warp = reinterpret_cast<Sums<A>*>(shared);  // [warps][D]
  const int warp = static_cast<int>(threadIdx.x >> 5), warps = static_cast<int>(blockDim.x >> 5);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t f = slot_index<K, T>(k, plan.lane, plan.width);
    if (f < D) by_warp[warp * D + f] = Sums<A>{acc_gamma[k], acc_beta[k]};
  }
  __syncthreads();
  for (int64_t f = threadIdx.x; f < D; f += blockDim.x) {
    Sums<A> total = by_warp[f];
    for (int w = 1; w < warps; ++w) total = combine(total, by_warp[w * D + f]);
    ibn_store(out + f, total);
  }
}

// ---- Streaming tier: rows too wide for registers; each pass re-reads the row ----

// Calls body(base, values, features) for each of this thread's chunks of the row.
template <typename T, typename A, typename Body>
IBN_DEVICE void for_each_chunk(const T* row, int64_t D, Body body) {
  constexpr int V = kVec<T>;
  const bool aligned = is_aligned(row);
  const int width = static_cast<int>(blockDim.x), lane = static_cast<int>(threadIdx.x);
  for (int c = 0; chunk_base(c, lane, width, V) < D; ++c) {
    const int64_t base = chunk_base(c, lane, width, V);
    A v[V];
    load_chunk(row, D, base, aligned, v);
    body(base, v);
  }
}

template <typename A, int V>
IBN_DEVICE Moments<A> chunk_moments(const A (&v)[V], int64_t base, int64_t D) {
  A n = 0, sum = 0;
  for (int j = 0; j < V; ++j) {
    if (base + j < D) n += A(1), sum += v[j];
  }
  const A mean = sum / n;
  A m2 = 0;
  for (int j = 0; j < V; ++j) {
    const A d = v[j] - mean;
    if (base + j < D) m2 += d * d;
  }
  return {n, mean, m2};
}

template <typename T, typename A, typename Psi>
__global__ void __launch_bounds__(kStreamingThreads) token_forward_streaming(Params p, Psi psi, const T* x, const A* gamma, const A* beta, T* y, A* stats,
                                        int64_t rows, int64_t D) {
  IBN_DYNAMIC_SHARED(shared);
  Moments<A>* scratch = reinterpret_cast<Moments<A>*>(shared);  // [2][32]
  constexpr int V = kVec<T>;
  const A inv_n = A(1) / static_cast<A>(D);
  const bool centre = p.op != Op::rms;
  int round = 0;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* in = x + row * D;
    Moments<A> m{0, 0, 0};
    for_each_chunk<T, A>(in, D, [&](int64_t base, const A(&v)[V]) { m = combine(m, chunk_moments(v, base, D)); });
    const Standardization<A> s = standardization(p, block_all_reduce(m, scratch + 32 * (round++ & 1)), inv_n, centre);
    Standardization<A> su = s;
    if (Psi::kCompresses) {
      Moments<A> mu{0, 0, 0};
      for_each_chunk<T, A>(in, D, [&](int64_t base, const A(&v)[V]) {
        A u[V];
        for (int j = 0; j < V; ++j) u[j] = psi.value((v[j] - s.mean) * s.rstd);
        mu = combine(mu, chunk_moments(u, base, D));
      });
      su = standardization(p, block_all_reduce(mu, scratch + 32 * (round++ & 1)), inv_n, true);
    }
    const bool aligned_out = is_aligned(y + row * D);
    for_each_chunk<T, A>(in, D, [&](int64_t base, const A(&v)[V]) {
      A out[V];
      for (int j = 0; j < V; ++j) {
        const A t = Psi::kCompresses ? psi.value((v[j] - s.mean) * s.rstd) : v[j];
        const A xhat = (t - su.mean) * su.rstd;
        out[j] = p.affine && base + j < D ? ibn_load(gamma + base + j) * xhat + ibn_load(beta + base + j) : xhat;
      }
      store_chunk(y + row * D, D, base, aligned_out, out);
    });
    if (threadIdx.x == 0) store_row_stats(stats + row * kStatsPerGroup, s, su, Psi::kCompresses);
  }
}

// Streaming backward: the sums, the sums through ψ, then dx, each pass reading x and dy again;
// dγ/dβ partials of the block's rows are added into partial[blockIdx.x] by the thread that owns
// each feature (the same thread for every row, so no atomics).
template <typename T, typename A, typename Psi>
__global__ void __launch_bounds__(kStreamingThreads) token_backward_streaming(Params p, Psi psi, const T* x, const T* dy, const A* gamma, const A* stats,
                                         T* dx, Sums<A>* partial, int64_t rows, int64_t D) {
  IBN_DYNAMIC_SHARED(shared);
  Sums<A>* scratch = reinterpret_cast<Sums<A>*>(shared);  // [2][32]
  constexpr int V = kVec<T>;
  const A inv_n = A(1) / static_cast<A>(D);
  const bool centre = p.op != Op::rms;
  Sums<A>* acc = partial == nullptr ? nullptr : partial + static_cast<int64_t>(blockIdx.x) * D;
  int round = 0;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const RowStats<A> s = load_row_stats(stats, row, Psi::kCompresses);
    const T* in = x + row * D;
    const T* grad = dy + row * D;
    const bool aligned_grad = is_aligned(grad);
    const bool first_row = row == blockIdx.x;
    // z, u, x̂ and ĝ = γ·dy of one chunk.
    const auto terms = [&](int64_t base, const A(&v)[V], A (&z)[V], A (&u)[V], A (&xhat)[V], A (&d)[V], A (&g)[V]) {
      load_chunk(grad, D, base, aligned_grad, d);
      for (int j = 0; j < V; ++j) {
        z[j] = (v[j] - s.mean) * s.rstd;
        u[j] = psi.value(z[j]);
        xhat[j] = Psi::kCompresses ? (u[j] - s.mean_u) * s.rstd_u : z[j];
        g[j] = p.affine && base + j < D ? ibn_load(gamma + base + j) * d[j] : d[j];
      }
    };
    Sums<A> sums{0, 0};
    for_each_chunk<T, A>(in, D, [&](int64_t base, const A(&v)[V]) {
      A z[V], u[V], xhat[V], d[V], g[V];
      terms(base, v, z, u, xhat, d, g);
      for (int j = 0; j < V && base + j < D; ++j) {
        sums.a += g[j], sums.b += g[j] * xhat[j];
        if (acc != nullptr) {
          const Sums<A> row_terms{d[j] * xhat[j], d[j]};
          ibn_store(acc + base + j, first_row ? row_terms : combine(ibn_load(acc + base + j), row_terms));
        }
      }
    });
    const Sums<A> total = block_all_reduce(sums, scratch + 32 * (round++ & 1));
    const auto grad_z = [&](A g, A xhat, A z, A u) {
      return s.rstd_u * (g - total.a * inv_n - xhat * total.b * inv_n) * psi.slope(z, u);
    };
    Sums<A> total_z{0, 0};
    if (Psi::kCompresses) {
      Sums<A> sums_z{0, 0};
      for_each_chunk<T, A>(in, D, [&](int64_t base, const A(&v)[V]) {
        A z[V], u[V], xhat[V], d[V], g[V];
        terms(base, v, z, u, xhat, d, g);
        for (int j = 0; j < V && base + j < D; ++j) {
          const A gz = grad_z(g[j], xhat[j], z[j], u[j]);
          sums_z.a += gz, sums_z.b += gz * z[j];
        }
      });
      total_z = block_all_reduce(sums_z, scratch + 32 * (round++ & 1));
    }
    const bool aligned_out = is_aligned(dx + row * D);
    for_each_chunk<T, A>(in, D, [&](int64_t base, const A(&v)[V]) {
      A z[V], u[V], xhat[V], d[V], g[V], out[V];
      terms(base, v, z, u, xhat, d, g);
      for (int j = 0; j < V; ++j) {
        if (Psi::kCompresses) {
          out[j] = s.rstd * (grad_z(g[j], xhat[j], z[j], u[j]) - total_z.a * inv_n - z[j] * total_z.b * inv_n);
        } else {
          out[j] = s.rstd * ((centre ? g[j] - total.a * inv_n : g[j]) - z[j] * total.b * inv_n);
        }
      }
      store_chunk(dx + row * D, D, base, aligned_out, out);
    });
  }
}

// ---- Partials combined per column, in a fixed order ----
// Column c of in ([rows][cols]) combined over its rows: thread (x, y) of a block of 32 columns ×
// kColumnSplits combines rows y, y + kColumnSplits, ... in turn, then thread (x, 0) combines the
// splits in y order and hands the total to finish(c, total). The order depends only on the shape,
// so every run gives the same bits; 16 splits keep the chain of dependent loads short when there
// are thousands of rows (blocks or chunks). V{} (all zero) is the identity of combine.
constexpr int kColumnSplits = 16;

template <typename V, typename Finish>
__global__ void __launch_bounds__(32 * kColumnSplits) reduce_columns(const V* in, int64_t rows, int64_t cols, Finish finish) {
  IBN_DYNAMIC_SHARED(shared);
  V* split = reinterpret_cast<V*>(shared);  // [kColumnSplits][32]
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  V total{};
  if (c < cols) {
    for (int64_t r = threadIdx.y; r < rows; r += kColumnSplits) total = combine(total, ibn_load(in + r * cols + c));
  }
  split[threadIdx.y * 32 + threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y != 0 || c >= cols) return;
  for (int y = 1; y < kColumnSplits; ++y) total = combine(total, split[y * 32 + threadIdx.x]);
  finish(c, total);
}

// dγ, dβ of the token area from the blocks' (dγ, dβ) partials.
template <typename A>
struct WriteAffineGrads {
  A* dgamma;
  A* dbeta;
  IBN_DEVICE void operator()(int64_t f, const Sums<A>& total) const { ibn_store(dgamma + f, total.a), ibn_store(dbeta + f, total.b); }
};

// ---- Batch area ----

// Which elements of [N, C, HW] a thread of the 2D grid visits: with HW = 1, channel
// blockIdx.x·32 + threadIdx.x; otherwise channel blockIdx.x at hw = threadIdx.x + 32k. Rows n of
// chunk blockIdx.y, threadIdx.y + 8j.
struct ChannelGrid : ChannelPlan {
  IBN_DEVICE int64_t channel() const {
    return tiles() ? static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x : static_cast<int64_t>(blockIdx.x);
  }
  template <typename Body>
  IBN_DEVICE void for_each(Body body) const {
    const int64_t c = channel();
    if (c >= C) return;
    const int64_t n_end = (blockIdx.y + 1) * rows_per_chunk < N ? (blockIdx.y + 1) * rows_per_chunk : N;
    for (int64_t n = blockIdx.y * rows_per_chunk + threadIdx.y; n < n_end; n += blockDim.y) {
      const int64_t offset = (n * C + c) * HW;
      for (int64_t hw = tiles() ? 0 : threadIdx.x; hw < HW; hw += tiles() ? 1 : 32) body(offset + hw);
    }
  }
};

// One chunk's result for each channel of the block: with channel tiles, column threadIdx.x over
// the rows; otherwise all 256 threads. Written by one thread per channel into out[chunk·C + c].
template <typename V>
IBN_DEVICE void store_block_partial(V v, const ChannelGrid& g, V* scratch, V* out) {
  const int lane = static_cast<int>(threadIdx.x), row = static_cast<int>(threadIdx.y);
  if (!g.tiles()) {
    v = warp_all_reduce(v, lane);
    if (lane == 0) scratch[row] = v;
    __syncthreads();
    if (lane != 0 || row != 0) return;
    V total = scratch[0];
    for (int r = 1; r < kChannelRows; ++r) total = combine(total, scratch[r]);
    ibn_store(out + blockIdx.y * g.C + g.channel(), total);
    return;
  }
  scratch[row * 32 + lane] = v;
  __syncthreads();
  if (row != 0 || g.channel() >= g.C) return;
  V total = scratch[lane];
  for (int r = 1; r < kChannelRows; ++r) total = combine(total, scratch[r * 32 + lane]);
  ibn_store(out + blockIdx.y * g.C + g.channel(), total);
}

// Welford's update, one value at a time: exact to rounding whatever the values' offset (a
// shifted sum of squares loses digits when the shift is far from the mean).
template <typename A>
IBN_DEVICE void welford_add(Moments<A>* m, A v) {
  m->n += A(1);
  const A delta = v - m->mean;
  m->mean += delta / m->n;
  m->m2 += delta * (v - m->mean);
}

// Per-chunk moments of x (kOfU = false) or of u = ψ((x − μ)·r) (kOfU = true).
template <typename T, typename A, typename Psi, bool kOfU>
__global__ void channel_moments(Params p, Psi psi, const T* x, const A* stats, Moments<A>* partial, ChannelGrid g) {
  IBN_DYNAMIC_SHARED(shared);
  Moments<A> acc{0, 0, 0};
  const int64_t c = g.channel();
  A mean = 0, rstd = 1;
  if (kOfU && c < g.C) mean = ibn_load(stats + c * kStatsPerGroup + kMean), rstd = ibn_load(stats + c * kStatsPerGroup + kRstd);
  g.for_each([&](int64_t i) {
    const A v = widen<A>(ibn_load(x + i));
    welford_add(&acc, kOfU ? psi.value((v - mean) * rstd) : v);
  });
  (void)p;
  store_block_partial(acc, g, reinterpret_cast<Moments<A>*>(shared), partial);
}

// Per channel: the chunks' moments (merged by reduce_columns) into the saved statistics.
template <typename A, bool kOfU>
struct WriteChannelStats {
  Params p;
  A* stats;
  IBN_DEVICE void operator()(int64_t c, const Moments<A>& m) const {
    const Standardization<A> s = standardization(p, m, A(1) / m.n, kOfU || p.op != Op::rms);
    A* out = stats + c * kStatsPerGroup;
    ibn_store(out + (kOfU ? kMeanU : kMean), s.mean);
    ibn_store(out + (kOfU ? kRstdU : kRstd), s.rstd);
    ibn_store(out + (kOfU ? kVarU : kVar), s.var);
    if (!kOfU) ibn_store(out + kMeanU, A(0)), ibn_store(out + kRstdU, A(1)), ibn_store(out + kVarU, A(1));
  }
};

// A channel's statistics and affine parameters, loaded once per thread.
template <typename A>
struct ChannelConstants {
  A mean, rstd, mean_u, rstd_u, gamma, beta;
};
template <typename A>
IBN_DEVICE ChannelConstants<A> channel_constants(const Params& p, const A* stats, const A* gamma, const A* beta, int64_t c,
                                                 bool compresses, bool need_beta) {
  const A* s = stats + c * kStatsPerGroup;
  ChannelConstants<A> k{ibn_load(s + kMean), ibn_load(s + kRstd), A(0), A(1), A(1), A(0)};
  if (compresses) k.mean_u = ibn_load(s + kMeanU), k.rstd_u = ibn_load(s + kRstdU);
  if (p.affine) {
    k.gamma = ibn_load(gamma + c);
    if (need_beta) k.beta = ibn_load(beta + c);
  }
  return k;
}

template <typename T, typename A, typename Psi>
__global__ void channel_apply_forward(Params p, Psi psi, const T* x, const A* gamma, const A* beta, T* y, const A* stats,
                                      ChannelGrid g) {
  if (g.channel() >= g.C) return;
  const ChannelConstants<A> k = channel_constants(p, stats, gamma, beta, g.channel(), Psi::kCompresses, true);
  g.for_each([&](int64_t i) {
    const A z = (widen<A>(ibn_load(x + i)) - k.mean) * k.rstd;
    const A xhat = Psi::kCompresses ? (psi.value(z) - k.mean_u) * k.rstd_u : z;
    T out;
    narrow(p.affine ? k.gamma * xhat + k.beta : xhat, &out);
    ibn_store(y + i, out);
  });
}

// Backward sums per chunk. kThroughPsi = false: Σ dy and Σ dy·x̂ (dβ, dγ; with γ, the outer
// standardization's sums). kThroughPsi = true: Σ g_z and Σ g_z·z, g_z the gradient reaching z.
template <typename T, typename A, typename Psi, bool kThroughPsi>
__global__ void channel_grad_sums(Params p, Psi psi, const T* x, const T* dy, const A* gamma, const A* stats,
                                  const Sums<A>* outer, Sums<A>* partial, ChannelGrid g, A inv_n) {
  IBN_DYNAMIC_SHARED(shared);
  Sums<A> sums{0, 0};
  const int64_t c = g.channel();
  if (c < g.C) {
    const ChannelConstants<A> k = channel_constants(p, stats, gamma, static_cast<const A*>(nullptr), c, Psi::kCompresses, false);
    Sums<A> o{0, 0};
    if (kThroughPsi) o = ibn_load(outer + c);  // Σ dy, Σ dy·x̂
    g.for_each([&](int64_t i) {
      const A z = (widen<A>(ibn_load(x + i)) - k.mean) * k.rstd;
      const A u = psi.value(z);
      const A xhat = Psi::kCompresses ? (u - k.mean_u) * k.rstd_u : z;
      const A d = widen<A>(ibn_load(dy + i));
      if (!kThroughPsi) {
        sums.a += d, sums.b += d * xhat;
        return;
      }
      const A gz = k.rstd_u * (k.gamma * (d - o.a * inv_n - xhat * o.b * inv_n)) * psi.slope(z, u);
      sums.a += gz, sums.b += gz * z;
    });
  }
  store_block_partial(sums, g, reinterpret_cast<Sums<A>*>(shared), partial);
}

// Per channel: the chunks' sums (combined by reduce_columns); the first stage also gives
// dγ (Σ dy·x̂) and dβ (Σ dy).
template <typename A>
struct WriteChannelSums {
  Sums<A>* total;
  A* dgamma;
  A* dbeta;
  IBN_DEVICE void operator()(int64_t c, const Sums<A>& s) const {
    ibn_store(total + c, s);
    if (dgamma != nullptr) ibn_store(dgamma + c, s.b), ibn_store(dbeta + c, s.a);
  }
};

template <typename T, typename A, typename Psi>
__global__ void channel_apply_backward(Params p, Psi psi, const T* x, const T* dy, const A* gamma, const A* stats,
                                       const Sums<A>* outer, const Sums<A>* inner, T* dx, ChannelGrid g, A inv_n) {
  const int64_t c = g.channel();
  if (c >= g.C) return;
  const ChannelConstants<A> k = channel_constants(p, stats, gamma, static_cast<const A*>(nullptr), c, Psi::kCompresses, false);
  const Sums<A> o = ibn_load(outer + c);
  Sums<A> in{0, 0};
  if (Psi::kCompresses) in = ibn_load(inner + c);
  const bool centre = p.op != Op::rms;
  g.for_each([&](int64_t i) {
    const A z = (widen<A>(ibn_load(x + i)) - k.mean) * k.rstd;
    const A d = widen<A>(ibn_load(dy + i));
    A out;
    if (Psi::kCompresses) {
      const A u = psi.value(z);
      const A xhat = (u - k.mean_u) * k.rstd_u;
      const A gz = k.rstd_u * (k.gamma * (d - o.a * inv_n - xhat * o.b * inv_n)) * psi.slope(z, u);
      out = k.rstd * (gz - in.a * inv_n - z * in.b * inv_n);
    } else {
      const A gd = k.gamma * d;
      out = k.rstd * ((centre ? gd - k.gamma * o.a * inv_n : gd) - z * k.gamma * o.b * inv_n);
    }
    T narrowed;
    narrow(out, &narrowed);
    ibn_store(dx + i, narrowed);
  });
}

// ---- FP8 output stage ----
// y = γ·x̂ + β recomputed in A from x and the forward pass's saved statistics, with
// norm_math.h's normalized() (the CPU reference's own arithmetic), then quantized once: the
// bytes never come from the T-rounded y. Three kernels: the amax of every row (a warp per row,
// lanes along the features), the scales (one block for a tensor's, elementwise for rows'), and
// the elementwise encode. The amax is a max, exact in any order, so the bytes do not depend on
// the launch shape.

// Largest magnitude, NaN winning (a block holding NaN gets scale 1 and keeps its NaN).
template <typename A>
struct Amax {
  A v;
};
template <typename A>
IBN_DEVICE Amax<A> combine(const Amax<A>& a, const Amax<A>& b) {
  return {(a.v != a.v || a.v > b.v) ? a.v : b.v};
}
template <typename A>
IBN_DEVICE Amax<A> shuffle_xor(const Amax<A>& a, int offset) {
  return {__shfl_xor_sync(kFullMask, a.v, offset)};
}

template <typename T, typename A>
IBN_DEVICE A recomputed_y(const Params& p, const T* x, const A* gamma, const A* beta, const A* stats,
                          const Fp8Layout& l, int64_t o, int64_t f, int64_t i) {
  const A* s = stats + (l.stats_per_feature ? f : o) * kStatsPerGroup;
  GroupStats<A> g;
  g.mean = ibn_load(s + kMean), g.rstd = ibn_load(s + kRstd), g.mean_u = ibn_load(s + kMeanU), g.rstd_u = ibn_load(s + kRstdU);
  const A xhat = normalized(p, widen<A>(ibn_load(x + (o * l.features + f) * l.inner + i)), g);
  return p.affine ? ibn_load(gamma + f) * xhat + ibn_load(beta + f) : xhat;
}

constexpr int kFp8Threads = 256;

template <typename T, typename A>
__global__ void __launch_bounds__(kFp8Threads) fp8_row_amax(Params p, const T* x, const A* gamma, const A* beta, const A* stats, Fp8Layout l, A* row_amax) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); r < l.rows(); r += warps) {
    const int64_t o = r / l.inner, i = r % l.inner;
    Amax<A> m{0};
    for (int64_t f = lane; f < l.features; f += 32) {
      const A y = recomputed_y(p, x, gamma, beta, stats, l, o, f, i);
      m = combine(m, Amax<A>{y < A(0) ? -y : y});
    }
    m = warp_all_reduce(m, lane);
    if (lane == 0) ibn_store(row_amax + r, m.v);
  }
}

template <typename A>
__global__ void __launch_bounds__(kFp8Threads) fp8_tensor_scale(const A* row_amax, int64_t rows, fp8::Format format, A* scale) {
  IBN_DYNAMIC_SHARED(shared);
  Amax<A> m{0};
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) m = combine(m, Amax<A>{ibn_load(row_amax + r)});
  m = block_all_reduce(m, reinterpret_cast<Amax<A>*>(shared));
  if (threadIdx.x == 0) ibn_store(scale, fp8::scale_for(m.v, format));
}

template <typename A>
__global__ void __launch_bounds__(kFp8Threads) fp8_row_scales(const A* row_amax, int64_t rows, fp8::Format format, A* scale) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += stride) {
    ibn_store(scale + r, fp8::scale_for(ibn_load(row_amax + r), format));
  }
}

template <typename T, typename A>
__global__ void __launch_bounds__(kFp8Threads) fp8_encode(Params p, const T* x, const A* gamma, const A* beta, const A* stats, Fp8Layout l, const A* scale,
                           bool per_row, fp8::Format format, uint8_t* bytes, T* dequantized) {
  const int64_t n = l.rows() * l.features;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const int64_t i = e % l.inner, f = (e / l.inner) % l.features, o = e / (l.inner * l.features);
    const A s = ibn_load(scale + (per_row ? o * l.inner + i : 0));
    const uint8_t code = fp8::encode<A>(recomputed_y(p, x, gamma, beta, stats, l, o, f, i) / s, format);
    ibn_store(bytes + e, code);
    T narrowed;
    narrow(fp8::decode<A>(code, format) * s, &narrowed);
    ibn_store(dequantized + e, narrowed);
  }
}

// ---- Host side: launch shapes and dispatch ----

int multiprocessors() {
  int device = 0, count = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    return 1;
  }
  return std::max(count, 1);
}

// Calls body(T{}, psi) with the memory type and the ψ functor (over the accumulation type).
template <typename Body>
void dispatch(DType dtype, const Params& p, Body body) {
  const auto with_psi = [&](auto t, auto a) {
    using A = decltype(a);
    if (!p.compresses()) return body(t, PsiIdentity<A>(p));
    switch (p.psi) {
      case Psi::sign_power: return body(t, PsiSignPower<A>(p));
      case Psi::log: return body(t, PsiLog<A>(p));
      case Psi::tanh: return body(t, PsiTanh<A>(p));
      case Psi::identity: return body(t, PsiIdentity<A>(p));
    }
  };
  switch (dtype) {
    case DType::f32: return with_psi(float{}, float{});
    case DType::f64: return with_psi(double{}, double{});
    case DType::f16: return with_psi(__half{}, float{});
    case DType::bf16: return with_psi(__nv_bfloat16{}, float{});
  }
}

// Records the last launch's error (keeping this call's first); true when there was none, so
// that a failed launch stops the kernels that would read its output.
bool launched() {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess && launch_error == nullptr) launch_error = cudaGetErrorString(e);
  return launch_error == nullptr;
}

template <typename V, typename Finish>
void combine_columns(const V* in, int64_t rows, int64_t cols, Finish finish, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32)), block(32, kColumnSplits);
  IBN_LAUNCH(grid, block, 32 * kColumnSplits * sizeof(V), stream, reduce_columns<V, Finish>)(in, rows, cols, finish);
}

ChannelGrid channel_grid(int64_t N, int64_t C, int64_t HW) { return {channel_plan(N, C, HW, multiprocessors())}; }
dim3 grid_of(const ChannelGrid& g) {
  return dim3(static_cast<unsigned>(g.tile_count()), static_cast<unsigned>(g.chunks));
}
const dim3 kChannelBlock(32, kChannelRows);

}  // namespace

void token_forward(DType dtype, const Params& p, const void* x, const void* gamma, const void* beta, void* y,
                   void* stats, int64_t rows, int64_t D, void* stream) {
  launch_error = nullptr;
  if (rows == 0 || D == 0) return;
  const TokenLaunch launch = token_launch(rows, D, multiprocessors());
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch(dtype, p, [&](auto t, auto psi) {
    using T = decltype(t);
    using A = decltype(psi.value(0));
    const size_t shared = 2 * 32 * sizeof(Moments<A>);
    const unsigned blocks = static_cast<unsigned>(launch.blocks);
    const auto run = [&](auto kernel) {
      IBN_LAUNCH(blocks, launch.threads, shared, s, kernel)(p, psi, static_cast<const T*>(x), static_cast<const A*>(gamma),
                                                          static_cast<const A*>(beta), static_cast<T*>(y),
                                                          static_cast<A*>(stats), rows, D);
    };
    using P = decltype(psi);
    switch (launch.tier) {
      case TokenTier::warp: return run(token_forward_registers<T, A, P, 8, true>);
      case TokenTier::block: return run(token_forward_registers<T, A, P, 8, false>);
      case TokenTier::block_wide: return run(token_forward_registers<T, A, P, 16, false>);
      case TokenTier::streaming: return run(token_forward_streaming<T, A, P>);
    }
  });
  launched();
}

size_t token_backward_workspace(DType dtype, int64_t rows, int64_t D) {
  const TokenLaunch launch = token_launch(std::max<int64_t>(rows, 1), std::max<int64_t>(D, 1), multiprocessors());
  return 2 * static_cast<size_t>(launch.blocks) * static_cast<size_t>(D) * accumulate_size(dtype);
}

void token_backward(DType dtype, const Params& p, const void* x, const void* dy, const void* gamma,
                    const void* stats, void* dx, void* dgamma, void* dbeta, void* workspace, int64_t rows,
                    int64_t D, void* stream) {
  launch_error = nullptr;
  if (rows == 0 || D == 0) return;
  const TokenLaunch launch = token_launch(rows, D, multiprocessors());
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch(dtype, p, [&](auto t, auto psi) {
    using T = decltype(t);
    using A = decltype(psi.value(0));
    Sums<A>* partial = dgamma == nullptr ? nullptr : static_cast<Sums<A>*>(workspace);
    const size_t shared = launch.tier == TokenTier::warp ? std::max<size_t>(2 * 32, kWarpRowsPerBlock * D) * sizeof(Sums<A>)
                                                         : 2 * 32 * sizeof(Sums<A>);
    const unsigned blocks = static_cast<unsigned>(launch.blocks);
    const auto run = [&](auto kernel) {
      IBN_LAUNCH(blocks, launch.threads, shared, s, kernel)(p, psi, static_cast<const T*>(x), static_cast<const T*>(dy),
                                                          static_cast<const A*>(gamma), static_cast<const A*>(stats),
                                                          static_cast<T*>(dx), partial, rows, D);
    };
    using P = decltype(psi);
    switch (launch.tier) {
      case TokenTier::warp: run(token_backward_registers<T, A, P, 8, true>); break;
      case TokenTier::block: run(token_backward_registers<T, A, P, 8, false>); break;
      case TokenTier::block_wide: run(token_backward_registers<T, A, P, 16, false>); break;
      case TokenTier::streaming: run(token_backward_streaming<T, A, P>); break;
    }
    if (partial == nullptr || !launched()) return;
    combine_columns(partial, launch.blocks, D, WriteAffineGrads<A>{static_cast<A*>(dgamma), static_cast<A*>(dbeta)}, s);
  });
  launched();
}

size_t channel_workspace(DType dtype, int64_t N, int64_t C, int64_t HW) {
  const ChannelGrid g = channel_grid(std::max<int64_t>(N, 1), std::max<int64_t>(C, 1), std::max<int64_t>(HW, 1));
  // Per-chunk partials (Moments: 3 values), then two [C] totals of Sums (2 values each).
  return (static_cast<size_t>(g.chunks) * static_cast<size_t>(g.C) * 3 + 4 * static_cast<size_t>(g.C)) * accumulate_size(dtype);
}

void channel_forward(DType dtype, const Params& p, const void* x, const void* gamma, const void* beta, void* y,
                     void* stats, void* workspace, int64_t N, int64_t C, int64_t HW, void* stream) {
  launch_error = nullptr;
  if (N == 0 || C == 0 || HW == 0) return;
  const ChannelGrid g = channel_grid(N, C, HW);
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch(dtype, p, [&](auto t, auto psi) {
    using T = decltype(t);
    using A = decltype(psi.value(0));
    using P = decltype(psi);
    const T* in = static_cast<const T*>(x);
    A* saved = static_cast<A*>(stats);
    Moments<A>* partial = static_cast<Moments<A>*>(workspace);
    const size_t shared = kChannelRows * 32 * sizeof(Moments<A>);
    IBN_LAUNCH(grid_of(g), kChannelBlock, shared, s, channel_moments<T, A, P, false>)(p, psi, in, saved, partial, g);
    if (!launched()) return;
    combine_columns(partial, g.chunks, C, WriteChannelStats<A, false>{p, saved}, s);
    if (P::kCompresses) {
      if (!launched()) return;
      IBN_LAUNCH(grid_of(g), kChannelBlock, shared, s, channel_moments<T, A, P, true>)(p, psi, in, saved, partial, g);
      if (!launched()) return;
      combine_columns(partial, g.chunks, C, WriteChannelStats<A, true>{p, saved}, s);
    }
    if (!launched()) return;
    IBN_LAUNCH(grid_of(g), kChannelBlock, 0, s, channel_apply_forward<T, A, P>)(
        p, psi, in, static_cast<const A*>(gamma), static_cast<const A*>(beta), static_cast<T*>(y), saved, g);
  });
  launched();
}

void channel_backward(DType dtype, const Params& p, const void* x, const void* dy, const void* gamma,
                      const void* stats, void* dx, void* dgamma, void* dbeta, void* workspace, int64_t N, int64_t C,
                      int64_t HW, void* stream) {
  launch_error = nullptr;
  if (N == 0 || C == 0 || HW == 0) return;
  const ChannelGrid g = channel_grid(N, C, HW);
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch(dtype, p, [&](auto t, auto psi) {
    using T = decltype(t);
    using A = decltype(psi.value(0));
    using P = decltype(psi);
    const T* in = static_cast<const T*>(x);
    const T* grad = static_cast<const T*>(dy);
    const A* gam = static_cast<const A*>(gamma);
    const A* saved = static_cast<const A*>(stats);
    Sums<A>* partial = static_cast<Sums<A>*>(workspace);
    Sums<A>* outer = reinterpret_cast<Sums<A>*>(static_cast<A*>(workspace) + g.chunks * C * 3);
    Sums<A>* inner = outer + C;
    const A inv_n = A(1) / static_cast<A>(N * HW);
    const size_t shared = kChannelRows * 32 * sizeof(Sums<A>);
    IBN_LAUNCH(grid_of(g), kChannelBlock, shared, s, channel_grad_sums<T, A, P, false>)(p, psi, in, grad, gam, saved, outer,
                                                                                       partial, g, inv_n);
    if (!launched()) return;
    combine_columns(partial, g.chunks, C, WriteChannelSums<A>{outer, static_cast<A*>(dgamma), static_cast<A*>(dbeta)}, s);
    if (P::kCompresses) {
      if (!launched()) return;
      IBN_LAUNCH(grid_of(g), kChannelBlock, shared, s, channel_grad_sums<T, A, P, true>)(p, psi, in, grad, gam, saved, outer,
                                                                                        partial, g, inv_n);
      if (!launched()) return;
      combine_columns(partial, g.chunks, C, WriteChannelSums<A>{inner, nullptr, nullptr}, s);
    }
    if (!launched()) return;
    IBN_LAUNCH(grid_of(g), kChannelBlock, 0, s, channel_apply_backward<T, A, P>)(p, psi, in, grad, gam, saved, outer, inner,
                                                                                static_cast<T*>(dx), g, inv_n);
  });
  launched();
}

size_t fp8_workspace(DType dtype, const Fp8Layout& layout) {
  return static_cast<size_t>(std::max<int64_t>(layout.rows(), 1)) * accumulate_size(dtype);
}

void fp8_output(DType dtype, const Params& p, fp8::Format format, bool per_row, const void* x, const void* gamma,
                const void* beta, const void* stats, void* bytes, void* scale, void* dequantized, void* workspace,
                const Fp8Layout& layout, void* stream) {
  launch_error = nullptr;
  const int64_t rows = layout.rows();
  if (rows == 0 || layout.features == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  constexpr int kThreads = kFp8Threads;
  const int64_t most_blocks = static_cast<int64_t>(multiprocessors()) * 8;
  const auto blocks_for = [&](int64_t threads_needed) {
    return static_cast<unsigned>(std::max<int64_t>(1, std::min((threads_needed + kThreads - 1) / kThreads, most_blocks)));
  };
  dispatch(dtype, p, [&](auto t, auto psi) {
    using T = decltype(t);
    using A = decltype(psi.value(0));
    const T* in = static_cast<const T*>(x);
    const A* gam = static_cast<const A*>(gamma);
    const A* bet = static_cast<const A*>(beta);
    const A* saved = static_cast<const A*>(stats);
    A* amax = static_cast<A*>(workspace);
    A* scales = static_cast<A*>(scale);
    IBN_LAUNCH(blocks_for(rows * 32), kThreads, 0, s, fp8_row_amax<T, A>)(p, in, gam, bet, saved, layout, amax);
    if (!launched()) return;
    if (per_row) {
      IBN_LAUNCH(blocks_for(rows), kThreads, 0, s, fp8_row_scales<A>)(amax, rows, format, scales);
    } else {
      IBN_LAUNCH(1, kThreads, 32 * sizeof(Amax<A>), s, fp8_tensor_scale<A>)(amax, rows, format, scales);
    }
    if (!launched()) return;
    IBN_LAUNCH(blocks_for(rows * layout.features), kThreads, 0, s, fp8_encode<T, A>)(
        p, in, gam, bet, saved, layout, scales, per_row, format, static_cast<uint8_t*>(bytes), static_cast<T*>(dequantized));
  });
  launched();
}

const char* last_error() { return launch_error; }

}  // namespace ibn::norm::fused
