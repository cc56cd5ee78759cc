// The training options the experiment files use, each against an independent reference: the
// cosine schedule with warmup against its closed form, AdamW's first step against the closed
// form of decoupled weight decay (which also pins steps-per-epoch to one step), and the dumps of
// image and text models (subsets, 4-D and 3-D taps pooled or flattened) against each other.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "ibn/data/dataset.h"
#include "ibn/io/hdf5.h"
#include "ibn/models/model.h"
#include "ibn/train/train.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

std::string temp_run(const std::string& name) { return ibn::test::scratch_path("options", name); }

ibn::train::TrainConfig tiny(const std::string& name) {
  ibn::train::TrainConfig c;
  c.data = "gaussian-mixture:n=400";
  c.model = "mlp:widths=8";
  c.norm = "layernorm";
  c.epochs = 1;
  c.batch = 64;
  c.dump_epochs = "none";
  c.checkpoint_every = 0;
  c.progress = "quiet";
  c.out = temp_run(name);
  return c;
}

// Warmup rises linearly to the rate over its epochs; cosine then falls from the rate towards 0
// over the remaining epochs (epoch e uses lr·(1 + cos(π (e − 1 − warmup) / (epochs − warmup)))/2).
// The logged rate is the one each epoch sets on the optimizer (the AdamW test below checks that
// a set rate is the step's length).
TEST(TrainOptions, CosineWithWarmupFollowsItsClosedForm) {
  ibn::train::TrainConfig c = tiny("cosine");
  c.optimizer = "adamw";
  c.lr = 0.02;
  c.schedule = "cosine";
  c.warmup_epochs = 3;
  c.epochs = 10;
  std::ostringstream log;
  const auto result = ibn::train::train(c, log);
  ASSERT_EQ(result.metrics.size(), 11u);  // epoch 0 (untrained) and ten more
  for (int64_t e = 1; e <= c.epochs; ++e) {
    const double expected = e <= c.warmup_epochs ? c.lr * static_cast<double>(e) / 3.0
                                                 : 0.5 * c.lr * (1.0 + std::cos(M_PI * static_cast<double>(e - 4) / 7.0));
    EXPECT_NEAR(result.metrics[static_cast<size_t>(e)].lr, expected, 1e-15) << "epoch " << e;
  }
  EXPECT_NEAR(result.metrics[3].lr, c.lr, 1e-15);  // the peak at the end of the warmup
  fs::remove_all(c.out);
}

struct Parameters {
  std::vector<at::Tensor> before, after;
};

// The model as training initializes it (the global seed, then the model), and the same model
// loaded from the run's final checkpoint.
Parameters initial_and_final(const ibn::train::TrainConfig& c) {
  const auto data = ibn::data::load_dataset(c.data, c.seed);
  const ibn::models::ModelContext context(data.sample_shape, data.classes, c.norm);
  torch::manual_seed(c.seed);
  const auto initial = ibn::models::make_model(c.model, context);
  const auto trained = ibn::models::make_model(c.model, context);
  torch::serialize::InputArchive archive;
  archive.load_from(c.out + "/checkpoint.pt");
  trained->load(archive);
  Parameters p;
  for (const auto& t : initial->parameters()) p.before.push_back(t.detach().clone());
  for (const auto& t : trained->parameters()) p.after.push_back(t.detach().clone());
  return p;
}

// The fraction of parameter elements whose first step is decoupled weight decay plus a step of
// length lr: θ1 = θ0 (1 − lr·wd) − lr·m̂/(√v̂ + ε), and on the first step m̂/√v̂ = sign(g) (up to
// ε/|g|: the tolerance is 0.1 % of lr). Elements whose gradient is exactly 0 take no step under
// AdamW and are not counted.
double fraction_decoupled(const Parameters& p, double lr, double wd) {
  int64_t matching = 0, total = 0;
  for (size_t i = 0; i < p.before.size(); ++i) {
    const at::Tensor step = p.after[i] - p.before[i] * (1.0 - lr * wd);
    const at::Tensor moved = step.abs().gt(1e-9);
    matching += ((step.abs() - lr).abs().lt(1e-3 * lr) & moved).sum().item<int64_t>();
    total += moved.sum().item<int64_t>();
  }
  return static_cast<double>(matching) / static_cast<double>(total);
}

// steps-per-epoch 1: one optimizer step, whose result AdamW's update rule fixes in closed form;
// Adam's L2 penalty goes through the adaptive normalization instead and does not match it.
TEST(TrainOptions, AdamWTakesOneDecoupledStepPerStepsPerEpoch) {
  ibn::train::TrainConfig c = tiny("adamw");
  c.optimizer = "adamw";
  c.lr = 0.01;
  c.weight_decay = 0.5;
  c.steps_per_epoch = 1;
  std::ostringstream log;
  ibn::train::train(c, log);
  EXPECT_GT(fraction_decoupled(initial_and_final(c), c.lr, c.weight_decay), 0.98);
  fs::remove_all(c.out);

  c.optimizer = "adam";  // L2 in the gradient: not decoupled
  c.out = temp_run("adam");
  ibn::train::train(c, log);
  EXPECT_LT(fraction_decoupled(initial_and_final(c), c.lr, c.weight_decay), 0.5);
  fs::remove_all(c.out);

  c.optimizer = "adamw";  // a whole pass (5 steps over 320 training rows): no longer one step
  c.steps_per_epoch = 0;
  c.out = temp_run("adamw_pass");
  ibn::train::train(c, log);
  EXPECT_LT(fraction_decoupled(initial_and_final(c), c.lr, c.weight_decay), 0.5);
  fs::remove_all(c.out);
}

