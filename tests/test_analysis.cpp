// Analysis, sweeps and reports: the IB quantities of a store with known structure, the grid of
// an experiment file (λ only for IBNorm variants), shards, and the t quantiles of the intervals.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <fstream>
#include <iterator>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/analysis/analyze.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/hdf5.h"
#include "ibn/io/ini.h"
#include "ibn/report/report.h"
#include "ibn/sweep/sweep.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using ibn::test::throws_usage_error;

std::string temp_dir(const std::string& name) { return ibn::test::scratch_path("analysis", name); }

// A store whose layers are known functions of X ∈ {0, 1, 2, 3} (balanced), Y = X mod 2:
// "copy" = X, "double" = 2·copy, "constant" = 0. With 30 uniform bins the four values fall in
// four bins, so I(X;copy) = H(X) = ln 4, I(copy;Y) = H(Y) = ln 2, I(copy;double) = ln 4, and
// everything about the constant layer is 0. Nuisance ratio of copy: within-class variance 1
// over total variance 1.25 = 0.8.
std::string known_run(const std::string& chain = "copy,double,constant") {
  const std::string run = temp_dir("known");
  fs::create_directories(run);
  const auto x = torch::arange(400, torch::kLong).remainder(4);
  const auto copy = x.to(torch::kFloat).unsqueeze(1);
  ibn::io::write_file_atomically(run + "/config.ini", "epochs = 1\nnorm = layernorm\nseed = 0\n");
  ibn::io::write_datasets(run + "/activations.h5",
                          {{"/data/inputs", copy, {}},
                           {"/data/labels", x.remainder(2), {}},
                           {"/data/split", torch::zeros({400}, torch::kLong), {}},
                           {"/meta/dumped_epochs", torch::tensor({1}, torch::kLong), {}},
                           {"/epochs/1/copy", copy, {}},
                           {"/epochs/1/double", copy * 2, {}},
                           {"/epochs/1/constant", torch::zeros({400, 2}), {}},
                           {"/contraction/1/copy", torch::tensor({0.75}, torch::kDouble), {}}},
                          {{"layers", std::string("copy,double,constant")}, {"chain", chain}, {"complete", int64_t{1}}});
  return run;
}

// Options for a quiet analysis of `run` with `estimators` and `beta`.
ibn::analysis::AnalyzeConfig quiet_analysis(const std::string& run, std::vector<std::string> estimators, double beta) {
  ibn::analysis::AnalyzeConfig c;
  c.run = run;
  c.estimators = std::move(estimators);
  c.beta = beta;
  c.quiet = true;
  return c;
}

TEST(Analysis, KnownStructureGivesTheExpectedInformation) {
  const std::string run = known_run();
  std::ostringstream log;
  const ibn::analysis::Analysis a = ibn::analysis::analyze(quiet_analysis(run, {"binning:bins=30"}, 0.5), log);
  ASSERT_EQ(a.rows.size(), 3u);
  const double ln2 = std::log(2.0), ln4 = std::log(4.0);
  const auto& copy = a.rows[0];
  const auto& twice = a.rows[1];
  const auto& constant = a.rows[2];
  EXPECT_EQ(copy.layer, "copy");
  EXPECT_NEAR(copy.i_xt, ln4, 1e-9);
  EXPECT_NEAR(copy.i_ty, ln2, 1e-9);
  EXPECT_NEAR(copy.i_prev, ln4, 1e-9);  // T_0 = X
  EXPECT_NEAR(copy.ib, ln2 - 0.5 * ln4, 1e-9);
  EXPECT_NEAR(copy.nuisance_ratio, 0.8, 1e-9);
  EXPECT_DOUBLE_EQ(copy.kappa, 0.75);
  EXPECT_NEAR(twice.i_prev, ln4, 1e-9);
  EXPECT_TRUE(std::isnan(twice.kappa));  // not a normalization site
  EXPECT_NEAR(constant.i_xt, 0, 1e-12);
  EXPECT_NEAR(constant.i_ty, 0, 1e-12);
  EXPECT_NEAR(constant.i_prev, 0, 1e-12);
  // The files: analysis.h5 reads back to the same rows, β and parameters.
  const ibn::analysis::Analysis back = ibn::analysis::read_analysis(run);
  ASSERT_EQ(back.rows.size(), 3u);
  EXPECT_EQ(back.layers, (std::vector<std::string>{"copy", "double", "constant"}));
  EXPECT_EQ(back.chain, back.layers);
  EXPECT_EQ(back.beta, 0.5);
  EXPECT_EQ(back.units, "nats");
  EXPECT_EQ(back.estimators, a.estimators);
  EXPECT_DOUBLE_EQ(back.rows[1].ib, twice.ib);
  ASSERT_EQ(back.totals.size(), 1u);
  EXPECT_NEAR(back.totals[0].i_ty, copy.i_ty + twice.i_ty + constant.i_ty, 1e-12);
  EXPECT_NEAR(back.totals[0].i_prev, copy.i_prev + twice.i_prev + constant.i_prev, 1e-12);
  // The resolution table: the last hidden representation ("double"), six estimator settings.
  EXPECT_EQ(back.sensitivity_layer, "double");
  ASSERT_EQ(back.sensitivity.size(), ibn::analysis::sensitivity_estimators().size());
  EXPECT_NEAR(back.sensitivity[0].i_xt, ln4, 1e-9);  // binning:bins=10 still separates 0, 2, 4, 6
  EXPECT_NEAR(ibn::io::read_dataset(run + "/analysis.h5", "/rows/I_TY")[0].item<double>(), ln2, 1e-9);
  EXPECT_EQ(std::get<double>(ibn::io::read_attribute(run + "/analysis.h5", "/", "beta")), 0.5);
  EXPECT_NEAR(ibn::io::read_dataset(run + "/analysis.h5", "/totals/IB")[0].item<double>(), copy.ib + twice.ib + constant.ib, 1e-12);
  fs::remove_all(run);
}

