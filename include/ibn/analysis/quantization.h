#pragma once
// `ibn quant`: how well each normalizer's output survives FP8 (norm/fp8.h). For every input,
// normalizer (IBNorm once per λ), format and scaling, the error of quantizing the output once
// (from fp32) and twice (to bf16 first, then FP8: the double quantization FP8 dataflows avoid),
// over independent replicates; each normalizer is compared with a baseline (LayerNorm) by the
// paired difference in SNR, with the SPEC §9 statistics.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ibn/norm/fp8.h"
#include "ibn/norm/spec.h"
#include "ibn/stats/stats.h"

namespace ibn::analysis {

// Where the normalizers' inputs come from (a spec string, NAME[:KEY=VALUE]...):
//   gaussian                            standard Gaussian, [rows, width]
//   student-t[:df=3]                    Student's t with df degrees of freedom (heavy tails)
//   run:dir=RUN[:layer=fc1][:epoch=E]   a trained run's dumped activations of a layer (default:
//                                       the first tap, at the last dumped epoch)
//   h5:file=F:dataset=/path             any dataset of ≥ 2 dims (the features last, or second)
struct QuantInput {
  std::string text;  // as given
  std::string kind;  // gaussian, student-t, run, h5
  double df = 3;
  std::string file, dataset;  // run: resolved to its activations.h5 and /epochs/E/LAYER
  bool generated() const { return kind == "gaussian" || kind == "student-t"; }
};
// Throws ibn::UsageError for a malformed spec, a missing file or an unknown layer or epoch.
QuantInput parse_quant_input(const std::string& text);

struct QuantConfig {
  std::vector<QuantInput> inputs;
  std::vector<norm::NormSpec> specs;  // IBNorm specs once per λ
  std::string baseline = "layernorm";  // the spec name every other is compared with
  std::vector<norm::fp8::Format> formats{norm::fp8::Format::e4m3, norm::fp8::Format::e5m2};
  std::vector<norm::Fp8Scaling> scalings{norm::Fp8Scaling::tensor, norm::Fp8Scaling::row};
  int64_t rows = 4096, width = 256;  // of generated inputs
  int64_t replicates = 5;  // generated: independent draws; data: disjoint blocks of rows
  uint64_t seed = 0;
};
// Throws ibn::UsageError for an empty list, too few replicates (< 2) or no baseline spec.
void check_options(const QuantConfig& config);

// The replicates of one input: generated ones drawn from seed + r; a dataset split into
// `replicates` disjoint blocks of rows (each at least 2 rows), in file order.
std::vector<at::Tensor> input_replicates(const QuantInput& input, const QuantConfig& config);

struct QuantMeasurement {
  size_t input = 0, spec = 0;
  norm::fp8::Format format = norm::fp8::Format::e4m3;
  norm::Fp8Scaling scaling = norm::Fp8Scaling::tensor;
  bool twice = false;  // through bf16 first
  int64_t replicate = 0;
  norm::Fp8Error error;
};

// Every normalizer's output of x in training mode (batch statistics) at its initial γ = 1, β = 0,
// computed in float; quantized once and twice per format and scaling.
std::vector<QuantMeasurement> measure_one(const norm::NormSpec& spec, const at::Tensor& x, const QuantConfig& config);
std::vector<QuantMeasurement> measure_quantization(const QuantConfig& config, std::ostream& log);

// One cell of the tables: a (input, spec, format, scaling, once/twice) over its replicates.
struct QuantSummary {
  size_t input = 0, spec = 0;
  norm::fp8::Format format = norm::fp8::Format::e4m3;
  norm::Fp8Scaling scaling = norm::Fp8Scaling::tensor;
  bool twice = false;
  stats::Interval snr_db, relative_mse, saturated, underflow;
  stats::PairedComparison vs_baseline;  // SNR (dB) minus the baseline's, paired by replicate; Holm over every comparison of the report
  bool is_baseline = false;
};
std::vector<QuantSummary> summarize_quantization(const QuantConfig& config, const std::vector<QuantMeasurement>& measurements);

// The report's text (markdown): parameters, tables, the verdicts, the caveats; `figure` is the
// quantization figure's file name relative to the report ("" for none).
std::string quantization_markdown(const QuantConfig& config, const std::vector<QuantSummary>& summaries,
                                  const std::string& figure);
// One line per measurement, with a header: for users' own analyses.
std::string quantization_csv(const QuantConfig& config, const std::vector<QuantMeasurement>& measurements);

}  // namespace ibn::analysis
