#pragma once
// simt.h: runs the project's CUDA kernels, from their unchanged .cu sources, on the CPU, so that
// every commit exercises them where no GPU is (CI included). It is a test tool, not a simulator:
// it checks semantics (indexing, formulas, reduction order, barriers, shuffles, shared-memory
// initialization, alignment, launch configurations) and says nothing about speed.
//
//   - A launch runs its blocks one after another (reversed with SIMT_SCHEDULE=reverse). The
//     threads of a block are fibers (Boost.Context) on the calling OS thread, scheduled
//     round-robin in thread order, or in reverse order with SIMT_SCHEDULE=reverse: two legal
//     interleavings, deterministic, so a missing barrier gives the same wrong answer every run.
//   - __syncthreads and the shuffles are barriers: a fiber runs until it waits at one. A barrier
//     some thread can never reach and a shuffle after lanes of its warp have exited are reported
//     and abort the test. Which __syncthreads a thread waits at is not checked: the host
//     compiler may duplicate or merge barrier calls, so call sites do not identify barriers.
//   - Dynamic shared memory (IBN_DYNAMIC_SHARED in norm/fused/device.h) is a per-block arena
//     filled with 0xFF bytes (NaN in every floating type) before each block and followed by an
//     inaccessible page, so a read of unwritten shared memory shows up as NaN and an overrun
//     faults. Static __shared__ is not provided: kernels use the arena.
//   - Global accesses through ibn_load/ibn_store are checked for alignment and counted (bytes
//     loaded and stored), so a test can compare a kernel's traffic with its accounting.
//   - Launch configurations are checked as a GPU would (block ≤ 1024 threads, grid limits,
//     at most 48 KiB of dynamic shared memory); a bad one sets the error cudaGetLastError returns.
// Device math is host math (a few ulp apart from CUDA's).
#include <math.h>  // C++ <math.h>: float overloads of tanh, log1p, pow... in the global namespace

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __restrict__ __restrict

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

// The current thread's coordinates: set by the scheduler before it resumes a fiber.
inline uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim, gridDim;

namespace simt {

[[noreturn]] void fail(const std::string& what);

struct Config {
  dim3 grid, block;
  size_t shared_bytes = 0;
};

// Runs body on every thread of every block of the launch (after checking the configuration).
void run(const Config& config, const std::function<void()>& body);

// The error of the last launch with a bad configuration (nullptr if none), cleared when read.
const char* take_launch_error();
const char* peek_launch_error();

unsigned char* dynamic_shared();
void sync_block();
void sync_warp();
// The 8 bytes `bits` of this lane exchanged within its warp: returns source_lane's bits.
uint64_t exchange(uint64_t bits, int source_lane, unsigned mask);
int lane_id();

// Bytes moved by ibn_load/ibn_store since the last reset.
struct Traffic {
  uint64_t loaded = 0, stored = 0;
};
Traffic& traffic();

void check_alignment(const void* p, size_t alignment, size_t bytes, const char* what);

template <typename T>
T global_load(const T* p) {
  check_alignment(p, alignof(T), sizeof(T), "load");
  traffic().loaded += sizeof(T);
  return *p;
}
template <typename T>
void global_store(T* p, const T& v) {
  check_alignment(p, alignof(T), sizeof(T), "store");
  traffic().stored += sizeof(T);
  *p = v;
}

// IBN_LAUNCH(grid, block, shared, stream, kernel)(args...): the arguments are converted to the
// kernel's parameter types once, as a launch does, and each thread gets its own copy.
class Launch {
 public:
  template <typename Stream>
  Launch(dim3 grid, dim3 block, size_t shared_bytes, Stream) : config_{grid, block, shared_bytes} {}
  template <typename... Params>
  auto kernel(void (*k)(Params...)) const {
    return [config = config_, k](auto&&... args) {
      const std::tuple<Params...> params(std::forward<decltype(args)>(args)...);
      run(config, [&] { std::apply(k, params); });
    };
  }

 private:
  Config config_;
};

template <typename T>
T shuffle(unsigned mask, T v, int source_in_segment, int width) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  const int lane = lane_id();
  const int base = lane / width * width;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  // Out of the segment: the lane keeps its own value (as __shfl_up/down_sync do).
  const int source = source_in_segment >= 0 && source_in_segment < width ? base + source_in_segment : lane;
  bits = exchange(bits, source, mask);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace simt

inline void __syncthreads() { simt::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { simt::sync_warp(); }
template <typename T>
T __shfl_sync(unsigned mask, T v, int source, int width = 32) {
  return simt::shuffle(mask, v, source % width, width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return simt::shuffle(mask, v, (simt::lane_id() % width) ^ lane_mask, width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return simt::shuffle(mask, v, simt::lane_id() % width + static_cast<int>(delta), width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return simt::shuffle(mask, v, simt::lane_id() % width - static_cast<int>(delta), width);
}

// CUDA math functions that <math.h> lacks.
inline float rsqrt(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __fdividef(float a, float b) { return a / b; }