// The IB sum runs over the chain only: with chain copy -> constant, "double" is analyzed (I(X;T)
// and I(T;Y)) but has no I(T_prev;T) or IB, and constant's predecessor is copy.
TEST(Analysis, SumRunsOverTheChainOnly) {
  const std::string run = known_run("copy,constant");
  ibn::analysis::AnalyzeConfig c = quiet_analysis(run, {"binning:bins=30", "kde:var=0.1"}, 1.0);
  c.layers = "all";
  std::ostringstream log;
  const ibn::analysis::Analysis a = ibn::analysis::analyze(c, log);
  EXPECT_EQ(a.chain, (std::vector<std::string>{"copy", "constant"}));
  EXPECT_EQ(a.layers, (std::vector<std::string>{"copy", "double", "constant"}));
  ASSERT_EQ(a.rows.size(), 6u);
  for (const auto& estimator : a.estimators) {
    double sum = 0;
    for (const auto& r : a.rows) {
      if (r.estimator != estimator) continue;
      EXPECT_EQ(r.in_chain, r.layer != "double");
      if (r.layer == "double") {
        EXPECT_TRUE(std::isnan(r.i_prev) && std::isnan(r.ib));
        EXPECT_GT(r.i_xt, 0.5);
      } else {
        sum += r.ib;
      }
    }
    EXPECT_NEAR(ibn::analysis::ib_total(a, 1, estimator), sum, 1e-12);
  }
  // Chosen by the option instead of the store: forward order, each once.
  c.chain = "double,copy";
  EXPECT_TRUE(throws_usage_error([&] { ibn::analysis::analyze(c, log); }, "forward order"));
  c.chain = "copy,missing";
  EXPECT_TRUE(throws_usage_error([&] { ibn::analysis::analyze(c, log); }, "no layer 'missing'"));
  c.chain = "copy,double";
  c.layers = "chain";
  EXPECT_EQ(ibn::analysis::analyze(c, log).layers, (std::vector<std::string>{"copy", "double"}));
  fs::remove_all(run);
}

