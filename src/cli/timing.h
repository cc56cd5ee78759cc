#pragma once
// Wall-clock timing shared by the `ibn bench` targets.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include <torch/cuda.h>

namespace ibn::cli {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Median wall time of `runs` calls after one warm-up call (CUDA start-up, allocator caches; the
// peers get a warm-up too). On CUDA each call is synchronized before its clock stops.
template <typename Body>
double median_seconds(int64_t runs, const c10::Device& device, Body body) {
  body();
  std::vector<double> times;
  for (int64_t r = 0; r < runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    body();
    if (device.is_cuda()) torch::cuda::synchronize();
    times.push_back(seconds_since(start));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace ibn::cli
