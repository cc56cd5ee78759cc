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
  update_running(*buffer, batch, plan_.group_size, momentum_);
  return batch;
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
  const at::Tensor mean = stats.stat("mean" + suffix, [&] { return x.mean(stats.dims(), true); });
  const at::Tensor centred = x.sub(mean);
  const at::Tensor var =
      stats.stat("var" + suffix, [&] { return centred.square().mean(stats.dims(), true); });
  return centred.mul(var.add(eps).rsqrt());
}

}  // namespace ibn::norm
