// Fused normalizer kernels (see norm_kernels.h): one thread block per group (a row of the
// token area, a channel of the batch area), block reductions in a fixed order, the arithmetic
// of norm_math.h. Each pass re-reads the group (L1/L2 resident for rows up to ~100k values)
// rather than holding it in registers, so any width works, 1 to beyond 65 536.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "norm/fused/norm_kernels.h"

namespace ibn::norm::fused {
namespace {

constexpr int kMaxThreads = 256;
thread_local const char* launch_error = nullptr;

template <typename A> __device__ __forceinline__ A load(const float* p) { return static_cast<A>(*p); }
template <typename A> __device__ __forceinline__ A load(const double* p) { return static_cast<A>(*p); }
template <typename A> __device__ __forceinline__ A load(const __half* p) { return static_cast<A>(__half2float(*p)); }
template <typename A> __device__ __forceinline__ A load(const __nv_bfloat16* p) { return static_cast<A>(__bfloat162float(*p)); }
template <typename A> __device__ __forceinline__ void store(float* p, A v) { *p = static_cast<float>(v); }
template <typename A> __device__ __forceinline__ void store(double* p, A v) { *p = static_cast<double>(v); }
template <typename A> __device__ __forceinline__ void store(__half* p, A v) { *p = __float2half(static_cast<float>(v)); }
template <typename A> __device__ __forceinline__ void store(__nv_bfloat16* p, A v) { *p = __float2bfloat16(static_cast<float>(v)); }

// Sum over the block, the same order every time: warp shuffles, then warp 0's lanes in order.
template <typename A>
__device__ A block_sum(A v, A* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    A total = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) total += shared[w];
    shared[32] = total;
  }
  __syncthreads();
  const A total = shared[32];
  __syncthreads();  // shared is reused by the next call
  return total;
}

template <typename A, typename T, typename Group>
__device__ GroupStats<A> group_stats(const Params& p, const T* x, const Group& g, A* shared) {
  const int64_t n = g.size();
  const A inv_n = A(1) / static_cast<A>(n);
  GroupStats<A> s;
  if (p.op != Op::rms) {
    A sum = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += load<A>(x + g.at(i));
    s.mean = block_sum(sum, shared) * inv_n;
  }
  A sq = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const A d = load<A>(x + g.at(i)) - s.mean;
    sq += d * d;
  }
  s.rstd = rsqrt(block_sum(sq, shared) * inv_n + static_cast<A>(p.eps));
  if (p.compresses()) {
    A sum_u = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum_u += psi(p, (load<A>(x + g.at(i)) - s.mean) * s.rstd);
    s.mean_u = block_sum(sum_u, shared) * inv_n;
    A sq_u = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const A d = psi(p, (load<A>(x + g.at(i)) - s.mean) * s.rstd) - s.mean_u;
      sq_u += d * d;
    }
    s.rstd_u = rsqrt(block_sum(sq_u, shared) * inv_n + static_cast<A>(p.eps));
  }
  return s;
}

struct TokenGroups {
  int64_t rows, D;
  __device__ int64_t count() const { return rows; }
  __device__ TokenGroup group(int64_t r) const { return {D, r}; }
};
struct ChannelGroups {
  int64_t N, C, HW;
  __device__ int64_t count() const { return C; }
  __device__ ChannelGroup group(int64_t c) const { return {N, C, HW, c}; }
};

template <typename A, typename T, typename Groups>
__global__ void forward_kernel(Params p, const T* x, const A* gamma, const A* beta, T* y, A* stats, Groups groups) {
  __shared__ A shared[33];
  for (int64_t index = blockIdx.x; index < groups.count(); index += gridDim.x) {
    const auto g = groups.group(index);
    const GroupStats<A> s = group_stats<A>(p, x, g, shared);
    for (int64_t i = threadIdx.x; i < g.size(); i += blockDim.x) {
      const A xhat = normalized(p, load<A>(x + g.at(i)), s);
      const int64_t f = g.feature(i);
      store(y + g.at(i), p.affine ? gamma[f] * xhat + beta[f] : xhat);
    }
    if (threadIdx.x == 0) {
      A* out = stats + 4 * index;
      out[0] = s.mean, out[1] = s.rstd, out[2] = s.mean_u, out[3] = s.rstd_u;
    }
  }
}

