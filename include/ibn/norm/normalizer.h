#pragma once
// The normalization layer: NAP × NOP × NRR (SPEC §1), built from a spec string.
//
//   ibn::norm::Normalizer norm("ibnorm-t:lambda=2", 256);   // 256 channels/features
//   at::Tensor y = norm(x);                                // x: [N, 256], [N, T, 256], [N, 256, H, W]
//
// Parameters and buffers follow LibTorch's naming (weight, bias, running_mean, running_var,
// num_batches_tracked) so that state dicts and optimizers work as with torch::nn layers.
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "ibn/norm/fp8.h"
#include "ibn/norm/operation.h"
#include "ibn/norm/spec.h"

namespace ibn::norm {

class NormalizerImpl : public torch::nn::Module {
 public:
  // Throws ibn::UsageError for a malformed spec or channels the area cannot split.
  NormalizerImpl(const std::string& spec, int64_t num_features);
  NormalizerImpl(NormSpec spec, int64_t num_features);

  // x: [N, D], [N, T, D] or [N, C, H, W, ...] with D = C = num_features. Throws
  // ibn::UsageError for a shape the area cannot handle. With the spec's fp8 key, the dequantized
  // FP8 output (forward_fp8(x, fp8_output()).dequantized).
  at::Tensor forward(const at::Tensor& x);

  // y and its FP8 output in `output`'s format, whatever the spec's fp8 key: y is computed in float
  // (double for double x; bf16 and half x are widened first) and quantized once (fp8.h; rows
  // along the features). `dequantized` is in x's dtype and carries y's gradient unchanged (the
  // straight-through estimator); bytes and scale carry none. One forward pass: running
  // statistics update as forward() updates them.
  Fp8Tensor forward_fp8(const at::Tensor& x, const Fp8Output& output);
  // The spec's FP8 output (format e4m3 and tensor scaling when it has none).
  Fp8Output fp8_output() const;

  // How this layer's area groups an input of this shape (for per-group analysis of its output).
  // Throws ibn::UsageError for a shape the area cannot handle.
  AreaPlan plan(c10::IntArrayRef shape) const;

  // Variance contraction κ = mean over groups of var(ψ_λ(z)), z the unit-scale centred input
  // under this layer's area (SPEC §3), from the batch's own statistics; running estimates are
  // neither used nor updated. A 0-dim tensor: 1 for variance-centric operations (up to ε).
  at::Tensor contraction(const at::Tensor& x) const;

  // The names of this layer's tensors, parameters first (registration order), then buffers: the
  // order bind() takes them in.
  std::vector<std::string> state_names() const;
  // Computes with `state` (one tensor per state_names(), each of its registered tensor's shape)
  // in place of the layer's own tensors from now on: gradients reach them, and training updates
  // the running statistics in them. The Python package's layers own their tensors this way.
  // named_parameters() and named_buffers() still list the layer's original tensors (LibTorch
  // keeps its buffers private): bind a fresh layer, and compute with it. Throws
  // ibn::UsageError for a wrong count or shape.
  void bind(const std::vector<at::Tensor>& state);

  // Batch-area layers: from now on, training computes the group statistics over every
  // process's batch through `sum` (SyncBatchNorm; `ibn train --sync-bn`). Other areas' groups
  // lie within one sample, and this changes nothing for them. NormalNorm's λ̂ and its spread
  // stay per process. Synchronized layers take the ATen path, not the fused CUDA kernels.
  void synchronize_batch_statistics(CrossProcessSum sum);
  bool synchronizes_batch_statistics() const { return static_cast<bool>(sync_); }

  void reset_parameters();
  void reset_running_stats();
  void pretty_print(std::ostream& stream) const override;

  const NormSpec& spec() const { return spec_; }
  int64_t num_features() const { return num_features_; }
  const Operation& operation() const { return *operation_; }

  at::Tensor weight;  // γ [C], undefined when affine=false
  at::Tensor bias;    // β [C], undefined when affine=false
  at::Tensor num_batches_tracked;  // batch area only

 private:
  at::Tensor normalize(const at::Tensor& x);  // y in x's dtype, unquantized

  NormSpec spec_;
  int64_t num_features_;
  std::shared_ptr<const Area> area_;
  std::shared_ptr<Operation> operation_;
  std::vector<RunningBuffer> running_;  // batch area only
  CrossProcessSum sync_;                // batch area only; empty: this process's batch alone
};

TORCH_MODULE(Normalizer);

// Expected κ of a compression for standard Gaussian z, by quadrature (the independent
// reference the measured κ is compared with): E[ψ(z)²] − E[ψ(z)]². 1 for variance-centric specs.
double gaussian_contraction(const NormSpec& spec);

// The λ at which gaussian_contraction(spec) equals `kappa` (0 < κ < 1), by bisection on log λ
// to 1e-12 relative: κ falls monotonically from 1 at λ = 0 (tested). Results are cached per
// compression and κ. Throws ibn::UsageError when no λ ≤ kMaxLambda compresses that far.
double lambda_for_contraction(const NormSpec& spec, double kappa);

}  // namespace ibn::norm
