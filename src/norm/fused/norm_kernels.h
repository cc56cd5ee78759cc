#pragma once
// Fused CUDA kernels of the normalizer family (token and batch areas; forward and backward),
// beside their CPU reference in norm_math.h. Plain CUDA, no LibTorch: device pointers in,
// `stream` a cudaStream_t. Accumulation in float (double for double inputs); γ, β, dγ, dβ and
// the saved statistics ([groups, kStatsPerGroup], indexed by Stat) are in that accumulation type.
// Backward is bitwise deterministic: dγ/dβ go through per-block partial sums over a fixed
// chunking of the groups and a second pass in a fixed order, with no floating-point atomics.
//
// Design (norm_kernels.cu has the details; `ibn bench norm` prints the traffic below):
//   token area, by width D:  D ≤ 256      a warp per row, the row in registers
//                            D ≤ 16384    a block per row, the row in registers
//                            D > 16384    a block per row, streaming (x re-read from L2)
//   batch area: a 2D grid of (channel tiles × chunks of N) partial moments, merged per channel
//   in a fixed order, then an elementwise pass.
#include <cstddef>
#include <cstdint>

#include "norm/fused/norm_math.h"

namespace ibn::norm::fused {

enum class DType { f32, f64, f16, bf16 };

// The per-group statistics the forward pass saves: μ, r = 1/√(σ² + ε), and σ² itself (the
// running variance is updated from σ², not rebuilt from r, which loses it when σ² ≲ ε); then
// the same three of u = ψ(z) (IBNorm with λ ≠ 0 only).
enum Stat : int { kMean = 0, kRstd = 1, kVar = 2, kMeanU = 3, kRstdU = 4, kVarU = 5 };
constexpr int kStatsPerGroup = 6;

// The token area's width tiers (see above): which one runs for a row of D values.
enum class TokenTier { warp, block, block_wide, streaming };
TokenTier token_tier(int64_t D);
const char* tier_name(TokenTier tier);

// x, y: [rows, D] contiguous. stats: [rows, kStatsPerGroup].
void token_forward(DType dtype, const Params& p, const void* x, const void* gamma, const void* beta, void* y,
                   void* stats, int64_t rows, int64_t D, void* stream);
// Bytes of device workspace token_backward needs for dγ/dβ partial sums.
size_t token_backward_workspace(DType dtype, int64_t rows, int64_t D);
void token_backward(DType dtype, const Params& p, const void* x, const void* dy, const void* gamma,
                    const void* stats, void* dx, void* dgamma, void* dbeta, void* workspace, int64_t rows,
                    int64_t D, void* stream);

// x, y: [N, C, HW] contiguous; one group per channel over N·HW values. stats: [C, kStatsPerGroup].
// Both directions need `workspace` of channel_workspace bytes for the per-chunk partials.
size_t channel_workspace(DType dtype, int64_t N, int64_t C, int64_t HW);
void channel_forward(DType dtype, const Params& p, const void* x, const void* gamma, const void* beta, void* y,
                     void* stats, void* workspace, int64_t N, int64_t C, int64_t HW, void* stream);
void channel_backward(DType dtype, const Params& p, const void* x, const void* dy, const void* gamma,
                      const void* stats, void* dx, void* dgamma, void* dbeta, void* workspace, int64_t N, int64_t C,
                      int64_t HW, void* stream);

// Whether the last launch failed; the message, else nullptr.
const char* last_error();

// Global-memory bytes per element the kernels move by design, against the minimum (read x once
// and write y once forward; read x and dy and write dx backward). Counts every ibn_load and
// ibn_store, γ/β/statistics/partials included, so the small terms show too; the emulator's
// count of the same launches is tested to match it.
struct Traffic {
  double forward = 0, backward = 0;          // bytes per element
  double forward_min = 0, backward_min = 0;  // the minimum, bytes per element
};
Traffic token_traffic(DType dtype, const Params& p, int64_t rows, int64_t D);
Traffic channel_traffic(DType dtype, const Params& p, int64_t N, int64_t C, int64_t HW);
size_t dtype_size(DType dtype);

}  // namespace ibn::norm::fused
