// ibn contraction: the variance-contraction table of SPEC §3. For each normalizer (and each λ
// for IBNorm) on standard Gaussian input: κ measured through the layer, κ expected for Gaussian
// z by quadrature, and the per-group mean and variance of the output.
#include <iostream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/norm/area.h"
#include "ibn/norm/normalizer.h"
#include "ibn/norm/registry.h"

namespace ibn::cli {
namespace {

namespace nm = ibn::norm;

struct Row {
  nm::NormSpec spec;
  double kappa = 0, kappa_gaussian = 0, group_mean = 0, group_var = 0;
};

// The specs of the table: each given spec once, an IBNorm spec once per λ.
std::vector<nm::NormSpec> expand(const std::vector<std::string>& specs, const std::vector<double>& lambdas) {
  std::vector<nm::NormSpec> out;
  for (const std::string& text : specs) {
    nm::NormSpec spec = nm::parse_norm_spec(text);
    if (!spec.is_ibnorm()) {
      out.push_back(spec);
      continue;
    }
    for (double lambda : lambdas) {
      spec.lambda = lambda;
      spec.kappa = 0;  // the grid's λ replaces the one kappa=K chose
      out.push_back(spec);
    }
  }
  return out;
}

Row measure(const nm::NormSpec& spec, const torch::Tensor& x) {
  nm::Normalizer norm(spec, x.size(nm::feature_dim(x.dim())));
  norm->to(x.device());
  torch::NoGradGuard no_grad;
  const torch::Tensor y = norm(x);
  // Per-group output moments under the layer's own area (affine is the identity at init).
  const nm::AreaPlan plan = norm->plan(x.sizes());
  const torch::Tensor grouped = y.reshape(plan.grouped_shape);
  Row row{spec};
  row.kappa = norm->contraction(x).item<double>();
  row.kappa_gaussian = nm::gaussian_contraction(spec);
  row.group_mean = grouped.mean(plan.reduce_dims).abs().max().item<double>();
  row.group_var = grouped.var(plan.reduce_dims, /*unbiased=*/false).mean().item<double>();
  return row;
}

}  // namespace

int run_contraction(const std::vector<std::string>& args) {
  std::string all_presets;
  for (const auto& preset : nm::presets()) {
    if (preset.area != "group") all_presets += (all_presets.empty() ? "" : ",") + preset.name;
  }
  all_presets += ",groupnorm:groups=8";
  CommandOptions cmd("contraction", "ibn contraction [--norms S,S,...] [--lambdas L,L,...] [--shape N,D] [--csv FILE]",
                     "Variance contraction κ = E_groups[var ψ_λ(z)] (SPEC §3) of each normalizer on\n"
                     "standard Gaussian input, next to its expected value for Gaussian z (quadrature).\n"
                     "κ = 1 for variance-centric norms and falls with λ under IBNorm compression.");
  cmd.options.add_options()
      ("norms", po::value<std::string>()->default_value(all_presets)->value_name("S,S,..."),
       "normalizer specs; IBNorm specs are run at every --lambdas value")
      ("lambdas", po::value<std::string>()->default_value("0,0.25,0.5,1,2,4")->value_name("L,L,..."),
       "compression strengths λ for the IBNorm specs")
      ("shape", po::value<std::string>()->default_value("4096,256")->value_name("N,D"),
       "input shape: N,D or N,T,D or N,C,H,W")
      ("seed", po::value<int64_t>()->default_value(0), "random seed of the input")
      ("device", po::value<std::string>()->default_value("cpu"), "cpu, cuda, cuda:N or auto")
      ("csv", po::value<std::string>()->value_name("FILE"), "also write the table as CSV");
  const auto vm = cmd.parse(args);
  if (!vm) return 0;

  const std::vector<double> lambdas = parse_numbers("lambdas", (*vm)["lambdas"].as<std::string>());
  for (double lambda : lambdas) {
    if (lambda < 0 || lambda > nm::kMaxLambda) {
      throw UsageError(fmt::format("--lambdas: lambda={} must lie in [0, {}]", lambda, nm::kMaxLambda));
    }
  }
  const std::vector<nm::NormSpec> specs = expand(parse_words((*vm)["norms"].as<std::string>()), lambdas);
  const std::vector<int64_t> shape = parse_shape("shape", (*vm)["shape"].as<std::string>());
  if (shape.size() < 2) throw UsageError("--shape needs at least two dims: N,D or N,T,D or N,C,H,W");
  const c10::Device device = resolve_device((*vm)["device"].as<std::string>());
  const uint64_t seed = checked_seed("seed", (*vm)["seed"].as<int64_t>());
  torch::manual_seed(seed);
  const torch::Tensor x = torch::randn(shape, torch::TensorOptions().device(device));

  std::vector<Row> rows;
  for (const nm::NormSpec& spec : specs) rows.push_back(measure(spec, x));

  std::cout << fmt::format("Variance contraction on standard Gaussian input {}, seed {}, {}\n",
                           nm::shape_str(shape), seed, device.str());
  std::cout << fmt::format("{:<10} {:<6} {:>6} {:>11} {:>11} {:>13} {:>10}\n", "normalizer", "area",
                           "lambda", "kappa", "kappa_gauss", "max|grp mean|", "grp var");
  std::string csv = "spec,normalizer,area,lambda,kappa,kappa_gaussian,max_abs_group_mean,mean_group_var\n";
  for (const Row& r : rows) {
    const std::string lambda = r.spec.is_ibnorm() ? fmt::format("{}", r.spec.lambda) : "-";
    std::cout << fmt::format("{:<10} {:<6} {:>6} {:>11.6f} {:>11.6f} {:>13.2e} {:>10.6f}\n", r.spec.name,
                             r.spec.area, lambda, r.kappa, r.kappa_gaussian, r.group_mean, r.group_var);
    csv += fmt::format("{},{},{},{},{:.9g},{:.9g},{:.9g},{:.9g}\n", r.spec.str(), r.spec.name, r.spec.area,
                       r.spec.is_ibnorm() ? fmt::format("{}", r.spec.lambda) : "", r.kappa,
                       r.kappa_gaussian, r.group_mean, r.group_var);
  }
  std::cout << "kappa: measured through the layer; kappa_gauss: E[psi(z)^2] - E[psi(z)]^2 for z ~ N(0, 1).\n";
  if (vm->count("csv")) {
    const std::string path = (*vm)["csv"].as<std::string>();
    io::write_file_atomically(path, csv);
    std::cout << "wrote " << path << "\n";
  }
  return 0;
}

}  // namespace ibn::cli
