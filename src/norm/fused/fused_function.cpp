// The fused kernels as a torch::autograd::Function, used by NormalizerImpl::forward for CUDA
// inputs when IBN_FUSED_NORM=1 (see fused_function.h). Built only when LibTorch has CUDA.
#include "norm/fused/fused_function.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(IBN_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/GradMode.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/autograd.h>

#include "ibn/norm/area.h"
#include "norm/fused/norm_kernels.h"
#include "norm/fused/params.h"
#endif

namespace ibn::norm::fused {

bool enabled() {
#if defined(IBN_WITH_CUDA)
  const char* flag = std::getenv("IBN_FUSED_NORM");
  return flag != nullptr && std::strcmp(flag, "1") == 0;
#else
  return false;
#endif
}

namespace {
std::atomic<int64_t> fused_forward_calls{0};
}  // namespace

int64_t forward_calls() { return fused_forward_calls.load(); }

#if !defined(IBN_WITH_CUDA)

std::optional<at::Tensor> try_forward(const NormSpec&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      std::vector<RunningBuffer>*, bool, double) {
  return std::nullopt;
}

std::optional<Fp8Tensor> try_forward_fp8(const NormSpec&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         std::vector<RunningBuffer>*, bool, double, const Fp8Output&) {
  return std::nullopt;
}

#else

namespace {

DType dtype_of(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: throw std::runtime_error("fused normalizer: unsupported dtype");
  }
}

// Shape of the groups: token area over the last dim ([rows, D]); batch area per channel of
// [N, C, HW] (a trailing feature dim of [N, T, D] is a channel over N·T).
struct Layout {
  bool channels = false;
  int64_t rows = 0, D = 0, N = 0, C = 0, HW = 1;
  std::vector<RunningBuffer>* running = nullptr;  // batch area in training: updated in forward
  double momentum = 0.1;
};

// The running statistics from the kernels' saved [C, kStatsPerGroup] statistics, by
// StatsContext's rule: the variances are the saved σ² themselves (rebuilding them from
// r = 1/√(σ² + ε) loses them when σ² ≲ ε). The statistics of u exist only when IBNorm
// compresses (λ ≠ 0); at λ = 0 the ATen path leaves running_*_u alone, and so does this.
void update_running_from(std::vector<RunningBuffer>& running, const at::Tensor& stats, const Params& p,
                         double momentum, int64_t group_size) {
  for (RunningBuffer& buffer : running) {
    const std::string& key = buffer.stat.key;
    const bool of_u = key == "mean_u" || key == "var_u";
    if (of_u && !p.compresses()) continue;
    int column = -1;
    if (key == "mean") column = kMean;
    if (key == "var") column = kVar;
    if (key == "mean_u") column = kMeanU;
    if (key == "var_u") column = kVarU;
    if (column < 0) throw std::runtime_error("fused normalizer: unknown running statistic " + key);
    update_running(buffer, stats.select(1, column), group_size, momentum);
  }
}

// The kernels' scratch bytes, on x's device.
at::Tensor workspace_like(const at::Tensor& x, size_t bytes) {
  return at::empty({static_cast<int64_t>(bytes)}, x.options().dtype(at::kByte));
}

void check_launch() {
  if (const char* error = last_error()) throw std::runtime_error(std::string("fused normalizer kernel: ") + error);
}

// The forward kernels: y, and the saved statistics; updates the running statistics (batch area,
// training) and saves what the backward pass needs.
struct ForwardResult {
  at::Tensor x, w, b, y, stats;
};
ForwardResult run_forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& weight,
                          const at::Tensor& bias, const Params& p, const Layout& layout) {
  ++fused_forward_calls;
  ForwardResult r;
  r.x = x_in.contiguous();
  const at::Tensor& x = r.x;
  const auto accumulate = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  r.w = p.affine ? weight.to(accumulate).contiguous() : at::Tensor();
  r.b = p.affine ? bias.to(accumulate).contiguous() : at::Tensor();
  const int64_t groups = layout.channels ? layout.C : layout.rows;
  r.y = at::empty_like(x);
  r.stats = at::empty({groups, kStatsPerGroup}, x.options().dtype(accumulate));
  void* stream = at::cuda::getCurrentCUDAStream().stream();
  const void* wp = p.affine ? r.w.data_ptr() : nullptr;
  const void* bp = p.affine ? r.b.data_ptr() : nullptr;
  if (layout.channels) {
    const at::Tensor workspace = workspace_like(x, channel_workspace(dtype_of(x), layout.N, layout.C, layout.HW));
    channel_forward(dtype_of(x), p, x.data_ptr(), wp, bp, r.y.data_ptr(), r.stats.data_ptr(), workspace.data_ptr(), layout.N,
                    layout.C, layout.HW, stream);
  } else {
    token_forward(dtype_of(x), p, x.data_ptr(), wp, bp, r.y.data_ptr(), r.stats.data_ptr(), layout.rows, layout.D, stream);
  }
  check_launch();
  if (layout.running != nullptr && !layout.running->empty()) {
    update_running_from(*layout.running, r.stats, p, layout.momentum, layout.N * layout.HW);
  }
  ctx->save_for_backward({x, r.w, r.stats});
  ctx->saved_data["op"] = static_cast<int64_t>(p.op);
  ctx->saved_data["psi"] = static_cast<int64_t>(p.psi);
  ctx->saved_data["lambda"] = p.lambda;
  ctx->saved_data["eps"] = p.eps;
  ctx->saved_data["affine"] = p.affine;
  ctx->saved_data["channels"] = layout.channels;
  ctx->saved_data["shape"] = std::vector<int64_t>{layout.rows, layout.D, layout.N, layout.C, layout.HW};
  return r;
}

