// ibn bench norm: the fused CUDA normalizers against a device-to-device copy of the same bytes,
// ATen's LayerNorm, and the same normalizer composed of ATen ops (the reference path).
#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "ibn/error.h"
#include "ibn/norm/normalizer.h"
#include "ibn/spec_string.h"

#if defined(IBN_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#endif

namespace ibn::cli {

int bench_norm(const std::vector<std::string>& args) {
  CommandOptions cmd("bench", "ibn bench norm [--shape RxD ...] [--dtype bf16,fp16,fp32] [--norms S,S,...] [--runs N]",
                     "Forward and forward+backward time of each normalizer's fused CUDA kernels (median of\n"
                     "CUDA-event timings, L2 flushed before each), achieved GB/s, % of a device-to-device\n"
                     "copy of the same bytes, and the ratio to ATen's LayerNorm and to the same normalizer\n"
                     "composed of ATen ops. Needs a CUDA device.");
  cmd.options.add_options()
      ("shape", po::value<std::vector<std::string>>()->composing(), "ROWSxD, repeatable (default 32768x4096, 65536x1024, 8192x8192)")
      ("dtype", po::value<std::string>()->default_value("bf16,fp16,fp32"), "bf16, fp16, fp32 (comma list)")
      ("norms", po::value<std::string>()->default_value("layernorm;rmsnorm;ibnorm-s:lambda=1;ibnorm-l:lambda=1;ibnorm-t:lambda=1"),
       "normalizer specs separated by ';'")
      ("runs", po::value<int>()->default_value(20), "timed runs per case (median)");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  const auto vm = cmd.parse(rest);
  if (!vm) return 0;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  const std::vector<std::string> shape_texts =
      vm->count("shape") ? (*vm)["shape"].as<std::vector<std::string>>() : std::vector<std::string>{"32768x4096", "65536x1024", "8192x8192"};
  for (const std::string& text : shape_texts) {
    const auto parts = split(text, 'x');
    char* end = nullptr;
    const long long rows = parts.size() == 2 ? std::strtoll(parts[0].c_str(), &end, 10) : 0;
    const long long d = parts.size() == 2 && *end == '\0' ? std::strtoll(parts[1].c_str(), &end, 10) : 0;
    if (rows < 1 || d < 1 || *end != '\0') throw UsageError(fmt::format("--shape '{}' must be ROWSxD, e.g. 32768x4096", text));
    shapes.emplace_back(rows, d);
  }
  std::vector<at::ScalarType> dtypes;
  for (const std::string& name : split((*vm)["dtype"].as<std::string>(), ',')) {
    if (name == "bf16") dtypes.push_back(at::kBFloat16);
    else if (name == "fp16") dtypes.push_back(at::kHalf);
    else if (name == "fp32") dtypes.push_back(at::kFloat);
    else throw UsageError(fmt::format("--dtype '{}' must be bf16, fp16 or fp32", name));
  }
  const std::vector<std::string> norms = split((*vm)["norms"].as<std::string>(), ';');
  for (const std::string& spec : norms) norm::Normalizer check(spec, 8);  // bad specs fail before any work
  const int runs = (*vm)["runs"].as<int>();
  if (runs < 1) throw UsageError("--runs must be at least 1");
#if !defined(IBN_WITH_CUDA)
  throw std::runtime_error("ibn bench norm times the fused CUDA kernels, and this build's LibTorch has no CUDA");
#else
  if (!torch::cuda::is_available()) throw std::runtime_error("ibn bench norm needs a CUDA device; none was found");
  const auto device = torch::Device(torch::kCUDA, 0);
  at::Tensor flush = at::empty({256 << 20}, at::TensorOptions().device(device).dtype(at::kByte));
  // Median milliseconds of `body`, each run timed by CUDA events after an L2 flush.
  const auto time_ms = [&](const std::function<void()>& body) {
    body();  // warm-up
    std::vector<float> ms;
    for (int r = 0; r < runs; ++r) {
      flush.zero_();
      at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
      start.record();
      body();
      stop.record();
      stop.synchronize();
      ms.push_back(start.elapsed_time(stop));
    }
    std::sort(ms.begin(), ms.end());
    return static_cast<double>(ms[ms.size() / 2]);
  };
  std::cout << fmt::format("ibn bench norm on {} ({} runs, median)\n", at::cuda::getCurrentDeviceProperties()->name, runs);
  std::cout << fmt::format("{:<22} {:<5} {:>12} {:>9} {:>9} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9}\n", "norm", "dtype", "shape",
                           "fwd ms", "f+b ms", "GB/s", "%copy", "x LN fwd", "x LN f+b", "x ATen f", "x ATen fb");
  for (const auto& [rows, d] : shapes) {
    for (const at::ScalarType dtype : dtypes) {
      const auto options = at::TensorOptions().device(device).dtype(dtype);
      const at::Tensor x = at::randn({rows, d}, options);
      const at::Tensor dy = at::randn({rows, d}, options);
      at::Tensor out = at::empty_like(x);
      const double bytes = 2.0 * static_cast<double>(x.numel()) * static_cast<double>(x.element_size());
      const double copy = time_ms([&] { out.copy_(x); });
      const at::Tensor w = at::ones({d}, options), b = at::zeros({d}, options);
      const double ln_fwd = time_ms([&] { at::layer_norm(x, {d}, w, b); });
      const at::Tensor xg = x.detach().requires_grad_(true);
      const double ln_fb = time_ms([&] { at::layer_norm(xg, {d}, w, b).backward(dy); });
      const std::string shape = fmt::format("{}x{}", rows, d);
      std::cout << fmt::format("{:<22} {:<5} {:>12} {:>9.3f} {:>9} {:>8.0f} {:>6}\n", "copy (D2D)", c10::toString(dtype), shape,
                               copy, "", bytes / copy / 1e6, "100");
      std::cout << fmt::format("{:<22} {:<5} {:>12} {:>9.3f} {:>9.3f} {:>8.0f} {:>6.0f}\n", "ATen layer_norm", c10::toString(dtype),
                               shape, ln_fwd, ln_fb, bytes / ln_fwd / 1e6, 100 * copy / ln_fwd);
      for (const std::string& spec : norms) {
        norm::Normalizer module(spec, d);
        module->to(device);
        const auto timed = [&](bool fused) {
          ::setenv("IBN_FUSED_NORM", fused ? "1" : "0", 1);
          const double fwd = time_ms([&] {
            torch::NoGradGuard no_grad;
            module(x);
          });
          const double fb = time_ms([&] { module(xg).backward(dy); });
          return std::pair<double, double>{fwd, fb};
        };
        const auto [fwd, fb] = timed(true);
        const auto [aten_fwd, aten_fb] = timed(false);
        ::unsetenv("IBN_FUSED_NORM");
        std::cout << fmt::format("{:<22} {:<5} {:>12} {:>9.3f} {:>9.3f} {:>8.0f} {:>6.0f} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f}\n",
                                 spec, c10::toString(dtype), shape, fwd, fb, bytes / fwd / 1e6, 100 * copy / fwd, fwd / ln_fwd,
                                 fb / ln_fb, fwd / aten_fwd, fb / aten_fb)
                  << std::flush;
      }
    }
  }
  return 0;
#endif
}

}  // namespace ibn::cli
