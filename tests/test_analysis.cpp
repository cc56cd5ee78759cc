// Analysis, sweeps and reports: the IB quantities of a store with known structure, the grid of
// an experiment file (λ only for IBNorm variants), shards, and the t quantiles of the intervals.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/analysis/analyze.h"
#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/hdf5.h"
#include "ibn/report/report.h"
#include "ibn/sweep/sweep.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using ibn::test::throws_usage_error;

std::string temp_dir(const std::string& name) {
  return (fs::temp_directory_path() / ("ibn_analysis_" + std::to_string(::getpid()) + "_" + name)).string();
}

// A store whose layers are known functions of X ∈ {0, 1, 2, 3} (balanced), Y = X mod 2:
// "copy" = X, "double" = 2·copy, "constant" = 0. With 30 uniform bins the four values fall in
// four bins, so I(X;copy) = H(X) = ln 4, I(copy;Y) = H(Y) = ln 2, I(copy;double) = ln 4, and
// everything about the constant layer is 0. Nuisance ratio of copy: within-class variance 1
// over total variance 1.25 = 0.8.
std::string known_run() {
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
                          {{"layers", std::string("copy,double,constant")}, {"complete", int64_t{1}}});
  return run;
}

TEST(Analysis, KnownStructureGivesTheExpectedInformation) {
  const std::string run = known_run();
  ibn::analysis::AnalyzeConfig c;
  c.run = run;
  c.estimators = {"binning:bins=30"};
  c.beta = 0.5;
  c.quiet = true;
  std::ostringstream log;
  const ibn::analysis::Analysis a = ibn::analysis::analyze(c, log);
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
  // The files: the CSV reads back to the same rows; the HDF5 columns hold the same numbers.
  const ibn::analysis::Analysis back = ibn::analysis::read_analysis(run);
  ASSERT_EQ(back.rows.size(), 3u);
  EXPECT_EQ(back.layers, (std::vector<std::string>{"copy", "double", "constant"}));
  EXPECT_NEAR(back.rows[1].ib, twice.ib, 1e-7);
  EXPECT_NEAR(ibn::io::read_dataset(run + "/analysis.h5", "/rows/I_TY")[0].item<double>(), ln2, 1e-9);
  EXPECT_EQ(std::get<double>(ibn::io::read_attribute(run + "/analysis.h5", "/", "beta")), 0.5);
  EXPECT_NEAR(ibn::io::read_dataset(run + "/analysis.h5", "/totals/IB")[0].item<double>(), copy.ib + twice.ib + constant.ib, 1e-12);
  fs::remove_all(run);
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

TEST(Sweep, LambdaJoinsIbnormVariantsOnly) {
  const std::string file = write_experiment("grid", "[grid]\nnorm = layernorm | ibnorm-t\nlambda = 0.5 | 2\nseed = 0 | 1\n"
                                                    "[train]\nepochs = 3\n[analyze]\nestimator = binning\n");
  const ibn::sweep::Sweep s = ibn::sweep::load_sweep(file, "");
  std::vector<std::string> ids;
  for (const auto& p : s.points) ids.push_back(p.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"layernorm_seed0", "layernorm_seed1", "ibnorm-t_lambda0.5_seed0",
                                           "ibnorm-t_lambda0.5_seed1", "ibnorm-t_lambda2_seed0", "ibnorm-t_lambda2_seed1"}));
  EXPECT_NE(s.points[4].ini.find("norm = ibnorm-t:lambda=2\n"), std::string::npos);
  EXPECT_NE(s.points[4].ini.find("seed = 0\n"), std::string::npos);
  EXPECT_NE(s.points[0].ini.find("norm = layernorm\n"), std::string::npos);
  EXPECT_NE(s.points[0].ini.find("[analyze]\nestimator = binning\n"), std::string::npos);
  EXPECT_EQ(s.out, "runs/" + fs::path(file).stem().string());
  fs::remove(file);
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

TEST(Report, StudentQuantiles) {
  EXPECT_DOUBLE_EQ(ibn::report::t_quantile_95(1), 12.706);
  EXPECT_DOUBLE_EQ(ibn::report::t_quantile_95(4), 2.776);
  EXPECT_DOUBLE_EQ(ibn::report::t_quantile_95(1000), 1.96);
}

}  // namespace
