#pragma once
// NOP, normalization operation (SPEC §1): what is done with each group's values.
// Operations are written once for every area: they see a grouped view of the input and a
// StatsContext that hands them per-group statistics (batch values, or running estimates).
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ibn/norm/area.h"

namespace ibn::norm {

// A running estimate kept by areas that have them (batch): buffer "running_<key>".
struct RunningStat {
  std::string key;   // "mean", "var", ...
  double init;       // value after reset
  bool is_variance;  // updated with the unbiased (n / (n-1)) batch value, as BatchNorm does
};

struct RunningBuffer {
  RunningStat stat;
  at::Tensor value;  // [C]
};

// BatchNorm's rule: value ← (1 − momentum)·value + momentum·batch, variances made unbiased
// (× n/(n − 1), n the group size) first. `batch` holds one value per channel, any shape.
void update_running(RunningBuffer& buffer, const at::Tensor& batch, int64_t group_size, double momentum);

// Synchronized batch statistics (`ibn train --sync-bn`): a differentiable sum over the processes
// of a data-parallel run (dist::ProcessGroup::differentiable_sum).
using CrossProcessSum = std::function<at::Tensor(const at::Tensor&)>;

// Statistics of one forward pass. Without running buffers every statistic is the batch value.
// With them, training returns the batch value and moves the estimate by `momentum`; eval
// returns the estimate. With `sync`, a group spans every process's batch: group means are
// sums over all of them divided by the total count.
class StatsContext {
 public:
  StatsContext(const AreaPlan& plan, std::vector<RunningBuffer>* running, bool training,
               double momentum, const CrossProcessSum* sync = nullptr)
      : plan_(plan), running_(running), training_(training), momentum_(momentum), sync_(sync) {}

  c10::IntArrayRef dims() const { return plan_.reduce_dims; }
  bool training() const { return training_; }  // the layer's mode (NormalNorm's noise is training-only)
  at::Tensor stat(const std::string& key, const std::function<at::Tensor()>& batch_value);
  // The mean of `values` over each group (keepdim), across processes when synchronized.
  at::Tensor mean(const at::Tensor& values);
  // Elements per group: across every process when synchronized.
  int64_t group_size();

 private:
  const AreaPlan& plan_;
  std::vector<RunningBuffer>* running_;
  bool training_;
  double momentum_;
  const CrossProcessSum* sync_;
  int64_t group_size_ = -1;  // cached: a synchronized count costs a collective
};

// x̂ = (x − μ)/√(σ² + ε) with μ, σ² from stats under `mean<suffix>`, `var<suffix>`.
at::Tensor standardize(const at::Tensor& x, StatsContext& stats, double eps,
                       const std::string& suffix = "");

class Operation {
 public:
  virtual ~Operation() = default;
  // Running estimates the operation needs when its area keeps them.
  virtual std::vector<RunningStat> running_stats() const = 0;
  // Learned tensors the operation owns (DyT's α), registered by the layer under these names so
  // that optimizers, `to()` and state dicts see them; the operation keeps using the same tensors.
  virtual std::vector<std::pair<std::string, at::Tensor>> parameters() const { return {}; }
  // Computes with `value` as its parameter `name` from now on, in place of its own tensor: a
  // layer whose tensors live elsewhere (the Python package's) binds them here
  // (NormalizerImpl::bind). An operation with parameters overrides it for each of them.
  virtual void use_parameter(const std::string& name, const at::Tensor& value);
  // x: the grouped view of the input; returns x̂ of the same shape (before γ, β).
  virtual at::Tensor normalize(const at::Tensor& x, StatsContext& stats) const = 0;
  // ψ applied to a unit-scale centred z. Identity for the variance-centric operations (κ = 1).
  virtual at::Tensor compress(const at::Tensor& z) const { return z; }
  // The values whose per-group variance is κ, from the grouped input x and the batch's own
  // statistics: ψ of the unit-scale z by default. An operation whose compression is not a
  // fixed ψ of z overrides it (DyT: tanh(α·x), it never standardizes; NormalNorm: the
  // Yeo–Johnson transform at each group's λ̂).
  virtual at::Tensor compressed(const at::Tensor& x, StatsContext& batch_stats, double eps) const {
    return compress(standardize(x, batch_stats, eps));
  }
  // The exact form, for reports: "x̂ = (x − μ)/√(σ² + ε)".
  virtual std::string formula() const = 0;
};



}  // namespace ibn::norm
