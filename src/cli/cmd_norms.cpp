// ibn norms: list the normalizer family, or run one spec on random input.
#include <iostream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "ibn/device.h"
#include "ibn/error.h"
#include "ibn/norm/area.h"
#include "ibn/norm/normalizer.h"
#include "ibn/norm/registry.h"

namespace ibn::cli {
namespace {

namespace nm = ibn::norm;

void list_family() {
  const nm::NormSpec defaults;
  std::cout << "Normalizers (spec: NAME[:KEY=VALUE]..., e.g. ibnorm-t:lambda=2:area=batch)\n";
  std::cout << fmt::format("  {:<10} {:<6} {:<12} {:<42} {}\n", "name", "area", "operation",
                           "parameters (defaults)", "what");
  for (const nm::Preset& preset : nm::presets()) {
    const nm::NormSpec spec = nm::parse_norm_spec(preset.name);
    std::string params;
    if (spec.area == "group") params += fmt::format("groups={} ", spec.groups);
    if (spec.is_ibnorm()) params += fmt::format("lambda={} ", spec.lambda);
    if (spec.is_ibnorm() && spec.order != "between") params += "order=" + spec.order + " ";
    if (spec.is_dyt()) params += fmt::format("alpha={} ", spec.alpha);
    if (spec.is_normalnorm()) params += fmt::format("noise={} ", spec.noise);
    params += fmt::format("eps={} affine={}", spec.eps, spec.affine);
    if (spec.area == "batch") params += fmt::format(" momentum={}", spec.momentum);
    std::cout << fmt::format("  {:<10} {:<6} {:<12} {:<42} {}\n", preset.name, spec.area,
                             spec.operation, params, preset.summary);
  }
  std::cout << "\nAreas (key area=, any normalizer; groups= for group, momentum= for batch)\n";
  for (const auto& area : nm::areas()) std::cout << fmt::format("  {:<12} {}\n", area.name, area.summary);
  std::cout << "\nOperations\n";
  for (const auto& op : nm::operations()) std::cout << fmt::format("  {:<12} {}\n", op.name, op.summary);
  std::cout << "\nIBNorm compressions (lambda >= 0; lambda=0 is the variance-centric norm; kappa=K instead picks the\n"
               "lambda whose Gaussian variance contraction is K; order=first|between|last places psi)\n";
  for (const auto& c : nm::compressions()) {
    std::cout << fmt::format("  ibnorm-{:<5} {:<12} {}\n", c.name, c.label, c.formula);
  }
  std::cout << fmt::format(
      "\nLayouts: [N, D] and [N, T, D] (features last), [N, C, H, W] (channels second).\n"
      "Run one: ibn norms --spec ibnorm-t:lambda=2 --shape 64,256\n");
}

int run_one(const po::variables_map& vm) {
  const std::vector<int64_t> shape = parse_shape("shape", vm["shape"].as<std::string>());
  if (shape.size() < 2) {
    throw UsageError(fmt::format("--shape '{}' needs at least two dims: N,D or N,T,D or N,C,H,W",
                                 vm["shape"].as<std::string>()));
  }
  const int64_t features = shape[nm::feature_dim(shape.size())];
  const std::string mode = vm["mode"].as<std::string>();
  if (mode != "train" && mode != "eval") {
    throw UsageError(fmt::format("--mode '{}' must be train or eval", mode));
  }
  const c10::Device device = resolve_device(vm["device"].as<std::string>());
  const uint64_t seed = checked_seed("seed", vm["seed"].as<int64_t>());
  torch::manual_seed(seed);

  nm::Normalizer norm(vm["spec"].as<std::string>(), features);
  norm->to(device);
  norm->train(mode == "train");
  const torch::Tensor x = torch::randn(shape, torch::TensorOptions().device(device));
  const torch::Tensor y = norm(x).detach().cpu();

  std::cout << fmt::format("spec      {}\nformula   {}\ninput     randn {} on {}, {} mode, seed {}\n",
                           norm->spec().str(), norm->operation().formula(), nm::shape_str(shape),
                           device.str(), mode, seed);
  if (norm->spec().kappa > 0) std::cout << fmt::format("lambda    {} (chosen for kappa {})\n", norm->spec().lambda, norm->spec().kappa);
  std::cout << fmt::format("output    mean {:+.6f}  std {:.6f}  min {:+.4f}  max {:+.4f}\n",
                           y.mean().item<double>(), y.std().item<double>(), y.min().item<double>(),
                           y.max().item<double>());
  const double kappa = norm->contraction(x).item<double>();
  std::cout << fmt::format("kappa     {:.6f} (measured)   {:.6f} (standard Gaussian z, quadrature)\n",
                           kappa, nm::gaussian_contraction(norm->spec()));
  return 0;
}

}  // namespace

int run_norms(const std::vector<std::string>& args) {
  CommandOptions cmd("norms", "ibn norms [--spec S --shape N,D [--seed K] [--mode train|eval] [--device D]]",
                     "Without --spec, lists every normalizer, area, operation and compression with its\n"
                     "parameters and defaults. With --spec and --shape, builds that normalizer, runs it\n"
                     "on standard Gaussian input and prints output statistics and variance contraction.");
  cmd.options.add_options()
      ("spec", po::value<std::string>()->value_name("S"), "normalizer spec, e.g. ibnorm-t:lambda=2")
      ("shape", po::value<std::string>()->value_name("N,D"), "input shape: N,D or N,T,D or N,C,H,W")
      ("seed", po::value<int64_t>()->default_value(0), "random seed of the input")
      ("mode", po::value<std::string>()->default_value("train"), "train (batch statistics) or eval")
      ("device", po::value<std::string>()->default_value("cpu"), "cpu, cuda, cuda:N or auto");
  const auto vm = cmd.parse(args);
  if (!vm) return 0;
  if (vm->count("spec") != vm->count("shape")) {
    throw UsageError("ibn norms: --spec and --shape go together (see 'ibn norms --help')");
  }
  if (!vm->count("spec")) {
    list_family();
    return 0;
  }
  return run_one(*vm);
}

}  // namespace ibn::cli
