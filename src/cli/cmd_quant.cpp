// ibn quant: the FP8 quantization error of every normalizer's output (analysis/quantization.h),
// once and twice (through bf16), per format and scaling, against a baseline with the SPEC §9
// statistics; writes OUT/report.md with the quantization figure, OUT/quant.csv and the figure's
// data OUT/data/quant.h5.
#include <filesystem>
#include <iostream>

#include <ATen/ops/tensor.h>
#include <fmt/format.h>

#include "command.h"
#include "ibn/analysis/quantization.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/hdf5.h"
#include "ibn/io/process.h"
#include "ibn/norm/normalizer.h"

#ifndef IBN_SOURCE_DIR
#define IBN_SOURCE_DIR "."
#endif

namespace ibn::cli {
namespace {

namespace fs = std::filesystem;
namespace nm = ibn::norm;
using analysis::QuantConfig;
using analysis::QuantSummary;

// Each spec once, an IBNorm spec once per λ (a spec naming its own lambda or kappa keeps it).
std::vector<nm::NormSpec> expand_specs(const std::vector<std::string>& texts, const std::vector<double>& lambdas) {
  std::vector<nm::NormSpec> out;
  for (const std::string& text : texts) {
    nm::NormSpec spec = nm::parse_norm_spec(text);
    if (!spec.is_ibnorm() || text.find("lambda=") != std::string::npos || text.find("kappa=") != std::string::npos) {
      out.push_back(spec);
      continue;
    }
    for (double lambda : lambdas) {
      spec.lambda = lambda;
      out.push_back(spec);
    }
  }
  return out;
}

// The figure's data: one row per summary cell; names as attributes.
void write_figure_data(const std::string& path, const QuantConfig& config, const std::vector<QuantSummary>& summaries) {
  std::vector<int64_t> input, spec, format, scaling, twice;
  std::vector<double> lambda, snr, low, high;
  for (const QuantSummary& s : summaries) {
    input.push_back(static_cast<int64_t>(s.input));
    spec.push_back(static_cast<int64_t>(s.spec));
    format.push_back(static_cast<int64_t>(s.format));
    scaling.push_back(s.scaling == nm::Fp8Scaling::row ? 1 : 0);
    twice.push_back(s.twice ? 1 : 0);
    lambda.push_back(config.specs[s.spec].is_ibnorm() ? config.specs[s.spec].lambda : -1.0);
    snr.push_back(s.snr_db.mean);
    low.push_back(s.snr_db.low);
    high.push_back(s.snr_db.high);
  }
  std::string inputs, names;
  for (const auto& i : config.inputs) inputs += (inputs.empty() ? "" : "\n") + i.text;
  for (const auto& sp : config.specs) names += (names.empty() ? "" : "\n") + sp.name;
  const auto longs = [](const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); };
  const auto doubles = [](const std::vector<double>& v) { return at::tensor(v, at::kDouble); };
  io::write_datasets(path,
                     {{"/input", longs(input)}, {"/spec", longs(spec)}, {"/format", longs(format)}, {"/scaling", longs(scaling)},
                      {"/twice", longs(twice)}, {"/lambda", doubles(lambda)}, {"/snr_db", doubles(snr)},
                      {"/snr_low", doubles(low)}, {"/snr_high", doubles(high)}},
                     {{"inputs", inputs}, {"spec_names", names}, {"baseline", config.baseline},
                      {"replicates", config.replicates}, {"formats", std::string("e4m3\ne5m2")},
                      {"scalings", std::string("tensor\nrow")}});
}

// Runs scripts/plot_quant.py on OUT; the figure's file name relative to OUT.
std::string draw_figure(const std::string& out) {
  const char* override_script = std::getenv("IBN_PLOT_QUANT_SCRIPT");
  const std::string script = override_script != nullptr ? override_script : std::string(IBN_SOURCE_DIR) + "/scripts/plot_quant.py";
  if (!fs::exists(script)) throw std::runtime_error(fmt::format("the plotting script '{}' is missing", script));
  if (io::run_program({io::python3(), script, out}, out + "/data/plot.log") != 0) {
    const std::string last = io::last_line(out + "/data/plot.log");
    throw std::runtime_error(fmt::format("drawing the quantization figure failed ({}); is python3-matplotlib installed? "
                                         "(--no-figures skips it)", last.empty() ? "no output" : last));
  }
  return "figures/quantization.png";
}

void print_verdicts(const QuantConfig& config, const std::vector<QuantSummary>& summaries) {
  for (const QuantSummary& s : summaries) {
    if (s.twice || s.is_baseline || config.specs[s.spec].name != "ibnorm-t" || s.format != nm::fp8::Format::e4m3) continue;
    const auto& d = s.vs_baseline.difference;
    std::cout << fmt::format("{:<28} ibnorm-t λ={:<4} e4m3 {:<6}  SNR {:6.2f} dB  Δ vs {} {:+.3f} dB [{:+.3f}, {:+.3f}]  Holm p {:.3g}\n",
                             config.inputs[s.input].text, config.specs[s.spec].lambda, nm::scaling_name(s.scaling),
                             s.snr_db.mean, config.baseline, d.mean, d.low, d.high, s.vs_baseline.p_holm);
  }
}

}  // namespace

