#pragma once
// Fused CUDA kernels of the normalizer family (token and batch areas; forward and backward),
// beside their CPU reference in norm_math.h. Plain CUDA, no LibTorch: device pointers in,
// `stream` a cudaStream_t. Accumulation in float (double for double inputs); γ, β, dγ, dβ and
// the saved statistics ([groups, 4]: μ, r, μ_u, r_u) are in that accumulation type.
// Backward is deterministic: dγ/dβ go through per-block partial sums and a second pass in a
// fixed order, with no floating-point atomics.
#include <cstddef>
#include <cstdint>

#include "norm/fused/norm_math.h"

namespace ibn::norm::fused {

enum class DType { f32, f64, f16, bf16 };

// x, y: [rows, D] contiguous. stats: [rows, 4].
void token_forward(DType dtype, const Params& p, const void* x, const void* gamma, const void* beta, void* y,
                   void* stats, int64_t rows, int64_t D, void* stream);
// Bytes of device workspace token_backward needs for dγ/dβ partial sums.
size_t token_backward_workspace(DType dtype, int64_t rows, int64_t D);
void token_backward(DType dtype, const Params& p, const void* x, const void* dy, const void* gamma,
                    const void* stats, void* dx, void* dgamma, void* dbeta, void* workspace, int64_t rows,
                    int64_t D, void* stream);

// x, y: [N, C, HW] contiguous; one group per channel. stats: [C, 4].
void channel_forward(DType dtype, const Params& p, const void* x, const void* gamma, const void* beta, void* y,
                     void* stats, int64_t N, int64_t C, int64_t HW, void* stream);
void channel_backward(DType dtype, const Params& p, const void* x, const void* dy, const void* gamma,
                      const void* stats, void* dx, void* dgamma, void* dbeta, int64_t N, int64_t C, int64_t HW,
                      void* stream);

// Whether the last launch failed; the message, else nullptr.
const char* last_error();

}  // namespace ibn::norm::fused
