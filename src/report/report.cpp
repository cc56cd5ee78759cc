#include "ibn/report/report.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/analysis/analyze.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/csv.h"
#include "ibn/norm/spec.h"
#include "ibn/spec_string.h"
#include "ibn/sweep/sweep.h"
#include "ibn/train/train.h"

#ifndef IBN_SOURCE_DIR
#define IBN_SOURCE_DIR "."
#endif

namespace ibn::report {
namespace {

namespace fs = std::filesystem;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The last row of a run's metrics.csv, by column name.
std::map<std::string, double> final_metrics(const std::string& run) {
  std::ifstream in(run + "/metrics.csv");
  if (!in) throw UsageError(fmt::format("'{}' has no metrics.csv: did its training finish? ({})", run,
                                        train::run_status(run).summary));
  std::string header, line, last;
  std::getline(in, header);
  int64_t last_line = 0;
  for (int64_t number = 2; std::getline(in, line); ++number) {
    if (!line.empty()) {
      last = line;
      last_line = number;
    }
  }
  const std::vector<std::string> names = io::csv_fields(header), values = io::csv_fields(last);
  if (last_line == 0 || values.size() != names.size()) {
    throw DataError(fmt::format("'{}/metrics.csv' is malformed: {}", run,
                                last_line == 0 ? "no rows" : fmt::format("line {} has {} fields for {} columns", last_line,
                                                                         values.size(), names.size())));
  }
  std::map<std::string, double> out;
  for (size_t i = 0; i < names.size(); ++i) {
    out[names[i]] = io::csv_number(values[i], fmt::format("{}/metrics.csv:{} ({})", run, last_line, names[i]));
  }
  return out;
}

struct RunSummary {
  std::string dir, label, variant, lambda;  // lambda: empty for variance-centric norms
  int64_t seed = 0;
  std::map<std::string, double> metrics;
  analysis::Analysis analysis;
  std::vector<double> ib_total;  // per estimator, final epoch, Σ over layers
  double kappa = kNaN, nuisance = kNaN;
};

double metric(const RunSummary& r, const std::string& name) {
  const auto found = r.metrics.find(name);
  return found == r.metrics.end() ? kNaN : found->second;
}

struct Stat {
  double mean = kNaN, ci = kNaN;
  int n = 0;
};

Stat stat_of(const std::vector<double>& values) {
  Stat s;
  std::vector<double> v;
  for (double x : values) {
    if (!std::isnan(x)) v.push_back(x);
  }
  s.n = static_cast<int>(v.size());
  if (v.empty()) return s;
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.ci = t_quantile_95(s.n - 1) * std::sqrt(ss / static_cast<double>(v.size() - 1)) / std::sqrt(static_cast<double>(v.size()));
  }
  return s;
}

std::string num(double v, int digits = 10) { return std::isnan(v) ? "nan" : fmt::format("{:.{}g}", v, digits); }
std::string pm(const Stat& s, int decimals, bool latex) {
  if (std::isnan(s.mean)) return latex ? "--" : "—";
  if (std::isnan(s.ci)) return fmt::format("{:.{}f}", s.mean, decimals);
  return fmt::format("{:.{}f}{}{:.{}f}", s.mean, decimals, latex ? " $\\pm$ " : " ± ", s.ci, decimals);
}
std::string latex_escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '_' || c == '&' || c == '%' || c == '#') out += '\\';
    out += c;
  }
  return out;
}

RunSummary summarize(const std::string& dir) {
  RunSummary r;
  r.dir = dir;
  const auto config = train::read_run_config(dir);
  const std::string norm = config.count("norm") ? config.at("norm") : "";
  r.variant = norm.substr(0, norm.find(':'));
  try {
    const norm::NormSpec spec = norm::parse_norm_spec(norm);
    if (spec.is_ibnorm()) r.lambda = fmt::format("{}", spec.lambda);
  } catch (const UsageError&) {
    r.lambda.clear();  // "none" or a norm this build no longer knows: no λ
  }
  r.seed = config.count("seed") ? io::csv_integer(config.at("seed"), fmt::format("{}/config.ini (seed)", dir)) : 0;
  r.label = r.variant + (r.lambda.empty() ? "" : " λ=" + r.lambda);
  r.metrics = final_metrics(dir);
  r.analysis = analysis::read_analysis(dir);
  if (r.analysis.rows.empty()) throw UsageError(fmt::format("'{}/analysis.csv' has no rows", dir));
  const int64_t last = r.analysis.rows.back().epoch;
  // The representation the classifier reads: the last layer before the logits.
  std::string top = r.analysis.layers.back();
  if (top == "logits" && r.analysis.layers.size() > 1) top = r.analysis.layers[r.analysis.layers.size() - 2];
  for (const std::string& estimator : r.analysis.estimators) r.ib_total.push_back(analysis::ib_total(r.analysis, last, estimator));
  // κ and the nuisance ratio do not depend on the estimator: the first one's rows hold them.
  std::vector<double> kappas;
  for (const analysis::AnalysisRow& row : r.analysis.rows) {
    if (row.epoch != last || row.estimator != r.analysis.estimators.front()) continue;
    if (!std::isnan(row.kappa)) kappas.push_back(row.kappa);
    if (row.layer == top) r.nuisance = row.nuisance_ratio;
  }
  r.kappa = stat_of(kappas).mean;
  return r;
}

