#pragma once
// How the fused kernels are launched for a shape (tiers, threads, persistent blocks, chunks of the
// batch area), and the global-memory traffic that follows from it. Plain host C++, shared by
// norm_kernels.cu and by `ibn bench norm`, which prints the traffic even without a GPU. The
// multiprocessor count is a parameter: the chunking (and so the order of the sums) depends on it.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "norm/fused/norm_math.h"

namespace ibn::norm::fused {

enum class DType { f32, f64, f16, bf16 };
inline size_t dtype_size(DType dtype) { return dtype == DType::f64 ? 8 : dtype == DType::f32 ? 4 : 2; }
// γ, β, the statistics and every sum are in float, or double for double inputs.
inline size_t accumulate_size(DType dtype) { return dtype == DType::f64 ? 8 : 4; }

// The per-group statistics the forward pass saves: μ, r = 1/√(σ² + ε), and σ² itself (the
// running variance is updated from σ², not rebuilt from r, which loses it when σ² ≲ ε); then
// the same three of u = ψ(z) (IBNorm with λ ≠ 0 only; 0, 1, 1 otherwise).
enum Stat : int { kMean = 0, kRstd = 1, kVar = 2, kMeanU = 3, kRstdU = 4, kVarU = 5 };
constexpr int kStatsPerGroup = 6;

// Threads per block of each token tier; each kernel declares its count in __launch_bounds__.
constexpr int kWarpBlockThreads = 128;    // warp tier: a row per warp, 4 per block
constexpr int kRowBlockMaxThreads = 512;  // block tiers: a row per block
constexpr int kStreamingThreads = 1024;   // streaming tier: a row per block
constexpr int kWarpRowsPerBlock = kWarpBlockThreads / 32;
// Widths each tier holds in registers: 8 values per lane of a warp; 8, then 16, per thread.
constexpr int64_t kWarpTierMax = 32 * 8, kBlockTierMax = kRowBlockMaxThreads * 8, kWideTierMax = kRowBlockMaxThreads * 16;
// Batch area: blocks of 32 × kChannelRows threads.
constexpr int kChannelRows = 8;

enum class TokenTier { warp, block, block_wide, streaming };

inline TokenTier token_tier(int64_t D) {
  if (D <= kWarpTierMax) return TokenTier::warp;
  if (D <= kBlockTierMax) return TokenTier::block;
  if (D <= kWideTierMax) return TokenTier::block_wide;
  return TokenTier::streaming;
}

inline const char* tier_name(TokenTier tier) {
  switch (tier) {
    case TokenTier::warp: return "warp/row, registers";
    case TokenTier::block: return "block/row, registers";
    case TokenTier::block_wide: return "block/row, registers x16";
    case TokenTier::streaming: return "block/row, streaming";
  }
  return "?";
}

// A token launch: threads per block and blocks (persistent: at most what fills the device, each
// block taking rows grid-stride).
struct TokenLaunch {
  TokenTier tier;
  int threads;
  int64_t blocks;
  int warps_per_row;  // warps that each load a row's statistics
};
inline TokenLaunch token_launch(int64_t rows, int64_t D, int multiprocessors) {
  const TokenTier tier = token_tier(D);
  const int64_t sms = std::max(multiprocessors, 1);
  switch (tier) {
    case TokenTier::warp: {
      const int64_t groups = (rows + kWarpRowsPerBlock - 1) / kWarpRowsPerBlock;
      return {tier, kWarpBlockThreads, std::min(groups, sms * 16), 1};
    }
    case TokenTier::block:
    case TokenTier::block_wide: {
      const int64_t per_thread = tier == TokenTier::block ? 8 : 16;
      const int threads = static_cast<int>(std::max<int64_t>(64, ((D + per_thread - 1) / per_thread + 31) / 32 * 32));
      return {tier, threads, std::min(rows, sms * std::max(1, 2048 / threads)), threads / 32};
    }
    case TokenTier::streaming: break;
  }
  return {tier, kStreamingThreads, std::min(rows, sms * 2), kStreamingThreads / 32};
}

// The batch area's grid: (channel tiles × chunks of N). With HW = 1 a tile is 32 consecutive
// channels; otherwise one channel. Enough chunks to give the device about 4 blocks per
// multiprocessor, each chunk at least kChannelRows rows of N.
struct ChannelPlan {
  int64_t N, C, HW, chunks, rows_per_chunk;
  IBN_HD bool tiles() const { return HW == 1; }
  IBN_HD int64_t tile_count() const { return tiles() ? (C + 31) / 32 : C; }
};
inline ChannelPlan channel_plan(int64_t N, int64_t C, int64_t HW, int multiprocessors) {
  const int64_t tiles = ChannelPlan{N, C, HW, 1, N}.tile_count();
  const int64_t target = 4 * static_cast<int64_t>(std::max(multiprocessors, 1));
  const int64_t max_chunks = std::max<int64_t>(1, std::min<int64_t>(1024, N / kChannelRows));
  int64_t chunks = std::max<int64_t>(1, std::min(max_chunks, (target + tiles - 1) / tiles));
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  return {N, C, HW, chunks, rows_per_chunk};
}

// Global-memory bytes per element the kernels move, against the minimum (read x once and write y
// once forward; read x and dy and write dx backward). Every load and store is counted, γ/β,
// statistics and partials included, as the kernels issue them; re-reads of a row or of γ that a
// GPU serves from L1/L2 count too, so this is an upper bound on DRAM traffic. tests/cuda_emu
// checks it against the emulator's count of the same launches. Gradients of γ, β are counted
// when the normalizer is affine.
struct Traffic {
  double forward = 0, backward = 0;          // bytes per element
  double forward_min = 0, backward_min = 0;  // the minimum, bytes per element
};

inline Traffic token_traffic(DType dtype, const Params& p, int64_t rows, int64_t D, int multiprocessors) {
  const TokenLaunch launch = token_launch(rows, D, multiprocessors);
  const double t = static_cast<double>(dtype_size(dtype)), a = static_cast<double>(accumulate_size(dtype));
  const double n = static_cast<double>(rows) * static_cast<double>(D), d = static_cast<double>(D);
  const double blocks = static_cast<double>(launch.blocks), r = static_cast<double>(rows);
  const bool compresses = p.compresses();
  const double stats_read = (compresses ? 4 : 2) * a;
  Traffic out;
  out.forward_min = 2 * t, out.backward_min = 3 * t;
  double forward = 0, backward = 0;
  if (launch.tier == TokenTier::streaming) {
    const double passes = compresses ? 3 : 2;
    forward = n * t * (passes + 1) + (p.affine ? 2 * n * a : 0) + r * kStatsPerGroup * a;
    // dγ/dβ partials added in place (written every row, read back after each block's first row),
    // then read by the reduction, which writes dγ/dβ.
    const double in_place = p.affine ? 2 * n * a + 2 * (r - blocks) * d * a + blocks * 2 * d * a + 2 * d * a : 0;
    backward = n * t * (2 * passes + 1) + (p.affine ? passes * n * a : 0) + r * 32 * stats_read + in_place;
  } else {
    const double copies = launch.tier == TokenTier::warp ? kWarpRowsPerBlock : 1;  // of γ (β) per block
    // dγ/dβ: the blocks' partials written and read back, then dγ/dβ written.
    const double partials = p.affine ? blocks * 2 * d * a * 2 + 2 * d * a : 0;
    forward = 2 * n * t + (p.affine ? blocks * copies * 2 * d * a : 0) + r * kStatsPerGroup * a;
    backward = 3 * n * t + (p.affine ? blocks * copies * d * a : 0) + r * launch.warps_per_row * stats_read + partials;
  }
  out.forward = forward / n, out.backward = backward / n;
  return out;
}

inline Traffic channel_traffic(DType dtype, const Params& p, int64_t N, int64_t C, int64_t HW, int multiprocessors) {
  const ChannelPlan g = channel_plan(N, C, HW, multiprocessors);
  const double t = static_cast<double>(dtype_size(dtype)), a = static_cast<double>(accumulate_size(dtype));
  const double n = static_cast<double>(N) * static_cast<double>(C) * static_cast<double>(HW), c = static_cast<double>(C);
  const double cells = static_cast<double>(g.chunks) * c;                         // (chunk, channel) partials
  const double threads = cells * (g.tiles() ? kChannelRows : 32 * kChannelRows);  // threads with a channel
  const bool compresses = p.compresses();
  const double stats = (compresses ? 4 : 2) * a;
  Traffic out;
  out.forward_min = 2 * t, out.backward_min = 3 * t;
  // Moments of x: x read, partials written and merged, statistics written.
  double forward = n * t + cells * 3 * a * 2 + c * kStatsPerGroup * a;
  if (compresses) forward += n * t + threads * 2 * a + cells * 3 * a * 2 + c * 3 * a;  // of u
  forward += 2 * n * t + threads * (stats + (p.affine ? 2 * a : 0));                    // y
  const double constants = threads * (stats + (p.affine ? a : 0));
  // Σ dy and Σ dy·x̂ (giving dβ, dγ), then the sums through ψ, then dx.
  double backward = 2 * n * t + constants + cells * 2 * a * 2 + c * 2 * a + (p.affine ? c * 2 * a : 0);
  if (compresses) backward += 2 * n * t + constants + threads * 2 * a + cells * 2 * a * 2 + c * 2 * a;
  backward += 3 * n * t + constants + threads * (compresses ? 4 : 2) * a;
  out.forward = forward / n, out.backward = backward / n;
  return out;
}

}  // namespace ibn::norm::fused
