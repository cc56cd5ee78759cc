#pragma once
// What the fused kernels use beyond plain CUDA C++, defined once for nvcc and once for the
// project's SIMT emulator (tests/cuda_emu/), so that norm_kernels.cu is the same source in both:
//   IBN_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...)   a kernel launch
//   IBN_DYNAMIC_SHARED(name)                                         the block's dynamic shared memory
//   ibn_load(p), ibn_store(p, v)                                     global-memory accesses
// Kernels touch global memory only through ibn_load/ibn_store: the emulator counts those bytes
// (the bytes-per-element accounting is tested against that count) and checks their alignment.
// Static __shared__ arrays are not used: the emulator poisons the dynamic arena before every
// block, which catches reads of shared memory nobody wrote.
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_runtime.h>

#define IBN_DEVICE __device__ __forceinline__
#define IBN_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#define IBN_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]

template <typename T>
__device__ __forceinline__ T ibn_load(const T* p) {
  return *p;
}
template <typename T>
__device__ __forceinline__ void ibn_store(T* p, const T& v) {
  *p = v;
}

#else  // the SIMT emulator: tests/cuda_emu/simt.h

#include <cuda_runtime.h>  // tests/cuda_emu/include/cuda_runtime.h, which includes simt.h

#define IBN_DEVICE inline
#define IBN_LAUNCH(grid, block, shared_bytes, stream, ...) \
  simt::Launch(dim3(grid), dim3(block), shared_bytes, stream).kernel(__VA_ARGS__)
#define IBN_DYNAMIC_SHARED(name) unsigned char* const name = simt::dynamic_shared()

template <typename T>
inline T ibn_load(const T* p) {
  return simt::global_load(p);
}
template <typename T>
inline void ibn_store(T* p, const T& v) {
  simt::global_store(p, v);
}

#endif
