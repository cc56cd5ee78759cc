#pragma once
// Fused CUDA kernels of the normalizer family (token and batch areas; forward and backward),
// beside their CPU reference in norm_math.h. Plain CUDA, no LibTorch: device pointers in,
// `stream` a cudaStream_t. Accumulation in float (double for double inputs); γ, β, dγ, dβ and
// the saved statistics ([groups, kStatsPerGroup], indexed by Stat) are in that accumulation type.
// Backward is bitwise deterministic: dγ/dβ go through per-block partial sums over a fixed
// chunking of the groups and a second pass in a fixed order, with no floating-point atomics.
//
// Design (norm_kernels.cu has the details; launch_plan.h the launch shapes and the traffic that
// `ibn bench norm` prints):
//   token area, by width D:  D ≤ 256      a warp per row, the row in registers
//                            D ≤ 8192     a block per row, the row in registers
//                            D > 8192     a block per row, streaming (x re-read from L1/L2)
//   batch area: a 2D grid of (channel tiles × chunks of N) partial moments, merged per channel
//   in a fixed order, then an elementwise pass.
#include <cstddef>
#include <cstdint>

#include "ibn/norm/fp8_codec.h"
#include "norm/fused/launch_plan.h"
#include "norm/fused/norm_math.h"

namespace ibn::norm::fused {

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

// FP8 output stage (fp8.h), after token_forward or channel_forward: y recomputed in the
// accumulation type from x, γ, β and the saved statistics, quantized once. The tensor is
// [outer, features, inner] (token area: [rows, D, 1] with statistics per row; batch area:
// [N, C, HW] with statistics per channel); a row is the `features` values at one (outer, inner).
struct Fp8Layout {
  int64_t outer = 0, features = 0, inner = 1;
  bool stats_per_feature = false;
  IBN_HD int64_t rows() const { return outer * inner; }
};
// Bytes of device workspace fp8_output needs (the rows' amax).
size_t fp8_workspace(DType dtype, const Fp8Layout& layout);
// bytes: uint8 like x; scale: accumulation type, [rows] when per_row, else [1]; dequantized: T
// like x, decode(byte)·scale.
void fp8_output(DType dtype, const Params& p, fp8::Format format, bool per_row, const void* x, const void* gamma,
                const void* beta, const void* stats, void* bytes, void* scale, void* dequantized, void* workspace,
                const Fp8Layout& layout, void* stream);

// Whether the last launch failed; the message, else nullptr.
const char* last_error();

}  // namespace ibn::norm::fused
