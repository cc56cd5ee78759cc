#include "ibn/norm/normalizer.h"

#include "norm/fused/fused_function.h"

#include <cmath>
#include <map>
#include <mutex>
#include <utility>

#include <ATen/ops/linspace.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/autograd.h>

#include "ibn/error.h"
#include "ibn/norm/area.h"
#include "ibn/norm/compression.h"
#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

// ŷ's value exactly (±inf saturated, −0 kept), y's gradient: the straight-through estimator.
class StraightThrough : public torch::autograd::Function<StraightThrough> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& y, const at::Tensor& dequantized) {
    (void)y;
    return dequantized.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list grads) {
    return {grads[0], at::Tensor()};
  }
};

}  // namespace

NormalizerImpl::NormalizerImpl(const std::string& spec, int64_t num_features)
    : NormalizerImpl(parse_norm_spec(spec), num_features) {}

NormalizerImpl::NormalizerImpl(NormSpec spec, int64_t num_features)
    : spec_(std::move(spec)), num_features_(num_features) {
  if (num_features < 1) {
    throw UsageError(fmt::format("normalizer '{}' needs at least one feature, got {}", spec_.name,
                                 num_features));
  }
  area_ = find_area(spec_.area).make(spec_);
  area_->check_features(num_features);
  operation_ = find_operation(spec_.operation).make(spec_);
  for (const auto& [name, tensor] : operation_->parameters()) register_parameter(name, tensor);

  if (spec_.affine) {
    weight = register_parameter("weight", at::ones({num_features}));
    bias = register_parameter("bias", at::zeros({num_features}));
  }
  if (area_->keeps_running_stats()) {
    for (const RunningStat& stat : operation_->running_stats()) {
      at::Tensor value = at::zeros({num_features});
      running_.push_back({stat, register_buffer("running_" + stat.key, value)});
    }
    num_batches_tracked = register_buffer("num_batches_tracked", at::zeros({}, at::kLong));
    reset_running_stats();
  }
}

std::vector<std::string> NormalizerImpl::state_names() const {
  std::vector<std::string> names = named_parameters(/*recurse=*/false).keys();
  for (const std::string& name : named_buffers(/*recurse=*/false).keys()) names.push_back(name);
  return names;
}

void NormalizerImpl::bind(const std::vector<at::Tensor>& state) {
  const std::vector<std::string> names = state_names();
  if (state.size() != names.size()) {
    throw UsageError(fmt::format("normalizer '{}' has {} state tensors ({}), got {}", spec_.str(), names.size(),
                                 fmt::join(names, ", "), state.size()));
  }
  std::vector<at::Tensor> own = parameters();
  for (const at::Tensor& buffer : buffers()) own.push_back(buffer);
  for (size_t i = 0; i < names.size(); ++i) {
    if (!state[i].defined() || state[i].sizes() != own[i].sizes()) {
      throw UsageError(fmt::format("normalizer '{}': state tensor '{}' has shape {}, expected [{}]", spec_.str(), names[i],
                                   state[i].defined() ? fmt::format("[{}]", fmt::join(state[i].sizes(), ", ")) : "(none)",
                                   fmt::join(own[i].sizes(), ", ")));
    }
  }
  // forward() and contraction() read these members (and the operation's own parameters), never
  // the registered maps, which keep the layer's original tensors.
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    const at::Tensor& value = state[i];
    if (name == "weight") weight = value;
    if (name == "bias") bias = value;
    if (name == "num_batches_tracked") num_batches_tracked = value;
    for (RunningBuffer& buffer : running_) {
      if (name == "running_" + buffer.stat.key) buffer.value = value;
    }
    for (const auto& [operation_name, tensor] : operation_->parameters()) {
      if (name == operation_name) operation_->use_parameter(name, value);
    }
  }
}

void NormalizerImpl::synchronize_batch_statistics(CrossProcessSum sum) {
  if (area_->keeps_running_stats()) sync_ = std::move(sum);
}

void NormalizerImpl::reset_parameters() {
  at::NoGradGuard no_grad;
  if (spec_.affine) {
    weight.fill_(1.0);
    bias.zero_();
  }
  reset_running_stats();
}

void NormalizerImpl::reset_running_stats() {
  at::NoGradGuard no_grad;
  for (RunningBuffer& buffer : running_) buffer.value.fill_(buffer.stat.init);
  if (num_batches_tracked.defined()) num_batches_tracked.zero_();
}

AreaPlan NormalizerImpl::plan(c10::IntArrayRef shape) const { return area_->plan(shape, num_features_, is_training()); }

Fp8Output NormalizerImpl::fp8_output() const {
  Fp8Output output;
  if (spec_.has_fp8_output()) {
    output.format = parse_format(spec_.fp8);
    output.scaling = parse_scaling(spec_.scaling);
  }
  return output;
}

at::Tensor NormalizerImpl::forward(const at::Tensor& x) {
  if (spec_.has_fp8_output()) return forward_fp8(x, fp8_output()).dequantized;
  return normalize(x);
}

