// The SIMT emulator's own checks: shuffles against their CUDA definitions, launch-configuration
// errors, the poisoned shared-memory arena, and the faults it must report (an unreachable
// barrier, a misaligned vector access, a shuffle after lanes exited), each on a small kernel.
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "norm/fused/device.h"

namespace {

__global__ void shuffles(int* out, int width) {
  const int lane = static_cast<int>(threadIdx.x);
  const int v = 100 + lane;
  out[0 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, 5, width);
  out[1 * 32 + lane] = __shfl_down_sync(0xffffffffu, v, 3u, width);
  out[2 * 32 + lane] = __shfl_up_sync(0xffffffffu, v, 2u, width);
  out[3 * 32 + lane] = __shfl_sync(0xffffffffu, v, 7, width);
}

TEST(Simt, ShufflesFollowTheirCudaDefinitions) {
  for (int width : {32, 16, 8}) {
    std::vector<int> out(4 * 32, -1);
    IBN_LAUNCH(1, 32, 0, nullptr, shuffles)(out.data(), width);
    for (int lane = 0; lane < 32; ++lane) {
      const int base = lane / width * width, in_segment = lane % width;
      EXPECT_EQ(out[lane], 100 + (base + (in_segment ^ 5) % width)) << "xor, lane " << lane << " width " << width;
      EXPECT_EQ(out[32 + lane], 100 + (in_segment + 3 < width ? lane + 3 : lane)) << "down, lane " << lane;
      EXPECT_EQ(out[64 + lane], 100 + (in_segment >= 2 ? lane - 2 : lane)) << "up, lane " << lane;
      EXPECT_EQ(out[96 + lane], 100 + base + 7 % width) << "sync, lane " << lane;
    }
  }
}

__global__ void nothing() {}

TEST(Simt, BadLaunchConfigurationsAreErrors) {
  IBN_LAUNCH(1, 1025, 0, nullptr, nothing)();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read once
  IBN_LAUNCH(dim3(1, 65536), 32, 0, nullptr, nothing)();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  IBN_LAUNCH(0, 32, 0, nullptr, nothing)();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  IBN_LAUNCH(1, 32, 48 * 1024 + 16, nullptr, nothing)();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  IBN_LAUNCH(1, dim3(32, 32), 48 * 1024, nullptr, nothing)();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// Thread t sums the shared values of threads t and t+1; with the barrier they are written first.
template <bool kBarrier>
__global__ void neighbour_sum(float* out) {
  IBN_DYNAMIC_SHARED(shared);
  float* values = reinterpret_cast<float*>(shared);
  values[threadIdx.x] = static_cast<float>(threadIdx.x);
  if (kBarrier) __syncthreads();
  out[threadIdx.x] = values[threadIdx.x] + values[(threadIdx.x + 1) % blockDim.x];
}

TEST(Simt, AMissingBarrierReadsPoisonedSharedMemory) {
  std::vector<float> out(64);
  IBN_LAUNCH(2, 64, 64 * sizeof(float), nullptr, neighbour_sum<true>)(out.data());
  for (int t = 0; t < 64; ++t) EXPECT_EQ(out[t], static_cast<float>(t + (t + 1) % 64));
  // Without it, the fibers run in order to the end, so a thread reads its neighbour's slot
  // before the neighbour wrote it (forward order), or after (reverse order) but the last
  // thread's neighbour still reads NaN: some output is NaN in either order.
  IBN_LAUNCH(2, 64, 64 * sizeof(float), nullptr, neighbour_sum<false>)(out.data());
  int nan = 0;
  for (float v : out) nan += std::isnan(v);
  EXPECT_GT(nan, 0);
}

// Lane 0 waits for its warp, the other lanes for the block: neither barrier can complete.
__global__ void unreachable_barrier() {
  if (threadIdx.x == 0) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}
__global__ void vector_load(const unsigned char* bytes, uint4* out) { *out = ibn_load(reinterpret_cast<const uint4*>(bytes + 4)); }
__global__ void shuffle_after_exit(int* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

TEST(SimtDeathTest, FaultsAreReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<int> lanes(32);
  EXPECT_DEATH(IBN_LAUNCH(1, 32, 0, nullptr, unreachable_barrier)(), "no thread can run");
  alignas(16) unsigned char bytes[32] = {};
  uint4 out{};
  EXPECT_DEATH(IBN_LAUNCH(1, 1, 0, nullptr, vector_load)(bytes, &out), "misaligned 16-byte global load");
  EXPECT_DEATH(IBN_LAUNCH(1, 32, 0, nullptr, shuffle_after_exit)(lanes.data()), "after some lanes");
}

__global__ void copy(const float* in, float* out, int n) {
  for (int i = static_cast<int>(threadIdx.x); i < n; i += static_cast<int>(blockDim.x)) ibn_store(out + i, ibn_load(in + i));
}

TEST(Simt, CountsGlobalTraffic) {
  std::vector<float> in(100, 1.f), out(100);
  simt::traffic() = {};
  IBN_LAUNCH(1, 64, 0, nullptr, copy)(in.data(), out.data(), 100);
  EXPECT_EQ(simt::traffic().loaded, 400u);
  EXPECT_EQ(simt::traffic().stored, 400u);
  EXPECT_EQ(out[99], 1.f);
}

}  // namespace
