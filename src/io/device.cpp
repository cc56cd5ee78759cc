#include "ibn/device.h"

#include <dlfcn.h>
#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/cuda.h>

#include "ibn/build_info.h"
#include "ibn/error.h"

namespace ibn {

namespace {

using SetThreads = void (*)(int);
using GetThreads = int (*)();

SetThreads openblas_set() { return reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads")); }
GetThreads openblas_get() { return reinterpret_cast<GetThreads>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads")); }

// Sets OpenBLAS's thread count to n. An OpenMP build of OpenBLAS sets OpenMP's thread count
// with its own: LibTorch's count is put back after.
void set_openblas_threads(SetThreads set, int n) {
  const int torch_threads = at::get_num_threads();
  set(n);
  if (at::get_num_threads() != torch_threads) at::set_num_threads(torch_threads);
}

}  // namespace


c10::Device resolve_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (name != "cpu" && name != "cuda" && name.rfind("cuda:", 0) != 0) {
    throw UsageError(fmt::format("unknown device '{}'; expected cpu, cuda, cuda:N or auto", name));
  }
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {
    throw UsageError(fmt::format("unknown device '{}'; expected cpu, cuda, cuda:N or auto", name));
  }
  if (device.is_cuda()) {
    const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
    if (count == 0) {
      throw std::runtime_error(fmt::format(
          "device '{}' asked for, but no CUDA device is available (LibTorch built with CUDA: {})",
          name, build_info().torch_has_cuda ? "yes" : "no"));
    }
    if (device.has_index() && device.index() >= count) {
      throw std::runtime_error(fmt::format("device '{}' asked for, but only {} CUDA device(s) exist", name, count));
    }
  }
  return device;
}

void keep_freed_memory() {
  constexpr int kKeepBytes = 512 << 20;
  mallopt(M_MMAP_THRESHOLD, kKeepBytes);
  mallopt(M_TRIM_THRESHOLD, kKeepBytes);
}

void check_thread_count(int n) {
  if (n < 0 || n > kMaxThreads) {
    throw UsageError(fmt::format("--threads {} must lie in [0, {}] (0: the command's default)", n, kMaxThreads));
  }
}

void set_compute_threads(int n) {
  check_thread_count(n);
  if (n > 0) at::set_num_threads(n);
  // A user's OPENBLAS_NUM_THREADS is theirs to keep (the trade-off is in the header).
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return;
  // Looked up at run time: the BLAS behind Debian's LibTorch is chosen by update-alternatives.
  if (const SetThreads openblas = openblas_set()) set_openblas_threads(openblas, 1);
}

int every_core() {
  return static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, static_cast<unsigned>(kMaxThreads)));
}

BlasOnCallingThread::BlasOnCallingThread() {
  const SetThreads set = openblas_set();
  const GetThreads get = openblas_get();
  if (set == nullptr || get == nullptr) return;
  previous_ = get();
  set_openblas_threads(set, 1);
}

BlasOnCallingThread::~BlasOnCallingThread() {
  if (previous_ > 0) set_openblas_threads(openblas_set(), previous_);
}

std::string cuda_device_summary() {
  const size_t count = torch::cuda::device_count();
  return count == 0 ? "none" : fmt::format("{}", count);
}

}  // namespace ibn