// A finished, analyzed run of a synthetic store: 400 samples (the last 100 the test split, 60 %
// of them class 0), a final test accuracy `accuracy`, a training loss that is flat at the end
// unless `still_learning`.
std::string synthetic_run(const std::string& dir, double accuracy, bool still_learning, int64_t seed) {
  fs::create_directories(dir);
  const auto x = torch::arange(400, torch::kLong).remainder(4);
  const auto labels = torch::cat({x.slice(0, 0, 300).remainder(2), torch::tensor({0, 0, 0, 1, 1}, torch::kLong).repeat({20})});
  const auto copy = x.to(torch::kFloat).unsqueeze(1) + 0.01 * static_cast<double>(seed);
  const auto epochs = torch::arange(21, torch::kDouble);
  const auto train_loss = still_learning ? 0.7 - 0.03 * epochs : torch::full({21}, 0.2, torch::kDouble);
  ibn::io::write_file_atomically(dir + "/config.ini", "epochs = 20\nnorm = layernorm\nseed = " + std::to_string(seed) + "\n");
  ibn::io::write_datasets(dir + "/activations.h5",
                          {{"/data/inputs", copy, {}},
                           {"/data/labels", labels, {}},
                           {"/data/split", torch::cat({torch::zeros({300}, torch::kLong), torch::ones({100}, torch::kLong)}), {}},
                           {"/meta/dumped_epochs", torch::tensor({20}, torch::kLong), {}},
                           {"/metrics/epoch", epochs, {}},
                           {"/metrics/train_loss", train_loss, {}},
                           {"/metrics/train_accuracy", torch::full({21}, accuracy, torch::kDouble), {}},
                           {"/metrics/test_loss", torch::full({21}, 0.3, torch::kDouble), {}},
                           {"/metrics/test_accuracy", torch::full({21}, accuracy, torch::kDouble), {}},
                           {"/epochs/20/copy", copy, {}},
                           {"/epochs/20/logits", copy * 2, {}},
                           {"/contraction/20/norm1", torch::tensor({0.5}, torch::kDouble), {}}},
                          {{"layers", std::string("copy,logits")}, {"chain", std::string("copy,logits")},
                           {"seed", seed}, {"complete", int64_t{1}}});
  std::ostringstream log;
  ibn::analysis::analyze(quiet_analysis(dir, {"binning:bins=30"}, 0.25), log);
  return dir;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// One setting at chance (accuracy 0.6 = the majority rate of the test split) and one still
// learning: both flagged, excluded from the tables, the β curve and the λ figures' data, and
// counted; --include-flagged keeps them. β is the analysis' own (0.25), not 1.
TEST(Report, FlaggedSettingsAreExcludedAndCounted) {
  const std::string sweep = temp_dir("flags");
  fs::remove_all(sweep);
  std::vector<ibn::report::ReportRun> runs;
  const struct {
    const char* norm;
    const char* lambda;
    double accuracy;
    bool still_learning;
  } settings[] = {{"layernorm", "", 0.95, false}, {"ibnorm-s", "2", 0.6, false}, {"ibnorm-t", "2", 0.93, false},
                  {"ibnorm-t", "4", 0.9, true}};
  for (const auto& s : settings) {
    for (int64_t seed = 0; seed < 3; ++seed) {
      const std::string dir = fmt::format("{}/points/{}{}_seed{}", sweep, s.norm, s.lambda, seed);
      synthetic_run(dir, s.accuracy + 0.01 * static_cast<double>(seed), s.still_learning, seed);
      runs.push_back({dir, {{"norm", s.norm}, {"lambda", s.lambda}, {"seed", std::to_string(seed)}}});
    }
  }
  ibn::report::ReportOptions options;
  options.figures = false;
  std::ostringstream log;
  const std::string md_path = ibn::report::write_report(sweep, runs, options, log);
  const std::string md = file_text(md_path);
  EXPECT_NE(md.find("| ibnorm-s λ=2 | 0 (3 excluded) |"), std::string::npos) << md;
  EXPECT_NE(md.find("| ibnorm-t λ=4 | 0 (3 excluded) |"), std::string::npos);
  EXPECT_NE(md.find("| ibnorm-t λ=2 | 3 |"), std::string::npos);
  EXPECT_NE(md.find("6 flagged"), std::string::npos);
  EXPECT_NE(md.find("β = 0.25"), std::string::npos);
  EXPECT_EQ(md.find("β = 1;"), std::string::npos);
  EXPECT_NE(md.find("Holm"), std::string::npos);
  const std::string runs_csv = file_text(sweep + "/report/data/runs.csv");
  EXPECT_NE(runs_csv.find(",flags"), std::string::npos);
  EXPECT_NE(runs_csv.find(",chance,"), std::string::npos);
  EXPECT_NE(runs_csv.find(",unconverged,"), std::string::npos);
  // The figures' data: no statistics for the excluded settings, so no β curve or λ point.
  const std::string h5 = sweep + "/report/data/report.h5";
  const auto used = ibn::io::read_dataset(h5, "/settings/used_runs");
  EXPECT_TRUE(used.equal(torch::tensor({3, 0, 3, 0}, torch::kLong)));
  const auto curve = ibn::io::read_dataset(h5, "/beta/0/mean");
  ASSERT_EQ(curve.size(0), 4);
  EXPECT_TRUE(curve[1].isnan().all().item<bool>());
  EXPECT_TRUE(curve[3].isnan().all().item<bool>());
  EXPECT_FALSE(curve[0].isnan().any().item<bool>());
  EXPECT_TRUE(std::isnan(ibn::io::read_dataset(h5, "/settings/IB_0/mean")[1].item<double>()));
  EXPECT_TRUE(std::isnan(ibn::io::read_dataset(h5, "/settings/acc/mean")[1].item<double>()));
  EXPECT_EQ(std::get<double>(ibn::io::read_attribute(h5, "/", "beta")), 0.25);
  // Kept on request.
  options.include_flagged = true;
  ibn::report::write_report(sweep, runs, options, log);
  EXPECT_TRUE(ibn::io::read_dataset(h5, "/settings/used_runs").equal(torch::tensor({3, 3, 3, 3}, torch::kLong)));
  EXPECT_FALSE(ibn::io::read_dataset(h5, "/beta/0/mean")[1].isnan().any().item<bool>());
  // A baseline that is not a setting is named.
  options.baseline = "batchnorm";
  EXPECT_TRUE(throws_usage_error([&] { ibn::report::write_report(sweep, runs, options, log); }, "--baseline 'batchnorm' is none"));
  fs::remove_all(sweep);
}

TEST(Analysis, NuisanceRatioMatchesItsDefinition) {
  torch::manual_seed(3);
  const auto t = torch::randn({300, 4}, torch::kDouble);
  const auto y = torch::randint(0, 3, {300}, torch::kLong);
  double within = 0;
  for (int64_t c = 0; c < 3; ++c) {
    const auto members = t.index_select(0, y.eq(c).nonzero().squeeze(1));
    within += (members - members.mean(0)).pow(2).sum().item<double>();
  }
  const double total = (t - t.mean(0)).pow(2).sum().item<double>();
  EXPECT_NEAR(ibn::analysis::nuisance_ratio(t, y), within / total, 1e-12);
}

TEST(Analysis, RefusesRunsThatAreNotComplete) {
  const std::string run = temp_dir("incomplete");
  fs::create_directories(run + "/activations.parts");
  ibn::io::write_file_atomically(run + "/config.ini", "epochs = 5\n");
  ibn::analysis::AnalyzeConfig c;
  c.run = run;
  EXPECT_TRUE(throws_usage_error([&] { ibn::analysis::analyze(c, std::cerr); }, "incomplete, no checkpoint yet"));
  c.run = run + "/nowhere";
  EXPECT_TRUE(throws_usage_error([&] { ibn::analysis::analyze(c, std::cerr); }, "is not a run directory"));
  fs::remove_all(run);
}

std::string write_experiment(const std::string& name, const std::string& text) {
  const std::string path = temp_dir(name) + ".ini";
  ibn::io::write_file_atomically(path, text);
  return path;
}

// The one .ini reader: sections, comments, trimming; a malformed line is named by origin and line.
TEST(Ini, ReadsTheProgramOptionsDialect) {
  const std::vector<ibn::io::IniEntry> e =
      ibn::io::parse_ini("top = 1\n# comment\n[train]\n  lr = 0.01   # rate\n\n[analyze]\nestimator = kde:var=0.1\n", "x.ini");
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].section, "");
  EXPECT_EQ(e[0].key, "top");
  EXPECT_EQ(e[1].section, "train");
  EXPECT_EQ(e[1].value, "0.01");
  EXPECT_EQ(e[1].line, 4);
  EXPECT_EQ(e[2].value, "kde:var=0.1");
  EXPECT_TRUE(throws_usage_error([] { ibn::io::parse_ini("[train]\nlr 0.01\n", "x.ini"); }, "x.ini:2: expected 'key = value'"));
  EXPECT_TRUE(throws_usage_error([] { ibn::io::parse_ini("[train\n", "x.ini"); }, "x.ini:1: malformed section"));
  EXPECT_EQ(ibn::io::ini_values("epochs = 5\nnorm = ibnorm-t:lambda=2\n", "config.ini").at("norm"), "ibnorm-t:lambda=2");
}