class FusedNorm : public torch::autograd::Function<FusedNorm> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& weight,
                            const at::Tensor& bias, Params p, Layout layout) {
    const c10::cuda::CUDAGuard device(x_in.device());  // launch on x's GPU, whichever is current
    return run_forward(ctx, x_in, weight, bias, p, layout).y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    // The kernels' backward is not itself differentiable: refuse create_graph rather than return
    // gradients without a graph (the ATen path supports double backward).
    if (c10::GradMode::is_enabled()) {
      throw std::runtime_error(
          "fused normalizer: double backward (create_graph=True) is not supported; unset IBN_FUSED_NORM for it");
    }
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const c10::cuda::CUDAGuard device(x.device());
    const at::Tensor& w = saved[1];
    const at::Tensor& stats = saved[2];
    Params p;
    p.op = static_cast<Op>(ctx->saved_data["op"].toInt());
    p.psi = static_cast<Psi>(ctx->saved_data["psi"].toInt());
    p.lambda = ctx->saved_data["lambda"].toDouble();
    p.eps = ctx->saved_data["eps"].toDouble();
    p.affine = ctx->saved_data["affine"].toBool();
    const bool channels = ctx->saved_data["channels"].toBool();
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const at::Tensor dy = grads[0].contiguous();
    at::Tensor dx = at::empty_like(x);
    const auto accumulate = stats.scalar_type();
    const int64_t features = channels ? shape[3] : shape[1];
    at::Tensor dweight = p.affine ? at::empty({features}, x.options().dtype(accumulate)) : at::Tensor();
    at::Tensor dbias = p.affine ? at::empty({features}, x.options().dtype(accumulate)) : at::Tensor();
    void* stream = at::cuda::getCurrentCUDAStream().stream();
    void* dwp = p.affine ? dweight.data_ptr() : nullptr;
    void* dbp = p.affine ? dbias.data_ptr() : nullptr;
    const void* wp = p.affine ? w.data_ptr() : nullptr;
    if (channels) {
      const at::Tensor workspace = workspace_like(x, channel_workspace(dtype_of(x), shape[2], shape[3], shape[4]));
      channel_backward(dtype_of(x), p, x.data_ptr(), dy.data_ptr(), wp, stats.data_ptr(), dx.data_ptr(), dwp, dbp,
                       workspace.data_ptr(), shape[2], shape[3], shape[4], stream);
    } else {
      const at::Tensor workspace = workspace_like(x, token_backward_workspace(dtype_of(x), shape[0], shape[1]));
      token_backward(dtype_of(x), p, x.data_ptr(), dy.data_ptr(), wp, stats.data_ptr(), dx.data_ptr(), dwp, dbp,
                     workspace.data_ptr(), shape[0], shape[1], stream);
    }
    check_launch();
    return {dx, dweight, dbias, at::Tensor(), at::Tensor()};
  }
};

