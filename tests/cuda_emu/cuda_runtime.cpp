// The emulator's CUDA runtime (include/cuda_runtime_api.h): device memory is host memory.
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>

cudaError_t cudaGetLastError() { return simt::take_launch_error() == nullptr ? cudaSuccess : cudaErrorInvalidConfiguration; }
cudaError_t cudaPeekAtLastError() { return simt::peek_launch_error() == nullptr ? cudaSuccess : cudaErrorInvalidConfiguration; }
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int) {
  switch (attribute) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: {
      const char* count = std::getenv("SIMT_MULTIPROCESSORS");
      *value = count != nullptr ? std::atoi(count) : 3;
      return *value > 0 ? cudaSuccess : cudaErrorInvalidValue;
    }
  }
  return cudaErrorInvalidValue;
}
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  return *p != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* destination, const void* source, size_t bytes, cudaMemcpyKind) {
  if (bytes != 0) std::memcpy(destination, source, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* destination, int value, size_t bytes) {
  std::memset(destination, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
