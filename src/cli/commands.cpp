// Every `ibn` subcommand, one line each; each is defined in its own file in src/cli/.
#include "command.h"

namespace ibn::cli {

int run_norms(const std::vector<std::string>& args);
int run_contraction(const std::vector<std::string>& args);
int run_mi(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
int run_train(const std::vector<std::string>& args);
int run_analyze(const std::vector<std::string>& args);
int run_sweep(const std::vector<std::string>& args);
int run_report(const std::vector<std::string>& args);
int run_quant(const std::vector<std::string>& args);
int run_repro(const std::vector<std::string>& args);

const std::vector<Command>& commands() {
  static const std::vector<Command> entries{
      {"norms", "list the normalizers, or run one on random input (--spec, --shape)", run_norms},
      {"contraction", "variance contraction κ of every normalizer over a λ grid", run_contraction},
      {"train", "train a model with any normalizer; dump activations to HDF5", run_train},
      {"analyze", "I(X;T), I(T;Y), IB value, kappa and nuisance ratio per layer and epoch of a run", run_analyze},
      {"sweep", "train and analyze every point of an experiment's grid (λ × norm × seed × ...), then report", run_sweep},
      {"report", "report.md, figures and LaTeX tables of a sweep or a run", run_report},
      {"quant", "FP8 quantization error of each normalizer's output (E4M3/E5M2, per tensor or row, once or via bf16)", run_quant},
      {"repro", "an experiment's grid on several platforms: spread across platforms beside spread across seeds", run_repro},
      {"mi", "estimate I(A;B) of two HDF5 datasets, or of a task with known truth", run_mi},
      {"bench", "benchmarks: 'ibn bench mi' (MI estimators), 'ibn bench train' (models, dumps)", run_bench},
  };
  return entries;
}

}  // namespace ibn::cli