TEST(Sweep, LambdaJoinsIbnormVariantsOnly) {
  const std::string file = write_experiment("grid", "[grid]\nnorm = layernorm | ibnorm-t\nlambda = 0.5 | 2\nseed = 0 | 1\n"
                                                    "[train]\nepochs = 3\n[analyze]\nestimator = binning\n");
  const ibn::sweep::Sweep s = ibn::sweep::load_sweep(file, "");
  std::vector<std::string> ids;
  for (const auto& p : s.points) ids.push_back(p.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"layernorm_seed0", "layernorm_seed1", "ibnorm-t_lambda0.5_seed0",
                                           "ibnorm-t_lambda0.5_seed1", "ibnorm-t_lambda2_seed0", "ibnorm-t_lambda2_seed1"}));
  EXPECT_NE(s.points[4].ini().find("norm = ibnorm-t:lambda=2\n"), std::string::npos);
  EXPECT_NE(s.points[4].ini().find("seed = 0\n"), std::string::npos);
  EXPECT_NE(s.points[0].ini().find("norm = layernorm\n"), std::string::npos);
  EXPECT_NE(s.points[0].ini().find("[analyze]\nestimator = binning\n"), std::string::npos);
  EXPECT_EQ(s.out, "runs/" + fs::path(file).stem().string());
  fs::remove(file);
}

