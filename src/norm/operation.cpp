#include "ibn/norm/operation.h"

#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include "ibn/error.h"

namespace ibn::norm {

at::Tensor StatsContext::stat(const std::string& key,
                              const std::function<at::Tensor()>& batch_value) {
  RunningBuffer* buffer = nullptr;
  if (running_ != nullptr) {
    for (auto& b : *running_) {
      if (b.stat.key == key) buffer = &b;
    }
  }
  if (buffer == nullptr) return batch_value();
  if (!training_) return buffer->value.view(plan_.stat_shape);

  at::Tensor batch = batch_value();
  update_running(*buffer, batch, group_size(), momentum_);
  return batch;
}

at::Tensor StatsContext::mean(const at::Tensor& values) {
  if (sync_ == nullptr) return values.mean(dims(), true);
  const at::Tensor sums = values.sum(dims(), true);
  // The first synchronized statistic carries the count in its own message (one collective per
  // statistic, not two) where the values' dtype holds any total count exactly: float64, or
  // float32 (integers to 2^24) below a generous bound on every process's count together.
  constexpr double kExactFloat32 = 16777216.0;
  const bool count_fits = values.scalar_type() == at::kDouble ||
                          (values.scalar_type() == at::kFloat && static_cast<double>(plan_.group_size) * 1024.0 < kExactFloat32);
  if (group_size_ < 0 && count_fits) {
    const at::Tensor count = at::full({1}, static_cast<double>(plan_.group_size), values.options().requires_grad(false));
    const at::Tensor total = (*sync_)(at::cat({sums.reshape({-1}), count}));
    group_size_ = static_cast<int64_t>(total[-1].item<double>());
    return total.slice(0, 0, -1).view(sums.sizes()).div(static_cast<double>(group_size_));
  }
  return (*sync_)(sums).div(static_cast<double>(group_size()));
}

int64_t StatsContext::group_size() {
  if (group_size_ >= 0) return group_size_;
  group_size_ = plan_.group_size;
  if (sync_ != nullptr) {
    at::NoGradGuard no_grad;
    group_size_ = (*sync_)(at::full({1}, static_cast<double>(plan_.group_size), at::kDouble)).item<int64_t>();
  }
  return group_size_;
}

void Operation::use_parameter(const std::string& name, const at::Tensor&) {
  throw UsageError(fmt::format("this normalization operation has no parameter '{}'", name));
}

void update_running(RunningBuffer& buffer, const at::Tensor& batch, int64_t group_size, double momentum) {
  at::NoGradGuard no_grad;
  at::Tensor update = batch.detach().reshape({-1});
  if (buffer.stat.is_variance) {
    const double n = static_cast<double>(group_size);
    update = update.mul(n / (n - 1.0));
  }
  buffer.value.mul_(1.0 - momentum).add_(update.to(buffer.value.scalar_type()), momentum);
}

at::Tensor standardize(const at::Tensor& x, StatsContext& stats, double eps,
                       const std::string& suffix) {
  const at::Tensor mean = stats.stat("mean" + suffix, [&] { return stats.mean(x); });
  const at::Tensor centred = x.sub(mean);
  const at::Tensor var = stats.stat("var" + suffix, [&] { return stats.mean(centred.square()); });
  return centred.mul(var.add(eps).rsqrt());
}

}  // namespace ibn::norm