// dx per group; for channel groups also dγ_c, dβ_c (the group's own sums: no second pass).
template <typename A, typename T, typename Groups>
__global__ void backward_kernel(Params p, const T* x, const T* dy, const A* gamma, const A* stats, T* dx,
                                A* dgamma, A* dbeta, Groups groups) {
  __shared__ A shared[33];
  for (int64_t index = blockIdx.x; index < groups.count(); index += gridDim.x) {
    const auto g = groups.group(index);
    const A* saved = stats + 4 * index;
    GroupStats<A> s;
    s.mean = saved[0], s.rstd = saved[1], s.mean_u = saved[2], s.rstd_u = saved[3];
    const int64_t n = g.size();
    const A inv_n = A(1) / static_cast<A>(n);
    A g_sum = 0, g_dot = 0, dy_sum = 0, dy_dot = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const A xhat = normalized(p, load<A>(x + g.at(i)), s);
      const A d = load<A>(dy + g.at(i));
      const A gi = p.affine ? gamma[g.feature(i)] * d : d;
      g_sum += gi, g_dot += gi * xhat, dy_sum += d, dy_dot += d * xhat;
    }
    g_sum = block_sum(g_sum, shared);
    g_dot = block_sum(g_dot, shared);
    if (dgamma != nullptr) {  // channel groups: dγ_c = Σ dy·x̂, dβ_c = Σ dy
      dy_sum = block_sum(dy_sum, shared);
      dy_dot = block_sum(dy_dot, shared);
      if (threadIdx.x == 0) dgamma[index] = dy_dot, dbeta[index] = dy_sum;
    }
    if (!p.compresses()) {
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const A z = (load<A>(x + g.at(i)) - s.mean) * s.rstd;
        const A d = load<A>(dy + g.at(i));
        const A gi = p.affine ? gamma[g.feature(i)] * d : d;
        const A centred = p.op == Op::rms ? gi : gi - g_sum * inv_n;
        store(dx + g.at(i), s.rstd * (centred - z * g_dot * inv_n));
      }
      continue;
    }
    // The gradient reaching z = (x − μ)·r through the outer standardization and ψ.
    const auto z_and_gz = [&](int64_t i, A* z) {
      *z = (load<A>(x + g.at(i)) - s.mean) * s.rstd;
      const A xhat = (psi(p, *z) - s.mean_u) * s.rstd_u;
      const A d = load<A>(dy + g.at(i));
      const A gi = p.affine ? gamma[g.feature(i)] * d : d;
      return s.rstd_u * (gi - g_sum * inv_n - xhat * g_dot * inv_n) * dpsi(p, *z);
    };
    A gz_sum = 0, gz_dot = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      A z;
      const A gz = z_and_gz(i, &z);
      gz_sum += gz, gz_dot += gz * z;
    }
    gz_sum = block_sum(gz_sum, shared);
    gz_dot = block_sum(gz_dot, shared);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      A z;
      const A gz = z_and_gz(i, &z);
      store(dx + g.at(i), s.rstd * (gz - gz_sum * inv_n - z * gz_dot * inv_n));
    }
  }
}

// Token area dγ/dβ, pass 1: block (chunk, tile) sums rows of its chunk for the features of its
// tile into partial[chunk][f]; pass 2 adds the chunks in order. Deterministic, no atomics.
template <typename A, typename T>
__global__ void token_affine_partial(Params p, const T* x, const T* dy, const A* stats, A* partial_gamma,
                                     A* partial_beta, int64_t rows, int64_t D, int64_t rows_per_chunk) {
  const int64_t f = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (f >= D) return;
  A dg = 0, db = 0;
  const int64_t end = (chunk + 1) * rows_per_chunk < rows ? (chunk + 1) * rows_per_chunk : rows;
  for (int64_t r = chunk * rows_per_chunk; r < end; ++r) {
    GroupStats<A> s;
    s.mean = stats[4 * r], s.rstd = stats[4 * r + 1], s.mean_u = stats[4 * r + 2], s.rstd_u = stats[4 * r + 3];
    const A d = load<A>(dy + r * D + f);
    dg += d * normalized(p, load<A>(x + r * D + f), s);
    db += d;
  }
  partial_gamma[chunk * D + f] = dg;
  partial_beta[chunk * D + f] = db;
}

template <typename A>
__global__ void token_affine_reduce(const A* partial_gamma, const A* partial_beta, A* dgamma, A* dbeta, int64_t chunks,
                                    int64_t D) {
  const int64_t f = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (f >= D) return;
  A dg = 0, db = 0;
  for (int64_t c = 0; c < chunks; ++c) dg += partial_gamma[c * D + f], db += partial_beta[c * D + f];
  dgamma[f] = dg;
  dbeta[f] = db;
}