TEST(Sweep, KappaJoinsIbnormVariantsOnly) {
  const std::string file = write_experiment("kappa", "[grid]\nnorm = layernorm | dyt | ibnorm-s:order=first\nkappa = 0.4 | 0.7\n"
                                                     "[train]\nepochs = 3\n[analyze]\nestimator = binning\n");
  const ibn::sweep::Sweep s = ibn::sweep::load_sweep(file, "");
  std::vector<std::string> ids;
  for (const auto& p : s.points) ids.push_back(p.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"layernorm", "dyt", "ibnorm-s-order-first_kappa0.4", "ibnorm-s-order-first_kappa0.7"}));
  EXPECT_NE(s.points[3].ini().find("norm = ibnorm-s:order=first:kappa=0.7\n"), std::string::npos) << s.points[3].ini();
  EXPECT_NE(s.points[1].ini().find("norm = dyt\n"), std::string::npos);
  const std::string both = write_experiment("both", "[grid]\nnorm = ibnorm-s\nkappa = 0.4\nlambda = 1\n");
  EXPECT_TRUE(throws_usage_error([&] { ibn::sweep::load_sweep(both, ""); }, "both lambda and kappa"));
  for (const auto& f : {file, both}) fs::remove(f);
}

// [tune]: every setting (the grid point without its seed) gets the same runs: each rate x each
// tuning seed, on a validation split, no dumps; the grid's seeds are not among the tuning seeds.
TEST(Sweep, TuneGivesEverySettingTheSameBudget) {
  const std::string file = write_experiment("tune", "[grid]\nnorm = layernorm | ibnorm-t\nlambda = 1\nseed = 0 | 1 | 2\n"
                                                    "[train]\nepochs = 9\ndump-epochs = log:3\n[analyze]\nestimator = binning\n"
                                                    "[tune]\nlr = 0.001 | 0.01\nseeds = 2\nvalidation = 0.25\nepochs = 4\n");
  const ibn::sweep::Sweep s = ibn::sweep::load_sweep(file, "out");
  ASSERT_TRUE(s.tune.has_value());
  ASSERT_EQ(s.points.size(), 6u);
  ASSERT_EQ(s.tune_points.size(), 2u * 2u * 2u);  // settings x rates x tuning seeds
  std::map<std::string, int> per_setting;
  std::set<std::string> ids;
  for (const auto& t : s.tune_points) {
    ++per_setting[t.setting];
    ids.insert(t.id);
    EXPECT_EQ(t.group, "tune");
    EXPECT_EQ(ibn::sweep::point_directory(s, t), "out/tune/" + t.id);
    const std::map<std::string, std::string> o = ibn::io::ini_values(t.ini(), "tune point");
    EXPECT_EQ(o.at("validation"), "0.25");
    EXPECT_EQ(o.at("dump-epochs"), "none");
    EXPECT_EQ(o.at("epochs"), "4");
    EXPECT_GE(std::stoll(o.at("seed")), ibn::sweep::kFirstTuningSeed);
    EXPECT_TRUE(o.at("lr") == "0.001" || o.at("lr") == "0.01");
    EXPECT_EQ(t.ini().find("[analyze]"), std::string::npos);  // tuning runs are not analyzed
  }
  EXPECT_EQ(ids.size(), s.tune_points.size());
  EXPECT_EQ(per_setting, (std::map<std::string, int>{{"layernorm", 4}, {"ibnorm-t_lambda1", 4}}));
  // The grid's points have no rate until tuning chooses one.
  for (const auto& p : s.points) EXPECT_EQ(ibn::io::ini_values(p.ini(), "point").count("lr"), 0u);
  EXPECT_EQ(s.points[0].setting, "layernorm");
  EXPECT_EQ(s.points[5].setting, "ibnorm-t_lambda1");
  fs::remove(file);
}

