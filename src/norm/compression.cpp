#include "ibn/norm/compression.h"

#include <torch/csrc/autograd/custom_function.h>

#include "ibn/norm/registry.h"

namespace ibn::norm {
namespace {

// ψ_λ as an autograd node whose backward is the analytic derivative. Saves only z.
struct CompressFunction : torch::autograd::Function<CompressFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& z,
                            const Compression* compression, double lambda) {
    ctx->save_for_backward({z});
    ctx->saved_data["lambda"] = lambda;
    ctx->saved_data["compression"] = compression->name;
    return compression->psi(z, lambda);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const at::Tensor z = ctx->get_saved_variables()[0];
    const double lambda = ctx->saved_data["lambda"].toDouble();
    const Compression& compression = find_compression(ctx->saved_data["compression"].toStringRef());
    return {grad_out[0].mul(compression.dpsi(z, lambda)), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor compress(const Compression& compression, const at::Tensor& z, double lambda) {
  return CompressFunction::apply(z, &compression, lambda);
}

}  // namespace ibn::norm
