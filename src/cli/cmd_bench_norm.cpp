// ibn bench norm: the fused CUDA normalizers against a device-to-device copy of the same bytes,
// ATen's LayerNorm, and the same normalizer composed of ATen ops (the reference path); first,
// with or without a GPU, the bytes per element each kernel sequence moves against the minimum.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/norm/normalizer.h"
#include "ibn/spec_string.h"
#include "norm/fused/launch_plan.h"
#include "norm/fused/params.h"

#if defined(IBN_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#endif

namespace ibn::cli {
namespace {

norm::fused::DType fused_dtype(at::ScalarType type) {
  switch (type) {
    case at::kBFloat16: return norm::fused::DType::bf16;
    case at::kHalf: return norm::fused::DType::f16;
    case at::kDouble: return norm::fused::DType::f64;
    default: return norm::fused::DType::f32;
  }
}

// One case of the benchmark (a normalizer, dtype and shape): its traffic, and its timings when
// a GPU ran it (NaN otherwise). Rows are made in the order shapes × dtypes × norms.
struct CaseResult {
  std::string norm, dtype, tier;
  int64_t rows = 0, d = 0;
  double forward_bytes = NAN, backward_bytes = NAN, forward_min = NAN, backward_min = NAN;
  double copy_ms = NAN, layer_norm_ms = NAN, layer_norm_fb_ms = NAN, fused_ms = NAN, fused_fb_ms = NAN, aten_ms = NAN,
         aten_fb_ms = NAN;
};

std::string csv_number(double v) { return std::isnan(v) ? "" : fmt::format("{:.6g}", v); }
std::string csv_text(const std::string& text) {
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

// The results as CSV (one row per case; empty cells for timings not taken), written atomically.
void write_csv(const std::string& path, const std::vector<CaseResult>& results, int multiprocessors) {
  std::string csv =
      "norm,dtype,rows,d,tier,multiprocessors,forward_bytes_per_element,forward_min,backward_bytes_per_element,backward_min,"
      "copy_ms,layer_norm_fwd_ms,layer_norm_fwdbwd_ms,fused_fwd_ms,fused_fwdbwd_ms,aten_fwd_ms,aten_fwdbwd_ms\n";
  for (const CaseResult& r : results) {
    csv += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", csv_text(r.norm), r.dtype, r.rows, r.d, csv_text(r.tier),
                       multiprocessors, csv_number(r.forward_bytes), csv_number(r.forward_min), csv_number(r.backward_bytes),
                       csv_number(r.backward_min), csv_number(r.copy_ms), csv_number(r.layer_norm_ms),
                       csv_number(r.layer_norm_fb_ms), csv_number(r.fused_ms), csv_number(r.fused_fb_ms), csv_number(r.aten_ms),
                       csv_number(r.aten_fb_ms));
  }
  io::write_file_atomically(path, csv);
  std::cout << "wrote " << path << "\n";
}

// The design's global-memory traffic per element (launch_plan.h), for each case: what can be
// judged without a GPU. `multiprocessors` sets the persistent grid and the chunking.
std::vector<CaseResult> print_traffic(const std::vector<std::pair<int64_t, int64_t>>& shapes,
                                      const std::vector<at::ScalarType>& dtypes, const std::vector<std::string>& norms,
                                      int multiprocessors) {
  std::vector<CaseResult> results;
  std::cout << fmt::format("Global-memory bytes per element, every load and store the kernels issue (re-reads served by\n"
                           "L1/L2 included, so an upper bound on DRAM traffic), for {} multiprocessors; min = read x\n"
                           "once and write y once (forward), read x and dy and write dx (backward)\n",
                           multiprocessors);
  std::cout << fmt::format("{:<30} {:<8} {:>12} {:<26} {:>8} {:>6} {:>8} {:>6}\n", "norm", "dtype", "shape", "tier", "fwd B/el",
                           "min", "bwd B/el", "min");
  for (const auto& [rows, d] : shapes) {
    for (const at::ScalarType dtype : dtypes) {
      for (const std::string& spec : norms) {
        const norm::NormSpec parsed = norm::parse_norm_spec(spec);
        const std::optional<norm::fused::Params> params = norm::fused::params_of(parsed);
        const std::string shape = fmt::format("{}x{}", rows, d);
        CaseResult result;
        result.norm = spec, result.dtype = c10::toString(dtype), result.rows = rows, result.d = d;
        if (!params) {
          std::cout << fmt::format("{:<30} {:<8} {:>12} {}\n", spec, c10::toString(dtype), shape, "not fused: the ATen path");
          result.tier = "ATen path";
          results.push_back(result);
          continue;
        }
        // [rows, D] in the batch area: D channels over the rows, as channel tiles (HW = 1).
        const bool batch = parsed.area == "batch";
        const auto dtype_code = fused_dtype(dtype);
        const auto traffic = batch ? norm::fused::channel_traffic(dtype_code, *params, rows, d, 1, multiprocessors)
                                   : norm::fused::token_traffic(dtype_code, *params, rows, d, multiprocessors);
        const std::string tier = batch ? "channel tiles x N chunks" : norm::fused::tier_name(norm::fused::token_tier(d));
        std::cout << fmt::format("{:<30} {:<8} {:>12} {:<26} {:>8.2f} {:>6.0f} {:>8.2f} {:>6.0f}\n", spec, c10::toString(dtype),
                                 shape, tier, traffic.forward, traffic.forward_min, traffic.backward, traffic.backward_min);
        result.tier = tier;
        result.forward_bytes = traffic.forward, result.forward_min = traffic.forward_min;
        result.backward_bytes = traffic.backward, result.backward_min = traffic.backward_min;
        results.push_back(result);
      }
    }
  }
  std::cout << "\n";
  return results;
}

}  // namespace

int bench_norm(const std::vector<std::string>& args) {
  CommandOptions cmd("bench", "ibn bench norm [--shape RxD ...] [--dtype bf16,fp16,fp32] [--norms S,S,...] [--runs N]",
                     "Forward and forward+backward time of each normalizer's fused CUDA kernels (median of\n"
                     "CUDA-event timings, L2 flushed before each), achieved GB/s, % of a device-to-device\n"
                     "copy of the same bytes, and the ratio to ATen's LayerNorm and to the same normalizer\n"
                     "composed of ATen ops. First, with or without a GPU, the global-memory bytes per element\n"
                     "each kernel sequence moves, against the minimum; the timings need a CUDA device.");
  cmd.options.add_options()
      ("shape", po::value<std::vector<std::string>>()->composing(), "ROWSxD, repeatable (default 32768x4096, 65536x1024, 8192x8192)")
      ("dtype", po::value<std::string>()->default_value("bf16,fp16,fp32"), "bf16, fp16, fp32 (comma list)")
      ("norms", po::value<std::string>()->default_value("layernorm;rmsnorm;ibnorm-s:lambda=1;ibnorm-l:lambda=1;ibnorm-t:lambda=1"),
       "normalizer specs separated by ';'")
      ("runs", po::value<int>()->default_value(20), "timed runs per case (median)")
      ("csv", po::value<std::string>()->value_name("FILE"), "also write every case (traffic, and timings when taken) as CSV")
      ("multiprocessors", po::value<int>(),
       "multiprocessors for the traffic table (default: the GPU's, else 132, an H100 SXM's)");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  const auto vm = cmd.parse(rest);
  if (!vm) return 0;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  const std::vector<std::string> shape_texts =
      vm->count("shape") ? (*vm)["shape"].as<std::vector<std::string>>() : std::vector<std::string>{"32768x4096", "65536x1024", "8192x8192"};
  for (const std::string& text : shape_texts) {
    const auto parts = split(text, 'x');
    const std::optional<int64_t> rows = parts.size() == 2 ? parse_integer(parts[0]) : std::nullopt;
    const std::optional<int64_t> d = parts.size() == 2 ? parse_integer(parts[1]) : std::nullopt;
    if (!rows || !d || *rows < 1 || *d < 1) throw UsageError(fmt::format("--shape '{}' must be ROWSxD, e.g. 32768x4096", text));
    shapes.emplace_back(*rows, *d);
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
  int multiprocessors = 132;
  if (vm->count("multiprocessors")) {
    multiprocessors = (*vm)["multiprocessors"].as<int>();
    if (multiprocessors < 1 || multiprocessors > 100000) throw UsageError("--multiprocessors must be between 1 and 100000");
  }
  const std::string csv_path = vm->count("csv") ? (*vm)["csv"].as<std::string>() : "";
#if !defined(IBN_WITH_CUDA)
  const std::vector<CaseResult> results = print_traffic(shapes, dtypes, norms, multiprocessors);
  std::cout << "Timings skipped: this build's LibTorch has no CUDA (the table above needs none).\n";
  if (!csv_path.empty()) write_csv(csv_path, results, multiprocessors);
  return 0;
#else
  const bool have_gpu = torch::cuda::is_available();
  if (have_gpu && !vm->count("multiprocessors")) multiprocessors = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  std::vector<CaseResult> results = print_traffic(shapes, dtypes, norms, multiprocessors);
  if (!have_gpu) {
    std::cout << "Timings skipped: no CUDA device was found (the table above needs none).\n";
    if (!csv_path.empty()) write_csv(csv_path, results, multiprocessors);
    return 0;
  }
  size_t next_case = 0;
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
        CaseResult& result = results.at(next_case++);  // the same shapes × dtypes × norms order
        result.copy_ms = copy, result.layer_norm_ms = ln_fwd, result.layer_norm_fb_ms = ln_fb;
        result.fused_ms = fwd, result.fused_fb_ms = fb, result.aten_ms = aten_fwd, result.aten_fb_ms = aten_fb;
      }
    }
  }
  if (!csv_path.empty()) write_csv(csv_path, results, multiprocessors);
  return 0;
#endif
}

}  // namespace ibn::cli