TEST(Sweep, TuningSeedsAndSettingKeysStayApart) {
  const std::string clash = write_experiment("clash", "[grid]\nseed = 0 | 1000\n[tune]\nlr = 0.1 | 0.2\n");
  EXPECT_TRUE(throws_usage_error([&] { ibn::sweep::load_sweep(clash, ""); }, "seed 1000 is also a tuning seed (1000–1000)"));
  const std::string fine = write_experiment("fine", "[grid]\nseed = 0 | 1002\n[tune]\nlr = 0.1\nseeds = 2\n");
  EXPECT_NO_THROW(ibn::sweep::load_sweep(fine, ""));
  // Settings that read the same ("1e-2" and "1e+2" both read 1e-2) keep distinct keys: each
  // gets its own tuned rate.
  const std::string same = write_experiment("same", "[grid]\nweight-decay = 1e-2 | 1e+2\nseed = 0 | 1\n[tune]\nlr = 0.1 | 0.2\n");
  const ibn::sweep::Sweep s = ibn::sweep::load_sweep(same, "");
  ASSERT_EQ(s.points.size(), 4u);
  EXPECT_EQ(s.points[0].setting, s.points[1].setting);
  EXPECT_NE(s.points[0].setting, s.points[2].setting);
  EXPECT_EQ(s.tune_points.size(), 4u);
  for (const auto& f : {clash, fine, same}) fs::remove(f);
}

// choose_rates on tuning runs made by hand: the lowest mean final validation loss (or the
// highest accuracy) wins; a diverged run rules its rate out; a fault or a missing run is an error.
TEST(Sweep, ChooseRatesReadsTheTuningRuns) {
  const std::string out = temp_dir("choose");
  const std::string file = write_experiment("choose", "[grid]\nnorm = layernorm | ibnorm-t\nseed = 0\n"
                                                      "[tune]\nlr = 0.1 | 0.2 | 0.3\nseeds = 2\n");
  ibn::sweep::Sweep s = ibn::sweep::load_sweep(file, out);
  ASSERT_EQ(s.tune_points.size(), 12u);
  // Final validation (loss, accuracy) per setting and rate, for the two tuning seeds.
  const std::map<std::string, std::vector<std::pair<double, double>>> finals{
      {"layernorm_lr0.1", {{0.50, 0.80}, {0.70, 0.80}}},  // mean loss 0.60
      {"layernorm_lr0.2", {{0.40, 0.70}, {0.60, 0.70}}},  // 0.50: lowest loss
      {"layernorm_lr0.3", {{0.55, 0.90}, {0.55, 0.90}}},  // 0.55: highest accuracy
      {"ibnorm-t_lr0.1", {{0.90, 0.60}, {0.90, 0.60}}},
      {"ibnorm-t_lr0.2", {{0.30, 0.95}, {0.0, 0.0}}},  // its second run diverges
      {"ibnorm-t_lr0.3", {{0.80, 0.65}, {0.80, 0.65}}},
  };
  for (const auto& t : s.tune_points) {
    const std::string dir = ibn::sweep::point_directory(s, t);
    fs::create_directories(dir);
    const std::string prefix = t.id.substr(0, t.id.rfind("_seed"));
    const int k = t.id.back() - '0';
    if (prefix == "ibnorm-t_lr0.2" && k == 1) {
      ibn::io::write_file_atomically(dir + "/failed", "train: ibn: error: the training loss became NaN at epoch 3\n");
      continue;
    }
    const auto [loss, accuracy] = finals.at(prefix)[k];
    ibn::io::write_datasets(dir + "/activations.h5",
                            {{"/metrics/test_loss", torch::tensor({2.0, loss}, torch::kDouble), {}},
                             {"/metrics/test_accuracy", torch::tensor({0.1, accuracy}, torch::kDouble), {}}},
                            {});
    ibn::io::write_file_atomically(dir + "/done", "1 s\n");
  }
  ibn::sweep::Tuning t = ibn::sweep::choose_rates(s);
  ASSERT_EQ(t.settings.size(), 2u);
  EXPECT_EQ(t.settings[0].chosen, "0.2");
  EXPECT_NEAR(t.settings[0].rates[0].validation_loss, 0.60, 1e-12);
  EXPECT_EQ(t.settings[1].chosen, "0.3");  // 0.2 had the lowest loss, but one of its runs diverged
  EXPECT_EQ(t.settings[1].rates[1].diverged, 1);
  EXPECT_EQ(t.settings[1].rates[1].finished, 1);
  ibn::sweep::apply_rates(s, t);
  EXPECT_EQ(ibn::io::ini_values(s.points[1].ini(), "point").at("lr"), "0.3");
  s.tune->select = "accuracy";
  EXPECT_EQ(ibn::sweep::choose_rates(s).settings[0].chosen, "0.3");
  // A fault is not a divergence: an error naming the point, until the sweep retries it.
  const std::string faulty = ibn::sweep::point_directory(s, s.tune_points[0]);
  fs::remove(faulty + "/done");
  ibn::io::write_file_atomically(faulty + "/failed", "train: killed by signal 9\n");
  EXPECT_TRUE(throws_usage_error([&] { ibn::sweep::choose_rates(s); }, "failed: train: killed by signal 9; running the sweep again"));
  fs::remove(faulty + "/failed");
  EXPECT_TRUE(throws_usage_error([&] { ibn::sweep::choose_rates(s); }, "has not run yet"));
  fs::remove_all(out);
  fs::remove(file);
}