int run_quant(const std::vector<std::string>& args) {
  CommandOptions cmd("quant", "ibn quant [--inputs I,I,...] [--norms S,S,...] [--lambdas L,L,...] [--out DIR]",
                     "FP8 quantization error of each normalizer's output: OCP E4M3 and E5M2, one scale per tensor\n"
                     "or per row, quantized once (from float32) or twice (bf16, then FP8). Relative MSE, SNR,\n"
                     "saturated and underflowing shares over replicates; each normalizer against the baseline by\n"
                     "the paired SNR difference (t and Wilcoxon, Holm). Inputs: gaussian, student-t[:df=N],\n"
                     "run:dir=RUN[:layer=L][:epoch=E] (a trained run's dumped activations), h5:file=F:dataset=/D.");
  cmd.options.add_options()
      ("inputs", po::value<std::string>()->default_value("gaussian,student-t:df=3")->value_name("I,I,..."), "the inputs")
      ("norms", po::value<std::string>()->default_value("layernorm,rmsnorm,batchnorm,dyt,ibnorm-s,ibnorm-l,ibnorm-t")
                    ->value_name("S,S,..."), "normalizer specs; IBNorm specs without lambda/kappa run at every --lambdas value")
      ("lambdas", po::value<std::string>()->default_value("0.5,1,2,4")->value_name("L,L,..."), "λ for the IBNorm specs")
      ("baseline", po::value<std::string>()->default_value("layernorm"), "the normalizer name the others are compared with")
      ("formats", po::value<std::string>()->default_value("e4m3,e5m2"), "FP8 formats")
      ("scalings", po::value<std::string>()->default_value("tensor,row"), "scalings: tensor, row")
      ("shape", po::value<std::string>()->default_value("4096,256")->value_name("N,D"), "shape of generated inputs")
      ("replicates", po::value<int64_t>()->default_value(5), "independent draws (generated) or row blocks (datasets)")
      ("seed", po::value<int64_t>()->default_value(0), "seed of the first generated replicate")
      ("out", po::value<std::string>()->default_value("runs/quant"), "output directory")
      ("no-figures", po::bool_switch(), "skip the figure (no Python needed)");
  const auto vm = cmd.parse(args);
  if (!vm) return 0;

  QuantConfig config;
  for (const std::string& text : parse_words((*vm)["inputs"].as<std::string>())) {
    config.inputs.push_back(analysis::parse_quant_input(text));
  }
  const std::vector<double> lambdas = parse_numbers("lambdas", (*vm)["lambdas"].as<std::string>());
  for (double lambda : lambdas) {
    if (lambda < 0 || lambda > nm::kMaxLambda) throw UsageError(fmt::format("--lambdas: lambda={} must lie in [0, {}]", lambda, nm::kMaxLambda));
  }
  config.specs = expand_specs(parse_words((*vm)["norms"].as<std::string>()), lambdas);
  config.baseline = (*vm)["baseline"].as<std::string>();
  config.formats.clear();
  for (const std::string& f : parse_words((*vm)["formats"].as<std::string>())) config.formats.push_back(nm::parse_format(f));
  config.scalings.clear();
  for (const std::string& s : parse_words((*vm)["scalings"].as<std::string>())) config.scalings.push_back(nm::parse_scaling(s));
  const std::vector<int64_t> shape = parse_shape("shape", (*vm)["shape"].as<std::string>());
  if (shape.size() != 2) throw UsageError("--shape must be N,D");
  config.rows = shape[0], config.width = shape[1];
  config.replicates = (*vm)["replicates"].as<int64_t>();
  config.seed = checked_seed("seed", (*vm)["seed"].as<int64_t>());
  analysis::check_options(config);
  const std::string out = (*vm)["out"].as<std::string>();
  if (fs::exists(out) && !fs::is_directory(out)) throw UsageError(fmt::format("--out '{}' is a file, not a directory", out));

  const auto measurements = analysis::measure_quantization(config, std::cout);
  const auto summaries = analysis::summarize_quantization(config, measurements);
  fs::create_directories(out + "/data");
  io::write_file_atomically(out + "/quant.csv", analysis::quantization_csv(config, measurements));
  write_figure_data(out + "/data/quant.h5", config, summaries);
  const std::string figure = (*vm)["no-figures"].as<bool>() ? "" : draw_figure(out);
  io::write_file_atomically(out + "/report.md", analysis::quantization_markdown(config, summaries, figure));
  print_verdicts(config, summaries);
  std::cout << fmt::format("wrote {}/report.md, {}/quant.csv{}\n", out, out, figure.empty() ? "" : ", " + out + "/" + figure);
  return 0;
}

}  // namespace ibn::cli