struct Dump {
  at::Tensor index, split, inputs;
  std::map<std::string, at::Tensor> taps;  // at the last epoch
};

Dump run_and_read(ibn::train::TrainConfig c, const std::string& maps, const std::string& name) {
  c.dump_maps = maps;
  c.out = temp_run(name);
  std::ostringstream log;
  const auto result = ibn::train::train(c, log);
  const std::string store = c.out + "/activations.h5";
  Dump d;
  d.index = ibn::io::read_dataset(store, "/data/index");
  d.split = ibn::io::read_dataset(store, "/data/split");
  d.inputs = ibn::io::read_dataset(store, "/data/inputs");
  const std::string prefix = fmt::format("/epochs/{}/", c.epochs);
  for (const std::string& path : ibn::io::list_datasets(store)) {
    if (path.rfind(prefix, 0) == 0) d.taps[path.substr(prefix.size())] = ibn::io::read_dataset(store, path);
  }
  fs::remove_all(c.out);
  return d;
}

// A tap's pooled dump is the mean of its flattened dump over the positions: channels-first
// feature maps [C, H, W] average over H·W, token sequences [T, D] over T.
void expect_pool_is_mean_of_flatten(const Dump& pool, const Dump& flatten, bool channels_first) {
  ASSERT_EQ(pool.taps.size(), flatten.taps.size());
  int64_t multi_position = 0;
  for (const auto& [layer, pooled] : pool.taps) {
    const at::Tensor& flat = flatten.taps.at(layer);
    ASSERT_EQ(pooled.size(0), flat.size(0)) << layer;
    const int64_t width = pooled.size(1), positions = flat.size(1) / width;
    ASSERT_EQ(flat.size(1), width * positions) << layer;
    if (positions == 1) {
      EXPECT_TRUE(at::allclose(pooled, flat, 1e-5, 1e-6)) << layer;
      continue;
    }
    ++multi_position;
    const at::Tensor mean = channels_first ? flat.reshape({-1, width, positions}).mean(2) : flat.reshape({-1, positions, width}).mean(1);
    EXPECT_TRUE(at::allclose(pooled, mean, 1e-4, 1e-5)) << layer << ": max difference "
                                                         << (pooled - mean).abs().max().item<double>();
  }
  EXPECT_GE(multi_position, 2);  // the check saw real 4-D / 3-D taps
}

// The dumped samples: N of them, each dumped once, from both splits.
void expect_subset(const Dump& d, int64_t n) {
  ASSERT_EQ(d.index.size(0), n);
  for (const int64_t s : {0, 1}) {
    const auto rows = d.index.index_select(0, d.split.eq(s).nonzero().squeeze(1));
    EXPECT_GT(rows.size(0), 0) << "split " << s;
    EXPECT_EQ(std::get<0>(at::_unique2(rows)).size(0), rows.size(0)) << "split " << s;
  }
  for (const auto& [layer, values] : d.taps) EXPECT_EQ(values.size(0), n) << layer;
}

TEST(TrainOptions, ImageModelDumpsASubsetOf4dTapsPooledOrFlattened) {
  ibn::train::TrainConfig c = tiny("resnet");
  c.data = "fashion-mnist:train_n=256:test_n=128";
  c.model = "resnet:widths=4-8:blocks=1";
  c.eval_samples = "all";
  c.dump_samples = "subset:40";
  c.dump_epochs = "list:1";
  c.optimizer = "adamw";
  c.weight_decay = 0.01;
  c.lr = 0.003;
  const Dump pool = run_and_read(c, "pool", "resnet_pool"), flatten = run_and_read(c, "flatten", "resnet_flatten");
  expect_subset(pool, 40);
  EXPECT_TRUE(pool.index.equal(flatten.index));  // the same seeded subset
  EXPECT_EQ(pool.inputs.sizes(), (at::IntArrayRef{40, 1, 28, 28}));
  expect_pool_is_mean_of_flatten(pool, flatten, /*channels_first=*/true);
}

TEST(TrainOptions, TextModelDumpsASubsetOf3dTapsPooledOrFlattened) {
  const std::string corpus = temp_run("corpus.txt");
  {
    std::ofstream out(corpus);
    for (int i = 0; i < 300; ++i) out << "a line of text number " << i << " for the byte model\n";
  }
  ibn::train::TrainConfig c = tiny("gpt");
  c.data = "text:path=" + corpus + ":context=16";
  c.model = "gpt:dim=16:depth=1:heads=2";
  c.eval_samples = "200";
  c.dump_samples = "subset:30";
  c.dump_epochs = "list:1";
  c.steps_per_epoch = 4;
  c.batch = 8;
  const Dump pool = run_and_read(c, "pool", "gpt_pool"), flatten = run_and_read(c, "flatten", "gpt_flatten");
  expect_subset(pool, 30);
  // The subset is drawn from the evaluation samples (200 of the windows), inputs with their rows.
  c.dump_samples = "all";
  const Dump all = run_and_read(c, "pool", "gpt_all");
  ASSERT_EQ(all.index.size(0), 200);
  for (int64_t i = 0; i < pool.index.size(0); ++i) {
    const auto same = all.index.eq(pool.index[i]) & all.split.eq(pool.split[i]);
    ASSERT_EQ(same.sum().item<int64_t>(), 1) << "row " << i << " is not an evaluation sample";
    EXPECT_TRUE(all.inputs[same.nonzero().item<int64_t>()].equal(pool.inputs[i])) << "row " << i;
  }
  EXPECT_EQ(pool.inputs.sizes(), (at::IntArrayRef{30, 16}));
  expect_pool_is_mean_of_flatten(pool, flatten, /*channels_first=*/false);
  fs::remove(corpus);
}

}  // namespace