TEST(Sweep, MalformedTuneSectionsAreNamed) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"[grid]\nseed = 0\n[train]\nlr = 0.1\n[tune]\nlr = 0.1 | 0.2\n", "lr is in [train] and [tune]"},
      {"[grid]\nlr = 0.1 | 0.2\n[tune]\nlr = 0.1 | 0.2\n", "lr is in [grid] and [tune]"},
      {"[grid]\nseed = 0\n[tune]\nseeds = 2\n", "[tune] needs lr ="},
      {"[grid]\nseed = 0\n[tune]\nlr = 0.1 | 0.1\n", ":4: [tune] lr = '0.1 | 0.1' names a rate twice"},
      {"[grid]\nseed = 0\n[tune]\nlr = 0.1\nseeds = 0\n", ":5: [tune] seeds = '0' must be a whole number in [1, 100]"},
      {"[grid]\nseed = 0\n[tune]\nlr = 0.1\nvalidation = 1\n", "validation = '1' must be a fraction in (0, 1)"},
      {"[grid]\nseed = 0\n[tune]\nlr = 0.1\nselect = f1\n", "select = 'f1' must be loss or accuracy"},
      {"[grid]\nseed = 0\n[tune]\nlr = 0.1\nrates = 2\n", "unknown key 'rates' (lr, seeds, validation, epochs, select)"},
      {"[grid]\nseed = 0\n[tune]\nlr = 0.1\nlr = 0.2\n", ":5: [tune] 'lr' is given twice"},
  };
  for (const auto& [text, error] : cases) {
    const std::string file = write_experiment("badtune", text);
    EXPECT_TRUE(throws_usage_error([&] { ibn::sweep::load_sweep(file, ""); }, error)) << text;
    fs::remove(file);
  }
}

TEST(Sweep, ShardsCoverEveryPointOnce) {
  const std::string file = write_experiment("shards", "[grid]\nseed = 0 | 1 | 2 | 3 | 4 | 5 | 6\nlr = 0.1 | 0.01\n");
  const ibn::sweep::Sweep s = ibn::sweep::load_sweep(file, "out");
  std::vector<int> seen(s.points.size(), 0);
  for (int64_t i = 0; i < 3; ++i) {
    const auto [shard, shards] = ibn::sweep::parse_shard(std::to_string(i) + "/3");
    for (const auto& p : s.points) {
      if (p.index % shards == shard) ++seen[p.index];
    }
  }
  EXPECT_EQ(s.points.size(), 14u);
  for (int count : seen) EXPECT_EQ(count, 1);
  EXPECT_TRUE(throws_usage_error([] { ibn::sweep::parse_shard("3/3"); }, "must be i/n with 0 <= i < n"));
  EXPECT_TRUE(throws_usage_error([] { ibn::sweep::parse_shard("1"); }, "must be i/n"));
  fs::remove(file);
}