Fp8Tensor NormalizerImpl::forward_fp8(const at::Tensor& x, const Fp8Output& output) {
  if (x.is_cuda() && !(sync_ && is_training())) {
    std::vector<RunningBuffer>* running = running_.empty() ? nullptr : &running_;
    if (auto fused = fused::try_forward_fp8(spec_, x, weight, bias, running, is_training(), spec_.momentum, output)) {
      if (running != nullptr && is_training()) {
        at::NoGradGuard no_grad;
        num_batches_tracked.add_(1);
      }
      return *fused;
    }
  }
  // The one rounding is to FP8: a bf16 or half y would be a first.
  const bool narrow = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  const at::Tensor y = normalize(narrow ? x.to(at::kFloat) : x);
  Fp8Tensor quantized = quantize_fp8(y, output, feature_dim(static_cast<size_t>(x.dim())));
  if (y.requires_grad()) quantized.dequantized = StraightThrough::apply(y, quantized.dequantized);
  quantized.dequantized = quantized.dequantized.to(x.scalar_type());
  return quantized;
}

at::Tensor NormalizerImpl::normalize(const at::Tensor& x) {
  const AreaPlan plan = this->plan(x.sizes());
  // Running buffers are kept in fp32 (or the module's dtype); statistics follow the input.
  std::vector<RunningBuffer>* running = running_.empty() ? nullptr : &running_;
  if (running != nullptr && is_training()) {
    at::NoGradGuard no_grad;
    num_batches_tracked.add_(1);
  }
  const bool synchronized = sync_ && is_training();
  if (x.is_cuda() && !synchronized) {
    if (auto fused = fused::try_forward(spec_, x, weight, bias, running, is_training(), spec_.momentum)) return *fused;
  }
  // On the CPU, plain LayerNorm over the last dimension is LibTorch's fused op: the same
  // formula in one autograd node instead of the composite's nine, which on small models is most
  // of a step. Only with γ, β in x's dtype: mixed dtypes promote in the composite (fp32 out of
  // bf16 x) and not in layer_norm.
  if (!x.is_cuda() && spec_.area == "token" && spec_.operation == "standardize" && plan.reduce_dims.size() == 1 &&
      plan.reduce_dims[0] == x.dim() - 1 && (!spec_.affine || weight.scalar_type() == x.scalar_type())) {
    return at::layer_norm(x, {x.size(-1)}, spec_.affine ? weight : at::Tensor(), spec_.affine ? bias : at::Tensor(), spec_.eps);
  }
  StatsContext stats(plan, running, is_training(), spec_.momentum, synchronized ? &sync_ : nullptr);
  at::Tensor y = operation_->normalize(x.reshape(plan.grouped_shape), stats).reshape(x.sizes());
  if (spec_.affine) {
    y = y.mul(weight.view(plan.affine_shape)).add(bias.view(plan.affine_shape));
  }
  return y;
}

at::Tensor NormalizerImpl::contraction(const at::Tensor& x) const {
  at::NoGradGuard no_grad;
  const AreaPlan plan = area_->plan(x.sizes(), num_features_, /*training=*/false);
  StatsContext batch_stats(plan, /*running=*/nullptr, /*training=*/false, 0.0);
  const at::Tensor u = operation_->compressed(x.reshape(plan.grouped_shape), batch_stats, spec_.eps);
  const at::Tensor mean_u = u.mean(plan.reduce_dims, true);
  return u.sub(mean_u).square().mean(plan.reduce_dims, true).mean();
}

void NormalizerImpl::pretty_print(std::ostream& stream) const {
  stream << "ibn::norm::Normalizer(" << spec_.str() << ", features=" << num_features_ << ")";
}

double gaussian_contraction(const NormSpec& spec) {
  // NormalNorm: λ̂ of Gaussian data is 1 (up to sampling), where Yeo–Johnson is the identity.
  if (!spec.is_dyt() && (!spec.is_ibnorm() || spec.lambda == 0.0)) return 1.0;
  // Trapezoid rule on [−12, 12] in double: the Gaussian tail beyond is below 1e-32 and ψ grows
  // at most linearly, so the truncation error is far under the quadrature's own (≈1e-12).
  constexpr int64_t kPoints = 200001;
  constexpr double kHalfWidth = 12.0;
  const at::Tensor z = at::linspace(-kHalfWidth, kHalfWidth, kPoints, at::kDouble);
  const double step = 2.0 * kHalfWidth / (kPoints - 1);
  const at::Tensor density = z.square().mul(-0.5).exp().div(std::sqrt(2.0 * M_PI));
  // DyT: tanh(α·z) at α's initial value.
  const at::Tensor psi = spec.is_dyt() ? z.mul(spec.alpha).tanh() : find_compression(spec.compression).psi(z, spec.lambda);
  const double mean = psi.mul(density).sum().item<double>() * step;
  const double second = psi.square().mul(density).sum().item<double>() * step;
  return second - mean * mean;
}

double lambda_for_contraction(const NormSpec& spec, double kappa) {
  static std::mutex mutex;
  static std::map<std::pair<std::string, double>, double> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(spec.compression, kappa);
  if (const auto hit = cache.find(key); hit != cache.end()) return hit->second;
  NormSpec at = spec;
  const auto kappa_at = [&](double lambda) {
    at.lambda = lambda;
    return gaussian_contraction(at);
  };
  double low = 1e-9, high = kMaxLambda;  // κ(1e-9) = 1 to within 1e-8
  if (kappa_at(high) > kappa) {
    throw UsageError(fmt::format("no lambda <= {} brings {}'s Gaussian contraction down to kappa={} (it reaches {})",
                                 kMaxLambda, spec.name, kappa, kappa_at(high)));
  }
  while (high / low > 1 + 1e-12) {
    const double middle = std::sqrt(low * high);
    (kappa_at(middle) > kappa ? low : high) = middle;
  }
  const double lambda = std::sqrt(low * high);
  cache[key] = lambda;
  return lambda;
}

}  // namespace ibn::norm
