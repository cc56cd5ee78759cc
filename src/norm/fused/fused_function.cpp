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

class FusedNorm : public torch::autograd::Function<FusedNorm> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& weight,
                            const at::Tensor& bias, Params p, Layout layout) {
    const c10::cuda::CUDAGuard device(x_in.device());  // launch on x's GPU, whichever is current
    ++fused_forward_calls;
    const at::Tensor x = x_in.contiguous();
    const auto accumulate = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const at::Tensor w = p.affine ? weight.to(accumulate).contiguous() : at::Tensor();
    const at::Tensor b = p.affine ? bias.to(accumulate).contiguous() : at::Tensor();
    const int64_t groups = layout.channels ? layout.C : layout.rows;
    at::Tensor y = at::empty_like(x);
    at::Tensor stats = at::empty({groups, kStatsPerGroup}, x.options().dtype(accumulate));
    void* stream = at::cuda::getCurrentCUDAStream().stream();
    const void* wp = p.affine ? w.data_ptr() : nullptr;
    const void* bp = p.affine ? b.data_ptr() : nullptr;
    if (layout.channels) {
      const at::Tensor workspace = workspace_like(x, channel_workspace(dtype_of(x), layout.N, layout.C, layout.HW));
      channel_forward(dtype_of(x), p, x.data_ptr(), wp, bp, y.data_ptr(), stats.data_ptr(), workspace.data_ptr(), layout.N,
                      layout.C, layout.HW, stream);
    } else {
      token_forward(dtype_of(x), p, x.data_ptr(), wp, bp, y.data_ptr(), stats.data_ptr(), layout.rows, layout.D, stream);
    }
    check_launch();
    if (layout.running != nullptr && !layout.running->empty()) {
      update_running_from(*layout.running, stats, p, layout.momentum, layout.N * layout.HW);
    }
    ctx->save_for_backward({x, w, stats});
    ctx->saved_data["op"] = static_cast<int64_t>(p.op);
    ctx->saved_data["psi"] = static_cast<int64_t>(p.psi);
    ctx->saved_data["lambda"] = p.lambda;
    ctx->saved_data["eps"] = p.eps;
    ctx->saved_data["affine"] = p.affine;
    ctx->saved_data["channels"] = layout.channels;
    ctx->saved_data["shape"] = std::vector<int64_t>{layout.rows, layout.D, layout.N, layout.C, layout.HW};
    return y;
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

}  // namespace

std::optional<at::Tensor> try_forward(const NormSpec& spec, const at::Tensor& x, const at::Tensor& weight,
                                      const at::Tensor& bias, std::vector<RunningBuffer>* running, bool training,
                                      double momentum) {
  if (!enabled() || !x.is_cuda() || x.dim() < 2) return std::nullopt;
  const std::optional<Params> params = params_of(spec);
  if (!params) return std::nullopt;
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
  return FusedNorm::apply(x, weight, bias, *params, layout);
}

#endif

}  // namespace ibn::norm::fused
