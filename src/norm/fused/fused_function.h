#pragma once
// The fused CUDA kernels behind NormalizerImpl::forward. Opt-in while they await their
// verification on a GPU: set IBN_FUSED_NORM=1 to use them for CUDA inputs of the token area
// (features last) and of the batch area in training; everything else stays on the ATen path.
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ibn/norm/fp8.h"
#include "ibn/norm/operation.h"
#include "ibn/norm/spec.h"

namespace ibn::norm::fused {

// Built with CUDA kernels (LibTorch with CUDA) and switched on by IBN_FUSED_NORM=1.
bool enabled();

// How many forward passes have taken the fused path in this process (tests check that a fused
// run did, rather than comparing the ATen path with itself).
int64_t forward_calls();

// y of the normalizer through the fused kernels (autograd-aware; batch-area running statistics
// updated as BatchNorm does), or nothing when the fused path does not apply.
std::optional<at::Tensor> try_forward(const NormSpec& spec, const at::Tensor& x, const at::Tensor& weight,
                                      const at::Tensor& bias, std::vector<RunningBuffer>* running, bool training,
                                      double momentum);

// The same with the kernels' FP8 output stage (fp8.h): y recomputed in float (double) from x and
// the saved statistics and quantized once; `dequantized` (in x's dtype) is the autograd output,
// its gradient passed straight to the fused backward pass. Nothing when the fused path does not
// apply. The caller counts num_batches_tracked, as for try_forward.
std::optional<Fp8Tensor> try_forward_fp8(const NormSpec& spec, const at::Tensor& x, const at::Tensor& weight,
                                         const at::Tensor& bias, std::vector<RunningBuffer>* running, bool training,
                                         double momentum, const Fp8Output& output);

}  // namespace ibn::norm::fused
