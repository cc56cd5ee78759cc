#include "ibn/analysis/quantization.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <tuple>

#include <ATen/ops/empty.h>
#include <ATen/ops/randn.h>
#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/io/csv.h"
#include "ibn/io/hdf5.h"
#include "ibn/norm/area.h"
#include "ibn/norm/normalizer.h"
#include "ibn/spec_string.h"

namespace ibn::analysis {
namespace {

namespace fs = std::filesystem;
namespace nm = ibn::norm;

// The run's store records what it dumped: the layers (root attribute "layers", forward order)
// and the epochs (/meta/dumped_epochs), each epoch holding every layer.
void resolve_run(KeyValueSpec& kv, QuantInput& input) {
  const std::string dir = kv.text_value("dir", "");
  if (dir.empty()) kv.fail("run input needs dir=RUN (a directory `ibn train --out RUN` wrote)");
  input.file = dir + "/activations.h5";
  if (!fs::exists(input.file)) kv.fail(fmt::format("the run '{}' has no activations.h5 (was it trained with dumps?)", dir));
  const std::vector<std::string> layers = split(io::read_text_attribute(input.file, "/", "layers"), ',');
  std::vector<int64_t> epochs;
  for (double e : io::read_doubles(input.file, "/meta/dumped_epochs")) epochs.push_back(static_cast<int64_t>(e));
  std::sort(epochs.begin(), epochs.end());
  const std::string layer = kv.text_value("layer", layers.empty() ? "" : layers.front());
  if (std::find(layers.begin(), layers.end(), layer) == layers.end() || epochs.empty()) {
    kv.fail(fmt::format("the run '{}' dumped no layer '{}'", dir, layer));
  }
  const int64_t epoch = kv.has("epoch") ? kv.integer("epoch", 0) : epochs.back();
  if (std::find(epochs.begin(), epochs.end(), epoch) == epochs.end()) {
    kv.fail(fmt::format("the run '{}' dumped layer '{}' at epochs {}..{}, not at epoch {}", dir, layer, epochs.front(),
                        epochs.back(), epoch));
  }
  input.dataset = fmt::format("/epochs/{}/{}", epoch, layer);
}

}  // namespace

QuantInput parse_quant_input(const std::string& text) {
  KeyValueSpec kv(text, "quant input");
  QuantInput input;
  input.text = text;
  input.kind = kv.name();
  if (input.kind == "gaussian") {
  } else if (input.kind == "student-t") {
    input.df = kv.number("df", input.df);
    kv.require_above("df", input.df, 2);  // a finite variance: the normalizers standardize it
  } else if (input.kind == "run") {
    resolve_run(kv, input);
  } else if (input.kind == "h5") {
    input.file = kv.text_value("file", "");
    input.dataset = kv.text_value("dataset", "");
    if (input.file.empty() || input.dataset.empty()) kv.fail("h5 input needs file=F and dataset=/path");
  } else {
    kv.fail(fmt::format("unknown input '{}'; expected gaussian, student-t[:df=N], run:dir=RUN[:layer=L][:epoch=E] or "
                        "h5:file=F:dataset=/path", input.kind));
  }
  kv.finish(input.kind == "student-t" ? "df" : input.kind == "run" ? "dir, layer, epoch" : input.kind == "h5" ? "file, dataset" : "none");
  return input;
}

void check_options(const QuantConfig& config) {
  if (config.inputs.empty()) throw UsageError("quant: no input (--inputs)");
  if (config.specs.empty()) throw UsageError("quant: no normalizer (--norms)");
  if (config.formats.empty() || config.scalings.empty()) throw UsageError("quant: no FP8 format or scaling");
  if (config.replicates < 2) {
    throw UsageError(fmt::format("quant: --replicates={} must be at least 2 (intervals and paired tests need them)", config.replicates));
  }
  if (config.rows < 2 || config.width < 1) throw UsageError("quant: --shape needs at least 2 rows and 1 feature");
  const bool has_baseline = std::any_of(config.specs.begin(), config.specs.end(),
                                        [&](const nm::NormSpec& s) { return s.name == config.baseline; });
  if (!has_baseline) throw UsageError(fmt::format("quant: the baseline '{}' is not among --norms", config.baseline));
  for (const nm::NormSpec& spec : config.specs) {
    if (spec.has_fp8_output()) {
      throw UsageError(fmt::format("quant: '{}' already quantizes its output (fp8=); give the plain spec", spec.str()));
    }
  }
}

std::vector<at::Tensor> input_replicates(const QuantInput& input, const QuantConfig& config) {
  std::vector<at::Tensor> out;
  if (input.generated()) {
    for (int64_t r = 0; r < config.replicates; ++r) {
      const uint64_t seed = config.seed + static_cast<uint64_t>(r);
      if (input.kind == "gaussian") {
        at::Generator generator = at::detail::createCPUGenerator(seed);
        out.push_back(at::randn({config.rows, config.width}, generator, at::TensorOptions().dtype(at::kFloat)));
        continue;
      }
      std::mt19937_64 rng(seed);
      std::student_t_distribution<double> t(input.df);
      at::Tensor x = at::empty({config.rows, config.width}, at::kFloat);
      float* p = x.data_ptr<float>();
      for (int64_t i = 0; i < x.numel(); ++i) p[i] = static_cast<float>(t(rng));
      out.push_back(x);
    }
    return out;
  }
  const at::Tensor data = io::read_dataset(input.file, input.dataset).to(at::kFloat);
  if (data.dim() < 2) {
    throw UsageError(fmt::format("quant input '{}': dataset '{}' has {} dims; expected [N, D] or more", input.text,
                                 input.dataset, data.dim()));
  }
  const int64_t block = data.size(0) / config.replicates;
  if (block < 2) {
    throw UsageError(fmt::format("quant input '{}': {} rows cannot make {} replicates of at least 2 rows", input.text,
                                 data.size(0), config.replicates));
  }
  for (int64_t r = 0; r < config.replicates; ++r) out.push_back(data.narrow(0, r * block, block).contiguous());
  return out;
}

std::vector<QuantMeasurement> measure_one(const nm::NormSpec& spec, const at::Tensor& x, const QuantConfig& config) {
  const at::NoGradGuard no_grad;
  const int64_t dim = nm::feature_dim(static_cast<size_t>(x.dim()));
  nm::Normalizer norm(spec, x.size(dim));
  const at::Tensor y = norm(x.to(at::kFloat));
  const at::Tensor y_bf16 = y.to(at::kBFloat16).to(at::kFloat);  // the first of two quantizations
  std::vector<QuantMeasurement> out;
  for (nm::fp8::Format format : config.formats) {
    for (nm::Fp8Scaling scaling : config.scalings) {
      for (bool twice : {false, true}) {
        const nm::Fp8Tensor q = nm::quantize_fp8(twice ? y_bf16 : y, nm::Fp8Output{format, scaling}, dim);
        QuantMeasurement m;
        m.format = format, m.scaling = scaling, m.twice = twice;
        m.error = nm::fp8_error(y, q, format);  // against the unrounded y, either way
        out.push_back(m);
      }
    }
  }
  return out;
}

std::vector<QuantMeasurement> measure_quantization(const QuantConfig& config, std::ostream& log) {
  check_options(config);
  std::vector<QuantMeasurement> all;
  for (size_t i = 0; i < config.inputs.size(); ++i) {
    const std::vector<at::Tensor> replicates = input_replicates(config.inputs[i], config);
    log << fmt::format("input {}: {} replicates of shape {}\n", config.inputs[i].text, replicates.size(),
                       nm::shape_str(replicates.front().sizes()))
        << std::flush;
    for (size_t s = 0; s < config.specs.size(); ++s) {
      for (size_t r = 0; r < replicates.size(); ++r) {
        for (QuantMeasurement m : measure_one(config.specs[s], replicates[r], config)) {
          m.input = i, m.spec = s, m.replicate = static_cast<int64_t>(r);
          all.push_back(m);
        }
      }
    }
  }
  return all;
}

namespace {

// A cell's key: everything but the replicate and the spec (the baseline shares it).
using CellKey = std::tuple<size_t, int, int, bool>;
CellKey cell_key(const QuantMeasurement& m) {
  return {m.input, static_cast<int>(m.format), static_cast<int>(m.scaling), m.twice};
}

// Per replicate, a measurement's value, NaN where a replicate is missing.
std::vector<double> by_replicate(const std::vector<const QuantMeasurement*>& ms, int64_t replicates,
                                 double (*value)(const QuantMeasurement&)) {
  std::vector<double> out(static_cast<size_t>(replicates), stats::kNaN);
  for (const QuantMeasurement* m : ms) out[static_cast<size_t>(m->replicate)] = value(*m);
  return out;
}

double snr_of(const QuantMeasurement& m) { return m.error.snr_db; }
double mse_of(const QuantMeasurement& m) { return m.error.relative_mse; }
double saturated_of(const QuantMeasurement& m) { return m.error.saturated; }
double underflow_of(const QuantMeasurement& m) { return m.error.underflow; }

}  // namespace

std::vector<QuantSummary> summarize_quantization(const QuantConfig& config, const std::vector<QuantMeasurement>& measurements) {
  // (cell, spec) -> its measurements over the replicates, in first-seen order.
  std::map<std::pair<CellKey, size_t>, std::vector<const QuantMeasurement*>> groups;
  std::vector<std::pair<CellKey, size_t>> order;
  for (const QuantMeasurement& m : measurements) {
    const auto key = std::make_pair(cell_key(m), m.spec);
    if (!groups.count(key)) order.push_back(key);
    groups[key].push_back(&m);
  }
  size_t baseline_spec = 0;
  while (config.specs[baseline_spec].name != config.baseline) ++baseline_spec;
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<QuantSummary> out;
  for (const auto& key : order) {
    const std::vector<const QuantMeasurement*>& ms = groups[key];
    QuantSummary s;
    s.input = ms.front()->input, s.spec = key.second, s.format = ms.front()->format, s.scaling = ms.front()->scaling;
    s.twice = ms.front()->twice;
    s.is_baseline = s.spec == baseline_spec;
    const std::vector<double> snr = by_replicate(ms, config.replicates, snr_of);
    s.snr_db = stats::mean_interval(snr);
    s.relative_mse = stats::mean_interval(by_replicate(ms, config.replicates, mse_of), 0, inf);
    s.saturated = stats::mean_interval(by_replicate(ms, config.replicates, saturated_of), 0, 1);
    s.underflow = stats::mean_interval(by_replicate(ms, config.replicates, underflow_of), 0, 1);
    if (!s.is_baseline) {
      const auto baseline = groups.find(std::make_pair(key.first, baseline_spec));
      if (baseline != groups.end()) {
        s.vs_baseline = stats::compare_paired(snr, by_replicate(baseline->second, config.replicates, snr_of));
      }
    }
    out.push_back(s);
  }
  std::vector<double> p;
  for (const QuantSummary& s : out) p.push_back(s.is_baseline ? stats::kNaN : s.vs_baseline.p_t);
  const std::vector<double> adjusted = stats::holm(p);
  for (size_t i = 0; i < out.size(); ++i) out[i].vs_baseline.p_holm = adjusted[i];
  return out;
}

namespace {

std::string spec_label(const nm::NormSpec& spec) {
  if (spec.is_ibnorm()) return fmt::format("{} λ={}", spec.name, spec.lambda);
  return spec.name;
}

std::string number(double v, int digits = 3) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? "∞" : "−∞";
  return fmt::format("{:.{}f}", v, digits);
}

std::string interval_text(const stats::Interval& i, int digits) {
  if (i.n == 0) return "n/a";
  if (std::isnan(i.low)) return number(i.mean, digits);
  return fmt::format("{} [{}, {}]", number(i.mean, digits), number(i.low, digits), number(i.high, digits));
}

std::string p_text(double p) { return std::isnan(p) ? "n/a" : p < 1e-4 ? fmt::format("{:.1e}", p) : fmt::format("{:.4f}", p); }

// The verdict on one comparison, in words: better or worse only where Holm rejects at 0.05.
std::string verdict(const QuantSummary& s) {
  if (s.vs_baseline.pairs > 0 && s.vs_baseline.difference.mean == 0 && std::isnan(s.vs_baseline.p_t)) {
    return "identical to the baseline";
  }
  if (std::isnan(s.vs_baseline.p_holm)) return "not tested";
  if (s.vs_baseline.p_holm >= 0.05) return "no significant difference";
  return s.vs_baseline.difference.mean > 0 ? "quantizes better" : "quantizes worse";
}

std::string table_for(const QuantConfig& config, const std::vector<QuantSummary>& summaries, size_t input) {
  std::string out =
      "| format | scaling | quantized | normalizer | SNR dB (95 % CI) | rel. MSE ×1e3 | saturated % | underflow % | "
      "ΔSNR vs " + config.baseline + " dB (95 % CI) | p (t) | p (Wilcoxon) | p (Holm) |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const QuantSummary& s : summaries) {
    if (s.input != input) continue;
    stats::Interval mse = s.relative_mse;
    for (double* v : {&mse.mean, &mse.low, &mse.high}) *v *= 1e3;
    const auto percent = [](const stats::Interval& i) { return number(i.mean * 100, 4); };
    const bool compared = !s.is_baseline;
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", nm::format_name(s.format),
                       nm::scaling_name(s.scaling), s.twice ? "twice (bf16, FP8)" : "once", spec_label(config.specs[s.spec]),
                       interval_text(s.snr_db, 2), interval_text(mse, 4), percent(s.saturated), percent(s.underflow),
                       compared ? interval_text(s.vs_baseline.difference, 3) : "baseline",
                       compared ? p_text(s.vs_baseline.p_t) : "", compared ? p_text(s.vs_baseline.p_wilcoxon) : "",
                       compared ? p_text(s.vs_baseline.p_holm) : "");
  }
  return out;
}