TEST(Sweep, MalformedExperimentsAreNamedWithTheirLine) {
  const std::string a = write_experiment("bad_a", "[grid]\nseed = 0 |  | 2\n");
  EXPECT_TRUE(throws_usage_error([&] { ibn::sweep::load_sweep(a, ""); }, ":2: grid key 'seed' has an empty alternative"));
  const std::string b = write_experiment("bad_b", "[grid]\nseed = 0\n[train]\nseed = 1\n");
  EXPECT_TRUE(throws_usage_error([&] { ibn::sweep::load_sweep(b, ""); }, "'seed' is both in [grid] and in [train]"));
  const std::string c = write_experiment("bad_c", "[grid]\nseed = 0\n[trian]\nlr = 1\n");
  EXPECT_TRUE(throws_usage_error([&] { ibn::sweep::load_sweep(c, ""); }, ":4: 'lr = 1' outside the sections"));
  const std::string d = write_experiment("bad_d", "[grid]\nnorm = fancynorm\nlambda = 1\n");
  EXPECT_TRUE(throws_usage_error([&] { ibn::sweep::load_sweep(d, ""); }, "grid norm 'fancynorm'"));
  for (const auto& f : {a, b, c, d}) fs::remove(f);
}

// Point ids are directory names: never "." or "..", no separator, and distinct for distinct
// settings (a grid value "..", or values that differ only in punctuation, once deleted files
// or silently dropped a point).
TEST(Sweep, PointIdsArePlainAndDistinct) {
  const std::string dots = write_experiment("dots", "[grid]\nnorm = .. | . | ./x | layernorm\n");
  const ibn::sweep::Sweep s = ibn::sweep::load_sweep(dots, "");
  ASSERT_EQ(s.points.size(), 4u);
  std::set<std::string> ids;
  for (const auto& p : s.points) {
    EXPECT_TRUE(ibn::sweep::is_plain_point_id(p.id)) << p.id;
    EXPECT_NE(p.id.find_first_of("/"), 0u) << p.id;
    EXPECT_NE(p.id.front(), '.') << p.id;
    ids.insert(p.id);
  }
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(s.points[3].id, "layernorm");  // plain values keep their readable id
  const std::string lr = write_experiment("lr", "[grid]\nlr = 1e-2 | 1e+2\n");
  const ibn::sweep::Sweep l = ibn::sweep::load_sweep(lr, "");
  ASSERT_EQ(l.points.size(), 2u);
  EXPECT_NE(l.points[0].id, l.points[1].id);
  const std::string paths = write_experiment("paths", "[grid]\ndata = text:path=a_b | text:path=a/b\n");
  const ibn::sweep::Sweep t = ibn::sweep::load_sweep(paths, "");
  ASSERT_EQ(t.points.size(), 2u);
  EXPECT_NE(t.points[0].id, t.points[1].id);
  const std::string longer = write_experiment("long", "[grid]\nmodel = mlp:widths=" + std::string(300, '1') + "\n");
  const ibn::sweep::Sweep g = ibn::sweep::load_sweep(longer, "");
  EXPECT_TRUE(ibn::sweep::is_plain_point_id(g.points[0].id)) << g.points[0].id;
  EXPECT_LE(g.points[0].id.size(), 120u);
  for (const std::string bad : {".", "..", "", "a/b", "/abs"}) EXPECT_FALSE(ibn::sweep::is_plain_point_id(bad)) << bad;
  // Ids of existing sweeps keep their names: ':' and '=' read as '-', no fingerprint when unique.
  const std::string kept = write_experiment("kept", "[grid]\nnorm = layernorm | ibnorm-s:area=batch\nlambda = 0.5\n");
  const ibn::sweep::Sweep k = ibn::sweep::load_sweep(kept, "");
  ASSERT_EQ(k.points.size(), 2u);
  EXPECT_EQ(k.points[1].id, "ibnorm-s-area-batch_lambda0.5");
  for (const auto& f : {dots, lr, paths, longer, kept}) fs::remove(f);
}

TEST(Sweep, ShardTextsAreCheckedWhole) {
  EXPECT_EQ(ibn::sweep::parse_shard("2/5"), (std::pair<int64_t, int64_t>{2, 5}));
  for (const char* bad : {"1/0", "-1/3", "1/-3", "a/3", "1/3x", "/3", "1/", "1/99999999999999999999", " 1/3"}) {
    EXPECT_TRUE(throws_usage_error([bad] { ibn::sweep::parse_shard(bad); }, "must be i/n")) << bad;
  }
}


}  // namespace