int threads_for(int64_t group_size) {
  const int64_t warps = std::min<int64_t>(kMaxThreads / 32, std::max<int64_t>(1, (group_size + 31) / 32));
  return static_cast<int>(warps * 32);
}
unsigned blocks_for(int64_t groups) { return static_cast<unsigned>(std::min<int64_t>(groups, 1 << 30)); }
int64_t chunks_for(int64_t rows) { return std::max<int64_t>(1, std::min<int64_t>(256, rows / 64)); }
void record_error() {
  const cudaError_t e = cudaGetLastError();
  launch_error = e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

// Calls body with (T, A) placeholders for the dtype.
template <typename Body>
void dispatch(DType dtype, Body body) {
  switch (dtype) {
    case DType::f32: body(float{}, float{}); break;
    case DType::f64: body(double{}, double{}); break;
    case DType::f16: body(__half{}, float{}); break;
    case DType::bf16: body(__nv_bfloat16{}, float{}); break;
  }
}

}  // namespace

void token_forward(DType dtype, const Params& p, const void* x, const void* gamma, const void* beta, void* y,
                   void* stats, int64_t rows, int64_t D, void* stream) {
  dispatch(dtype, [&](auto t, auto a) {
    using T = decltype(t);
    using A = decltype(a);
    forward_kernel<A, T><<<blocks_for(rows), threads_for(D), 0, static_cast<cudaStream_t>(stream)>>>(
        p, static_cast<const T*>(x), static_cast<const A*>(gamma), static_cast<const A*>(beta), static_cast<T*>(y),
        static_cast<A*>(stats), TokenGroups{rows, D});
  });
  record_error();
}

size_t token_backward_workspace(DType dtype, int64_t rows, int64_t D) {
  const size_t bytes = dtype == DType::f64 ? sizeof(double) : sizeof(float);
  return 2 * static_cast<size_t>(chunks_for(rows)) * static_cast<size_t>(D) * bytes;
}

void token_backward(DType dtype, const Params& p, const void* x, const void* dy, const void* gamma,
                    const void* stats, void* dx, void* dgamma, void* dbeta, void* workspace, int64_t rows,
                    int64_t D, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch(dtype, [&](auto t, auto a) {
    using T = decltype(t);
    using A = decltype(a);
    backward_kernel<A, T><<<blocks_for(rows), threads_for(D), 0, s>>>(
        p, static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<const A*>(gamma),
        static_cast<const A*>(stats), static_cast<T*>(dx), static_cast<A*>(nullptr), static_cast<A*>(nullptr),
        TokenGroups{rows, D});
    if (dgamma == nullptr) return;
    const int64_t chunks = chunks_for(rows);
    A* partial_gamma = static_cast<A*>(workspace);
    A* partial_beta = partial_gamma + chunks * D;
    const dim3 grid(static_cast<unsigned>((D + kMaxThreads - 1) / kMaxThreads), static_cast<unsigned>(chunks));
    token_affine_partial<A, T><<<grid, kMaxThreads, 0, s>>>(p, static_cast<const T*>(x), static_cast<const T*>(dy),
                                                            static_cast<const A*>(stats), partial_gamma, partial_beta,
                                                            rows, D, (rows + chunks - 1) / chunks);
    token_affine_reduce<A><<<grid.x, kMaxThreads, 0, s>>>(partial_gamma, partial_beta, static_cast<A*>(dgamma),
                                                         static_cast<A*>(dbeta), chunks, D);
  });
  record_error();
}

void channel_forward(DType dtype, const Params& p, const void* x, const void* gamma, const void* beta, void* y,
                     void* stats, int64_t N, int64_t C, int64_t HW, void* stream) {
  dispatch(dtype, [&](auto t, auto a) {
    using T = decltype(t);
    using A = decltype(a);
    forward_kernel<A, T><<<blocks_for(C), threads_for(N * HW), 0, static_cast<cudaStream_t>(stream)>>>(
        p, static_cast<const T*>(x), static_cast<const A*>(gamma), static_cast<const A*>(beta), static_cast<T*>(y),
        static_cast<A*>(stats), ChannelGroups{N, C, HW});
  });
  record_error();
}

void channel_backward(DType dtype, const Params& p, const void* x, const void* dy, const void* gamma,
                      const void* stats, void* dx, void* dgamma, void* dbeta, int64_t N, int64_t C, int64_t HW,
                      void* stream) {
  dispatch(dtype, [&](auto t, auto a) {
    using T = decltype(t);
    using A = decltype(a);
    backward_kernel<A, T><<<blocks_for(C), threads_for(N * HW), 0, static_cast<cudaStream_t>(stream)>>>(
        p, static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<const A*>(gamma),
        static_cast<const A*>(stats), static_cast<T*>(dx), static_cast<A*>(dgamma), static_cast<A*>(dbeta),
        ChannelGroups{N, C, HW});
  });
  record_error();
}

const char* last_error() { return launch_error; }

}  // namespace ibn::norm::fused
