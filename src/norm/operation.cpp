#include "ibn/norm/operation.h"

#include <cmath>

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

// The count's parts as the values' dtype sums them exactly: float64 holds any count; float32
// holds integers to 2^24, so the count travels as count / 4096 and count % 4096 (exact for up
// to 4096 processes of up to 2^36 / 4096 elements per group each). How a count is sent depends
// only on the dtype, the same on every rank: a rank-dependent choice would send messages of
// different lengths.
namespace {
constexpr double kCountRadix = 4096.0;
}

at::Tensor StatsContext::mean(const at::Tensor& values) {
  if (sync_ == nullptr) return values.mean(dims(), true);
  const at::Tensor sums = values.sum(dims(), true);
  const at::ScalarType dtype = values.scalar_type();
  // The first synchronized statistic carries the count in its own message: one collective per
  // statistic, not two.
  if (group_size_ < 0 && (dtype == at::kDouble || dtype == at::kFloat)) {
    const double n = static_cast<double>(plan_.group_size);
    const at::Tensor count = dtype == at::kDouble
                                 ? at::full({1}, n, values.options().requires_grad(false))
                                 : at::tensor({std::floor(n / kCountRadix), std::fmod(n, kCountRadix)},
                                              values.options().requires_grad(false));
    const int64_t parts = count.numel();
    const at::Tensor total = (*sync_)(at::cat({sums.reshape({-1}), count}));
    const at::Tensor summed_count = total.slice(0, -parts).to(at::kDouble);
    group_size_ = parts == 1 ? std::llround(summed_count[0].item<double>())
                             : std::llround(summed_count[0].item<double>() * kCountRadix + summed_count[1].item<double>());
    return total.slice(0, 0, -parts).view(sums.sizes()).div(static_cast<double>(group_size_));
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