// The same forward pass with the FP8 output stage: outputs the dequantized tensor (the autograd
// output, whose gradient goes to the same backward pass: straight through), the bytes and the
// scale. `format` is an fp8::Format; rows are the features at one position.
class FusedNormFp8 : public torch::autograd::Function<FusedNormFp8> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in,
                                                const at::Tensor& weight, const at::Tensor& bias, Params p, Layout layout,
                                                int64_t format, bool per_row) {
    const c10::cuda::CUDAGuard device(x_in.device());
    const ForwardResult r = run_forward(ctx, x_in, weight, bias, p, layout);
    Fp8Layout l;
    if (layout.channels) {
      l.outer = layout.N, l.features = layout.C, l.inner = layout.HW, l.stats_per_feature = true;
    } else {
      l.outer = layout.rows, l.features = layout.D, l.inner = 1;
    }
    at::Tensor bytes = at::empty(r.x.sizes(), r.x.options().dtype(at::kByte));
    at::Tensor scale = at::empty({per_row ? l.rows() : 1}, r.stats.options());
    at::Tensor dequantized = at::empty_like(r.x);
    const at::Tensor workspace = workspace_like(r.x, fp8_workspace(dtype_of(r.x), l));
    fp8_output(dtype_of(r.x), p, static_cast<fp8::Format>(format), per_row, r.x.data_ptr(), p.affine ? r.w.data_ptr() : nullptr,
               p.affine ? r.b.data_ptr() : nullptr, r.stats.data_ptr(), bytes.data_ptr(), scale.data_ptr(),
               dequantized.data_ptr(), workspace.data_ptr(), l, at::cuda::getCurrentCUDAStream().stream());
    check_launch();
    ctx->mark_non_differentiable({bytes, scale});
    return {dequantized, bytes, scale};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::autograd::variable_list grad_x = FusedNorm::backward(ctx, {grads[0]});
    grad_x.resize(7);  // none for layout, format, per_row
    return grad_x;
  }
};

}  // namespace

namespace {

// The kernels' layout of x, or nothing when the fused path does not apply.
std::optional<Layout> layout_for(const NormSpec& spec, const at::Tensor& x, std::vector<RunningBuffer>* running,
                                 bool training, double momentum) {
  if (!enabled() || !x.is_cuda() || x.dim() < 2) return std::nullopt;
  const auto type = x.scalar_type();
  if (type != at::kFloat && type != at::kDouble && type != at::kHalf && type != at::kBFloat16) return std::nullopt;
  Layout layout;
  if (spec.area == "token") {
    if (x.dim() > 3) return std::nullopt;  // [N, C, H, W] normalizes over C per pixel: ATen path
    layout.D = x.size(-1);
    layout.rows = x.numel() / layout.D;
  } else {
    // Eval uses running estimates: the ATen path (params_of already leaves rms to it).
    if (!training) return std::nullopt;
    layout.channels = true;
    if (x.dim() == 3) {
      layout.N = x.size(0) * x.size(1), layout.C = x.size(2), layout.HW = 1;
    } else {
      layout.N = x.size(0), layout.C = x.size(1), layout.HW = x.numel() / (x.size(0) * x.size(1));
    }
  }
  if (x.numel() == 0) return std::nullopt;
  if (layout.channels) {
    layout.running = running;
    layout.momentum = momentum;
  }
  return layout;
}

}  // namespace

std::optional<at::Tensor> try_forward(const NormSpec& spec, const at::Tensor& x, const at::Tensor& weight,
                                      const at::Tensor& bias, std::vector<RunningBuffer>* running, bool training,
                                      double momentum) {
  const std::optional<Params> params = params_of(spec);
  if (!params) return std::nullopt;
  const std::optional<Layout> layout = layout_for(spec, x, running, training, momentum);
  if (!layout) return std::nullopt;
  return FusedNorm::apply(x, weight, bias, *params, *layout);
}

std::optional<Fp8Tensor> try_forward_fp8(const NormSpec& spec, const at::Tensor& x, const at::Tensor& weight,
                                         const at::Tensor& bias, std::vector<RunningBuffer>* running, bool training,
                                         double momentum, const Fp8Output& output) {
  const std::optional<Params> params = params_of(spec);
  if (!params) return std::nullopt;
  const std::optional<Layout> layout = layout_for(spec, x, running, training, momentum);
  if (!layout) return std::nullopt;
  const bool per_row = output.scaling == Fp8Scaling::row;
  const torch::autograd::variable_list out =
      FusedNormFp8::apply(x, weight, bias, *params, *layout, static_cast<int64_t>(output.format), per_row);
  Fp8Tensor result{out[1], out[2], out[0]};
  // The kernels' scales are [rows] (or [1]); fp8.h's are y's shape with the features dim 1 (0-dim).
  if (!per_row) {
    result.scale = result.scale.reshape({});
  } else {
    std::vector<int64_t> shape = x.sizes().vec();
    shape[feature_dim(static_cast<size_t>(x.dim()))] = 1;
    result.scale = result.scale.reshape(shape);
  }
  return result;
}

#endif

}  // namespace ibn::norm::fused