// The question in one paragraph per input: IBNorm-T against the baseline in E4M3,
// quantized once, per scaling and λ.
std::string verdicts_for(const QuantConfig& config, const std::vector<QuantSummary>& summaries, size_t input) {
  std::string out;
  for (const QuantSummary& s : summaries) {
    if (s.input != input || s.is_baseline || s.twice || s.format != nm::fp8::Format::e4m3) continue;
    if (config.specs[s.spec].name != "ibnorm-t") continue;
    out += fmt::format("- {} vs {}, e4m3, {} scaling: ΔSNR {} dB, Holm p {}: **{}**.\n", spec_label(config.specs[s.spec]),
                       config.baseline, nm::scaling_name(s.scaling), interval_text(s.vs_baseline.difference, 3),
                       p_text(s.vs_baseline.p_holm), verdict(s));
  }
  return out;
}

}  // namespace

std::string quantization_markdown(const QuantConfig& config, const std::vector<QuantSummary>& summaries,
                                  const std::string& figure) {
  std::string out = "# FP8 quantization of the normalizers' outputs\n\n";
  out += fmt::format(
      "Each normalizer's output y (at initialization: γ = 1, β = 0; training mode, so batch-area layers use the batch's "
      "statistics) is computed in float32 and stored in OCP FP8 with a scale s = amax/max normal, per tensor or per row "
      "(a row: every feature at one position), as encode(y/s) with round-to-nearest-even and saturation. **Once**: y "
      "quantized directly. **Twice**: y rounded to bf16 first, then to FP8 (the double quantization an FP8 dataflow avoids). "
      "The error is against the unrounded y: relative MSE Σ(ŷ − y)²/Σy², SNR = −10·log10(relative MSE), the share of values "
      "clamped by saturation, and the share of nonzero values stored as zero.\n\n"
      "Replicates: {} per input (generated inputs: independent draws from seeds {}..{}; a dataset: disjoint blocks of "
      "rows, in file order). Intervals: 95 % Student-t intervals over the replicates (t quantile from Boost.Math). Comparisons: SNR (dB) minus the {}'s, paired by replicate; paired-t and "
      "Wilcoxon p-values; Holm–Bonferroni over the {} comparisons of all tables with a t p-value (a comparison whose "
      "differences are all equal, as with an output identical to the baseline's, has none).\n\n",
      config.replicates, config.seed, config.seed + static_cast<uint64_t>(config.replicates) - 1, config.baseline,
      std::count_if(summaries.begin(), summaries.end(), [](const QuantSummary& s) { return !s.is_baseline && !std::isnan(s.vs_baseline.p_t); }));
  out += "Normalizers (exact specs):\n\n";
  for (const nm::NormSpec& spec : config.specs) out += fmt::format("- `{}`\n", spec.str());
  out += "\n";
  if (!figure.empty()) out += fmt::format("![quantization]({})\n\n", figure);
  for (size_t i = 0; i < config.inputs.size(); ++i) {
    const QuantInput& input = config.inputs[i];
    out += fmt::format("## Input `{}`\n\n", input.text);
    if (input.generated()) {
      out += fmt::format("{} × {} values per replicate.\n\n", config.rows, config.width);
    } else {
      out += fmt::format("Dataset `{}` of `{}`.\n\n", input.dataset, input.file);
    }
    const std::string verdicts = verdicts_for(config, summaries, i);
    if (!verdicts.empty()) out += "Does IBNorm-T quantize better than " + config.baseline + " in E4M3?\n\n" + verdicts + "\n";
    out += table_for(config, summaries, i) + "\n";
  }
  out +=
      "## Caveats\n\n"
      "- The outputs are those of freshly built layers on these inputs: a trained model's γ and β rescale each feature and "
      "change the row and tensor amax; the table measures what the normalization itself does to the distribution.\n"
      "- Within FP8's normal range the relative rounding error of a value depends on where it sits in its binade (one "
      "ulp is 2^-m to 2^-(m+1) of it: a factor of 4 in squared error, 6 dB), and below it on the subnormal range (E4M3: "
      "under 2^-6·s). With s = amax/max normal, the SNR of a distribution therefore depends on how its bulk lies relative "
      "to its own amax: E4M3's max normal 448 = 1.75·2^8 sits near the top of its binade, where the relative step is "
      "smallest (1/14), so a shape that piles mass near its amax (as tanh compression does) gains there. Differences of a dB or two between normalizers are of the size of this "
      "effect; another scaling recipe (a margin, a power-of-two scale as in MX formats, delayed amax) can shift them.\n"
      "- ψ_λ is strictly monotone: quantizing its output is not the same as compressing information (SPEC §3); an SNR here "
      "says how faithfully the next layer sees y, not how much y tells about the input.\n";
  return out;
}

std::string quantization_csv(const QuantConfig& config, const std::vector<QuantMeasurement>& measurements) {
  std::string out = "input,spec,normalizer,lambda,format,scaling,quantized,replicate,relative_mse,snr_db,saturated,underflow,count\n";
  for (const QuantMeasurement& m : measurements) {
    const nm::NormSpec& spec = config.specs[m.spec];
    out += fmt::format("{},{},{},{},{},{},{},{},{:.9g},{:.9g},{:.9g},{:.9g},{}\n", io::csv_field(config.inputs[m.input].text),
                       io::csv_field(spec.str()), spec.name, spec.is_ibnorm() ? fmt::format("{}", spec.lambda) : "",
                       nm::format_name(m.format), nm::scaling_name(m.scaling), m.twice ? "twice" : "once", m.replicate,
                       m.error.relative_mse, m.error.snr_db, m.error.saturated, m.error.underflow, m.error.count);
  }
  return out;
}

}  // namespace ibn::analysis
