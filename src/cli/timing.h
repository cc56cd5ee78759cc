#pragma once
// Wall-clock timing shared by the `ibn bench` targets.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

#include <torch/cuda.h>

namespace ibn::cli {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The median of `values` (the upper one of the middle two for an even count); not empty.
inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
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
  return median(std::move(times));
}

}  // namespace ibn::cli