// Runs argv[0] (searched in PATH when it has no '/') with the arguments as they are, no shell
// between (paths and interpreter names are never parsed as commands), stdout and stderr into
// `log`. Returns the exit status, or -1 when the program could not be started or was killed.
int run_program(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // The log is written as the program runs (a live log, not an artefact): opened directly,
  // but never through a planted symlink.
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (log_fd < 0) throw std::runtime_error(fmt::format("cannot write '{}': {}", log, std::strerror(errno)));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid = 0;
  const int error = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  if (error != 0) {
    const std::string why = fmt::format("cannot run '{}': {}\n", argv[0], std::strerror(error));
    if (::write(log_fd, why.data(), why.size()) < 0) {
      // the status says it failed; the log line is a courtesy
    }
    status = -1;
  } else {
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  ::close(log_fd);
  return status;
}

std::string python_interpreter(const ReportOptions& options) {
  if (!options.python.empty()) return options.python;
  return fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

}  // namespace

void ReportOptions::set(const std::string& key, const std::string& value) {
  if (key == "python") {
    python = value;
  } else if (key == "figures") {
    if (value != "true" && value != "false") throw UsageError(fmt::format("report figures = '{}' must be true or false", value));
    figures = value == "true";
  } else {
    throw UsageError(fmt::format("unknown report option '{}' (python, figures)", key));
  }
}

double t_quantile_95(int dof) {
  static const double table[30] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                   2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                   2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (dof < 1) return kNaN;
  return dof <= 30 ? table[dof - 1] : 1.96;
}

std::string write_report(const std::string& target, const ReportOptions& options, std::ostream& log) {
  // The runs: every point of a sweep (its points.csv), or the one run.
  std::vector<std::string> dirs;
  std::map<std::string, std::string> extra_label;  // sweep grid keys other than norm/lambda/seed
  const bool is_sweep = fs::exists(target + "/points.csv");
  if (is_sweep) {
    std::ifstream in(target + "/points.csv");
    std::string header, line;
    std::getline(in, header);
    const std::vector<std::string> keys = io::csv_fields(header);
    if (keys.size() < 2 || keys[0] != "index" || keys[1] != "id") {
      throw DataError(fmt::format("'{}/points.csv' does not start with the columns index,id", target));
    }
    for (int64_t number = 2; std::getline(in, line); ++number) {
      if (line.empty()) continue;
      const std::vector<std::string> f = io::csv_fields(line);
      if (f.size() != keys.size() || !sweep::is_plain_point_id(f[1])) {
        throw DataError(fmt::format("'{}/points.csv':{} is malformed: expected {} fields with a point id second", target,
                                    number, keys.size()));
      }
      const std::string dir = target + "/points/" + f[1];
      if (!fs::exists(dir + "/done")) {
        throw UsageError(fmt::format("sweep point '{}' is not finished; run the sweep to the end first (ibn sweep ... --status)", f[1]));
      }
      std::string extra;
      for (size_t k = 2; k < keys.size() && k < f.size(); ++k) {
        if (keys[k] != "norm" && keys[k] != "lambda" && keys[k] != "seed") extra += fmt::format(" {}={}", keys[k], f[k]);
      }
      extra_label[dir] = extra;
      dirs.push_back(dir);
    }
  } else if (fs::exists(target + "/config.ini")) {
    dirs.push_back(target);
  } else {
    throw UsageError(fmt::format("'{}' is neither a sweep directory (points.csv) nor a run directory (config.ini)", target));
  }
  if (dirs.empty()) throw UsageError(fmt::format("sweep '{}' has no points", target));

  std::vector<RunSummary> runs;
  for (const std::string& dir : dirs) {
    runs.push_back(summarize(dir));
    runs.back().label += extra_label[dir];
  }
  const std::vector<std::string> estimators = runs.front().analysis.estimators;
  for (const RunSummary& r : runs) {
    if (r.analysis.estimators != estimators) {
      throw DataError(fmt::format("'{}' was analyzed with other estimators than '{}'; analyze them alike", r.dir, runs.front().dir));
    }
  }
  const auto config = train::read_run_config(runs.front().dir);
  const std::string data = config.count("data") ? config.at("data") : "?";
  const std::string model = config.count("model") ? config.at("model") : "?";

  // Settings in order of first appearance; seeds grouped under them.
  std::vector<std::string> labels;
  std::map<std::string, std::vector<const RunSummary*>> by_label;
  for (const RunSummary& r : runs) {
    if (!by_label.count(r.label)) labels.push_back(r.label);
    by_label[r.label].push_back(&r);
  }

  const std::string out = target + "/report";
  fs::create_directories(out + "/data");
  // Data for the figures (and for anyone's own plots).
  std::string runs_csv = "label,variant,lambda,seed,test_accuracy,test_loss,train_accuracy,kappa,nuisance_ratio";
  for (size_t k = 0; k < estimators.size(); ++k) runs_csv += fmt::format(",ib_total_{}", k);
  runs_csv += "\n";
  std::string plane_csv = "label,seed,estimator,epoch,layer,layer_index,I_XT,I_TY\n";
  for (const RunSummary& r : runs) {
    runs_csv += fmt::format("{},{},{},{},{},{},{},{},{}", io::csv_field(r.label), r.variant, r.lambda, r.seed, num(metric(r, "test_accuracy")),
                            num(metric(r, "test_loss")), num(metric(r, "train_accuracy")), num(r.kappa), num(r.nuisance));
    for (double ib : r.ib_total) runs_csv += "," + num(ib);
    runs_csv += "\n";
    if (&r != by_label[r.label].front()) continue;  // information planes: the first seed of each setting
    for (const analysis::AnalysisRow& row : r.analysis.rows) {
      const size_t layer_index = std::find(r.analysis.layers.begin(), r.analysis.layers.end(), row.layer) - r.analysis.layers.begin();
      const size_t k = std::find(estimators.begin(), estimators.end(), row.estimator) - estimators.begin();
      plane_csv += fmt::format("{},{},{},{},{},{},{},{}\n", io::csv_field(r.label), r.seed, k, row.epoch, row.layer, layer_index, num(row.i_xt),
                               num(row.i_ty));
    }
  }
  io::write_file_atomically(out + "/data/runs.csv", runs_csv);
  io::write_file_atomically(out + "/data/info_plane.csv", plane_csv);
  std::string meta = fmt::format("data={}\nmodel={}\nbeta={}\nsource={}\n", data, model, runs.front().analysis.beta, target);
  for (size_t k = 0; k < estimators.size(); ++k) meta += fmt::format("estimator_{}={}\n", k, estimators[k]);
  io::write_file_atomically(out + "/data/meta.txt", meta);

  // The comparison table: mean ± 95 % interval over seeds, per setting.
  std::string md = "| setting | seeds | test accuracy | test loss (nats) |";
  std::string tex = "\\begin{tabular}{lr" + std::string(4 + estimators.size(), 'c') + "}\n\\toprule\nsetting & seeds & test acc. & test loss";
  std::string table_csv = "label,variant,lambda,seeds,test_accuracy_mean,test_accuracy_ci95,test_loss_mean,test_loss_ci95";
  for (size_t k = 0; k < estimators.size(); ++k) {
    md += fmt::format(" IB total, {} |", estimators[k]);
    tex += fmt::format(" & IB ({})", latex_escape(estimators[k].substr(0, estimators[k].find(':'))));
    table_csv += fmt::format(",ib_total_{}_mean,ib_total_{}_ci95", k, k);
  }
  md += " κ | nuisance ratio |\n|---|---|---|---|" + std::string("---|") + [&] {
    std::string s;
    for (size_t k = 0; k < estimators.size(); ++k) s += "---|";
    return s;
  }() + "---|\n";
  tex += " & $\\kappa$ & nuisance \\\\\n\\midrule\n";
  table_csv += ",kappa_mean,kappa_ci95,nuisance_ratio_mean,nuisance_ratio_ci95\n";
  for (const std::string& label : labels) {
    const auto& group = by_label[label];
    const auto collect = [&](auto get) {
      std::vector<double> v;
      for (const RunSummary* r : group) v.push_back(get(*r));
      return stat_of(v);
    };
    const Stat acc = collect([](const RunSummary& r) { return metric(r, "test_accuracy"); });
    const Stat loss = collect([](const RunSummary& r) { return metric(r, "test_loss"); });
    const Stat kappa = collect([](const RunSummary& r) { return r.kappa; });
    const Stat nuisance = collect([](const RunSummary& r) { return r.nuisance; });
    md += fmt::format("| {} | {} | {} | {} |", label, group.size(), pm(acc, 4, false), pm(loss, 4, false));
    tex += fmt::format("{} & {} & {} & {}", latex_escape(label), group.size(), pm(acc, 4, true), pm(loss, 4, true));
    table_csv += fmt::format("{},{},{},{},{},{},{},{}", io::csv_field(label), group.front()->variant, group.front()->lambda,
                             group.size(), num(acc.mean), num(acc.ci), num(loss.mean), num(loss.ci));
    for (size_t k = 0; k < estimators.size(); ++k) {
      const Stat ib = collect([k](const RunSummary& r) { return r.ib_total[k]; });
      md += fmt::format(" {} |", pm(ib, 3, false));
      tex += fmt::format(" & {}", pm(ib, 3, true));
      table_csv += fmt::format(",{},{}", num(ib.mean), num(ib.ci));
    }
    md += fmt::format(" {} | {} |\n", pm(kappa, 3, false), pm(nuisance, 3, false));
    tex += fmt::format(" & {} & {} \\\\\n", pm(kappa, 3, true), pm(nuisance, 3, true));
    table_csv += fmt::format(",{},{},{},{}\n", num(kappa.mean), num(kappa.ci), num(nuisance.mean), num(nuisance.ci));
  }
  tex += "\\bottomrule\n\\end{tabular}\n";
  io::write_file_atomically(out + "/table_comparison.tex", tex);
  io::write_file_atomically(out + "/data/table_comparison.csv", table_csv);

  // Figures: scripts/plot_report.py reads data/ and writes PNG and PDF beside report.md.
  std::vector<std::string> figures;
  if (options.figures) {
    const char* override_script = std::getenv("IBN_PLOT_SCRIPT");
    const std::string script = override_script != nullptr ? override_script : std::string(IBN_SOURCE_DIR) + "/scripts/plot_report.py";
    if (!fs::exists(script)) throw std::runtime_error(fmt::format("the plotting script '{}' is missing (set IBN_PLOT_SCRIPT)", script));
    const int status = run_program({python_interpreter(options), script, out}, out + "/data/plot.log");
    if (status != 0) {
      std::ifstream plot_log(out + "/data/plot.log");
      std::string line, last;
      while (std::getline(plot_log, line)) {
        if (!line.empty()) last = line;
      }
      throw std::runtime_error(fmt::format("drawing the figures failed ({}); is python3-matplotlib installed? "
                                           "(report option figures=false skips them)", last.empty() ? "no output" : last));
    }
    std::ifstream listed(out + "/data/figures.txt");
    for (std::string line; std::getline(listed, line);) {
      if (!line.empty()) figures.push_back(line);
    }
  }

  std::set<int64_t> seeds;
  for (const RunSummary& r : runs) seeds.insert(r.seed);
  std::string report = fmt::format("# Report: {}\n\n", fs::path(target).filename().string().empty() ? target : fs::path(target).filename().string());
  report += fmt::format("- source: `{}` ({})\n- data: `{}`\n- model: `{}`\n- runs: {} ({} settings × seeds {})\n", target,
                        is_sweep ? "sweep" : "run", data, model, runs.size(), labels.size(), fmt::join(seeds, ", "));
  for (const std::string& e : estimators) report += fmt::format("- estimator: `{}`\n", e);
  report += fmt::format("- IB value: IB_l = I(T_l;Y) − β·I(T_(l−1);T_l), T_0 = X, β = {}; totals sum the layers at the final epoch\n",
                        runs.front().analysis.beta);
  report += "- κ: mean variance contraction over the normalization sites at the final epoch; nuisance ratio "
            "tr(Σ_within)/tr(Σ_total) of the last hidden layer; intervals: 95 % Student t over seeds\n\n";
  report += "## Comparison\n\n" + md + "\nLaTeX (booktabs): `table_comparison.tex`; numbers: `data/table_comparison.csv`.\n\n";
  if (!figures.empty()) report += "## Figures\n\n";
  for (const std::string& line : figures) {
    const size_t tab = line.find('\t');
    const std::string file = line.substr(0, tab), caption = tab == std::string::npos ? "" : line.substr(tab + 1);
    report += fmt::format("### {}\n\n![{}]({}.png)\n\n{} (PDF: `{}.pdf`)\n\n", caption, caption, file, caption, file);
  }
  io::write_file_atomically(out + "/report.md", report);
  log << fmt::format("report: {} settings, {} runs, {} figures\n", labels.size(), runs.size(), figures.size());
  return out + "/report.md";
}

}  // namespace ibn::report
