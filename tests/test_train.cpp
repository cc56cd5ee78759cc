// Data, models and `ibn train`: the ibsgd12 rule's statistics, taps, loss going down with each
// normalizer, the 12-10-7-5-4-3-2 net learning ibsgd12, determinism, the activation store's
// schema, and the errors of bad options.
#include <zlib.h>

#include <filesystem>
#include <limits>
#include <set>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "ibn/analysis/analyze.h"
#include "ibn/data/dataset.h"
#include "ibn/error.h"
#include "ibn/io/hdf5.h"
#include "ibn/mi/entropy.h"
#include "ibn/models/model.h"
#include "ibn/models/attention.h"
#include "ibn/train/train.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using ibn::test::throws_usage_error;

std::string temp_run(const std::string& name) { return ibn::test::scratch_path("train", name); }

TEST(Data, Ibsgd12HasTheDocumentedStatistics) {
  const auto data = ibn::data::load_dataset("ibsgd12", 0);
  const auto inputs = torch::cat({data.train.inputs, data.test.inputs});
  const auto labels = torch::cat({data.train.labels, data.test.labels});
  ASSERT_EQ(inputs.size(0), 4096);
  EXPECT_EQ(data.test.inputs.size(0), 614);  // 15 %
  EXPECT_EQ(ibn::mi::row_ids(inputs.to(torch::kLong)).max().item<int64_t>(), 4095);  // all distinct
  EXPECT_EQ(labels.sum().item<int64_t>(), 2276);
  EXPECT_NEAR(ibn::mi::discrete_entropy(labels) / std::log(2.0), 0.991, 0.0005);
  // Flipping every bit maps v to −v: the label, a function of |v|², must not change.
  const auto index = torch::cat({data.train.index, data.test.index});
  auto by_code = torch::empty({4096}, torch::kLong);
  by_code.index_put_({index}, labels);
  EXPECT_TRUE(by_code.equal(by_code.flip(0)));  // code r and 4095 − r are complements
  // The split depends on the seed, and only on it.
  EXPECT_TRUE(ibn::data::load_dataset("ibsgd12", 0).test.index.equal(data.test.index));
  EXPECT_FALSE(ibn::data::load_dataset("ibsgd12", 1).test.index.equal(data.test.index));
}

// IDX files as the Fashion-MNIST package ships them: gzip'd, big-endian header, unsigned bytes.
TEST(Data, ReadsGzippedIdxFiles) {
  const std::string dir = temp_run("idx");
  fs::create_directories(dir);
  const auto write = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    gzFile f = gzopen((dir + "/" + name).c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  };
  std::vector<uint8_t> images = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
  for (uint8_t v = 0; v < 12; ++v) images.push_back(v * 20);
  write("images.gz", images);
  const auto t = ibn::data::read_idx(dir + "/images.gz");
  EXPECT_EQ(t.sizes(), torch::IntArrayRef({2, 2, 3}));
  EXPECT_EQ(t[1][0][2].item<int64_t>(), 8 * 20);
  images.pop_back();
  write("short.gz", images);
  EXPECT_THROW(ibn::data::read_idx(dir + "/short.gz"), ibn::DataError);
  write("magic.gz", {0, 0, 9, 1, 0, 0, 0, 1, 5});
  EXPECT_THROW(ibn::data::read_idx(dir + "/magic.gz"), ibn::DataError);
  EXPECT_TRUE(throws_usage_error([&] { ibn::data::load_dataset("fashion-mnist:dir=" + dir, 0); },
                                 "fashion-mnist: no '" + dir + "/train-images-idx3-ubyte.gz' (dir= must hold"));
  fs::remove_all(dir);
}

// Debian's dataset-fashion-mnist (installed by scripts/setup.sh), read in seeded subsets.
TEST(Data, FashionMnistFromTheDebianPackage) {
  const auto data = ibn::data::load_dataset("fashion-mnist:train_n=500:test_n=200", 3);
  EXPECT_EQ(data.train.inputs.sizes(), torch::IntArrayRef({500, 1, 28, 28}));
  EXPECT_EQ(data.test.labels.size(0), 200);
  EXPECT_EQ(data.classes, 10);
  EXPECT_GE(data.train.inputs.min().item<double>(), 0.0);
  EXPECT_LE(data.train.inputs.max().item<double>(), 1.0);
  EXPECT_GT(data.train.inputs.mean().item<double>(), 0.1);  // real images, not blanks
  EXPECT_EQ(std::get<0>(at::_unique(data.train.labels)).size(0), 10);
  EXPECT_TRUE(ibn::data::load_dataset("fashion-mnist:train_n=500:test_n=200", 3).train.index.equal(data.train.index));
}

TEST(Data, SpecErrors) {
  EXPECT_TRUE(throws_usage_error([] { ibn::data::load_dataset("mnist", 0); }, "unknown dataset 'mnist'; expected one of: ibsgd12"));
  EXPECT_TRUE(throws_usage_error([] { ibn::data::load_dataset("ibsgd12:test=2", 0); }, "test=2 must lie in [0.01, 0.9]"));
  EXPECT_TRUE(throws_usage_error([] { ibn::data::load_dataset("gaussian-mixture:classes=1", 0); }, "classes=1 must be >= 2"));
}

// A validation split comes out of the training samples only: disjoint from what is left to train
// on, no test sample anywhere, seeded by the run's seed, and of the requested size.
TEST(Data, ValidationIsHeldOutOfTrainAndReplacesTest) {
  const auto whole = ibn::data::load_dataset("gaussian-mixture:n=1000", 3);
  auto data = whole;
  ibn::data::hold_out_validation(data, 0.25, 3);
  const int64_t n = whole.train.labels.size(0);
  EXPECT_EQ(data.test.labels.size(0), std::llround(0.25 * static_cast<double>(n)));
  EXPECT_EQ(data.train.labels.size(0) + data.test.labels.size(0), n);
  const auto rows_of = [](const at::Tensor& index) {
    std::set<int64_t> out;
    for (int64_t i = 0; i < index.size(0); ++i) out.insert(index[i].item<int64_t>());
    return out;
  };
  const std::set<int64_t> train = rows_of(data.train.index), validation = rows_of(data.test.index);
  const std::set<int64_t> original_train = rows_of(whole.train.index), test = rows_of(whole.test.index);
  for (const int64_t r : validation) {
    EXPECT_EQ(train.count(r), 0u) << r;
    EXPECT_EQ(original_train.count(r), 1u) << r;
    EXPECT_EQ(test.count(r), 0u) << r;
  }
  // Inputs and labels moved with their rows.
  const auto first = data.test.index[0].item<int64_t>();
  const auto at_whole = whole.train.index.eq(first).nonzero().item<int64_t>();
  EXPECT_TRUE(data.test.inputs[0].equal(whole.train.inputs[at_whole]));
  EXPECT_EQ(data.test.labels[0].item<int64_t>(), whole.train.labels[at_whole].item<int64_t>());
  auto again = whole;
  ibn::data::hold_out_validation(again, 0.25, 3);
  EXPECT_TRUE(again.test.index.equal(data.test.index));
  auto other = whole;
  ibn::data::hold_out_validation(other, 0.25, 4);
  EXPECT_FALSE(other.test.index.equal(data.test.index));
  auto tiny = whole;
  EXPECT_TRUE(throws_usage_error([&] { ibn::data::hold_out_validation(tiny, 1e-6, 3); }, "leaves no validation"));
}

// split_seed fixes a generated dataset's train/test split across run seeds; without it the
// split follows the run's seed, and the dataset says so.
TEST(Data, SplitSeedFixesTheTestSplit) {
  const auto a = ibn::data::load_dataset("gaussian-mixture:n=500:split_seed=7", 0);
  const auto b = ibn::data::load_dataset("gaussian-mixture:n=500:split_seed=7", 1);
  EXPECT_TRUE(a.test.index.equal(b.test.index));
  EXPECT_FALSE(a.test_varies_with_seed);
  EXPECT_NE(a.spec.find("split_seed=7"), std::string::npos) << a.spec;
  EXPECT_TRUE(a.test.index.equal(ibn::data::load_dataset("gaussian-mixture:n=500", 7).test.index));  // the same permutation
  const auto c = ibn::data::load_dataset("ibsgd12", 0);
  EXPECT_TRUE(c.test_varies_with_seed);
  EXPECT_FALSE(c.test.index.equal(ibn::data::load_dataset("ibsgd12", 1).test.index));
  EXPECT_TRUE(ibn::data::load_dataset("ibsgd12:split_seed=3", 0).test.index.equal(ibn::data::load_dataset("ibsgd12:split_seed=3", 9).test.index));
  EXPECT_FALSE(ibn::data::load_dataset("fashion-mnist:train_n=100:test_n=50", 0).test_varies_with_seed);
  EXPECT_TRUE(throws_usage_error([] { ibn::data::load_dataset("ibsgd12:split_seed=-1", 0); }, "split_seed"));
}

// Text windows are in corpus order: the validation split is the last training windows, one block.
TEST(Data, TextValidationIsTheLastTrainingWindows) {
  const std::string file = temp_run("corpus.txt");
  std::string text;
  for (int i = 0; i < 400; ++i) text += fmt::format("line {} of a small corpus\n", i);
  { std::ofstream(file) << text; }
  auto data = ibn::data::load_dataset("text:path=" + file + ":context=16", 0);
  const int64_t n = data.train.labels.size(0);
  const auto whole = data.train;
  ibn::data::hold_out_validation(data, 0.2, 5);
  const int64_t v = data.test.labels.size(0);
  EXPECT_EQ(v, std::llround(0.2 * static_cast<double>(n)));
  EXPECT_TRUE(data.test.inputs.equal(whole.inputs.slice(0, n - v)));
  EXPECT_TRUE(data.train.inputs.equal(whole.inputs.slice(0, 0, n - v)));
  fs::remove(file);
}

// --validation: the run evaluates on the held-out samples and records so; its config says it.
TEST(Train, ValidationRunsEvaluateOnTheHeldOutSplit) {
  ibn::train::TrainConfig c;
  c.data = "gaussian-mixture:n=800";
  c.model = "mlp:widths=6";
  c.epochs = 2;
  c.batch = 64;
  c.validation = 0.2;
  c.dump_epochs = "none";
  c.progress = "lines";
  c.out = temp_run("validation");
  std::ostringstream log;
  ibn::train::train(c, log);
  auto data = ibn::data::load_dataset(c.data, c.seed);
  const int64_t n_train = data.train.labels.size(0);
  ibn::data::hold_out_validation(data, 0.2, c.seed);
  const std::string store = c.out + "/activations.h5";
  EXPECT_EQ(std::get<int64_t>(ibn::io::read_attribute(store, "/", "test_predictions")), data.test.labels.size(0));
  EXPECT_NE(ibn::io::read_text_attribute(store, "/", "data_description").find("validation split of " +
                                                                              std::to_string(data.test.labels.size(0)) + " of the " +
                                                                              std::to_string(n_train)), std::string::npos);
  EXPECT_EQ(ibn::train::read_run_config(c.out).at("validation"), "0.2");
  EXPECT_NE(log.str().find("val acc"), std::string::npos) << log.str();
  fs::remove_all(c.out);
}

TEST(Models, MlpTapsAndNormalizers) {
  const ibn::models::ModelContext context({12}, 2, "ibnorm-t:lambda=2");
  const auto mlp = ibn::models::make_model("mlp", context);
  EXPECT_EQ(mlp->spec(), "mlp:widths=10-7-5-4-3:act=tanh");
  EXPECT_EQ(mlp->tap_names(), (std::vector<std::string>{"norm1", "fc1", "norm2", "fc2", "norm3", "fc3", "norm4", "fc4",
                                                        "norm5", "fc5", "logits"}));
  ASSERT_EQ(mlp->normalizers().size(), 5u);
  EXPECT_EQ(mlp->normalizers()[2].second->spec().str(), "ibnorm-t:area=token:lambda=2:eps=1e-05:affine=true");
  ibn::models::Taps taps;
  const auto logits = mlp->forward(torch::rand({8, 12}), &taps);
  EXPECT_EQ(logits.sizes(), torch::IntArrayRef({8, 2}));
  EXPECT_EQ(taps.at("fc3").sizes(), torch::IntArrayRef({8, 5}));
  EXPECT_TRUE(taps.at("logits").equal(logits));
  // fc_i = tanh(norm_i): the taps are what the forward pass computed.
  EXPECT_TRUE(taps.at("fc2").equal(taps.at("norm2").tanh()));
  // The IB chain: one representation per block (the activation's output), the logits last.
  EXPECT_EQ(mlp->chain(), (std::vector<std::string>{"fc1", "fc2", "fc3", "fc4", "fc5", "logits"}));
  const auto plain = ibn::models::make_model("mlp:widths=6-4:act=relu", ibn::models::ModelContext({12}, 3, "none"));
  EXPECT_EQ(plain->normalizers().size(), 0u);
  EXPECT_EQ(plain->tap_names(), (std::vector<std::string>{"fc1", "fc2", "logits"}));
  EXPECT_TRUE(throws_usage_error([] { ibn::models::make_model("mlp:widths=4-x", ibn::models::ModelContext({12}, 2, "layernorm")); },
                                 "widths='4-x' is not a list of positive integers"));
  EXPECT_TRUE(throws_usage_error([] { ibn::models::make_model("mlp:widths=12", ibn::models::ModelContext({12}, 2, "groupnorm:groups=5")); },
                                 "groups=5 cannot split 12 channels"));
  EXPECT_TRUE(throws_usage_error([] { ibn::models::make_model("transformer", ibn::models::ModelContext({12}, 2, "layernorm")); }, "unknown model 'transformer'"));
}

// Every model learns tiny data with each normalizer: the loss on a fixed batch (64 real
// Fashion-MNIST images for the image models, a Gaussian mixture for the MLP) falls well below
// its starting value within 40 Adam steps. Batchnorm on ViT tokens: per feature over N·T.
TEST(Models, EveryModelLearnsTinyDataWithEachNormalizer) {
  const auto images = ibn::data::load_dataset("fashion-mnist:train_n=64:test_n=1", 0).train;
  const auto vectors = ibn::data::load_dataset("gaussian-mixture:classes=4,n=80", 0).train;
  auto text = ibn::data::load_dataset("text:max_bytes=20000:context=16", 0).train;
  text.inputs = text.inputs.slice(0, 0, 32);
  text.labels = text.labels.slice(0, 0, 32);
  const std::vector<std::pair<std::string, const ibn::data::Split*>> cases = {
      {"mlp:widths=32-16", &vectors},
      {"resnet:widths=8-16:blocks=1", &images},
      {"vit:patch=7:dim=32:depth=2:heads=4", &images},
      {"gpt:dim=32:depth=2:heads=4", &text},
      {"llama:dim=32:depth=2:heads=4", &text},
  };
  for (const auto& [spec, data] : cases) {
    const std::vector<int64_t> shape(data->inputs.sizes().begin() + 1, data->inputs.sizes().end());
    // The controls of the ablation (DyT, ψ last, ψ first) learn more slowly on the ResNet at this
    // rate: its loss fell 8-25 % in 40 steps. They must learn (5 %), and work at every site.
    const std::vector<std::pair<const char*, double>> norms = {
        {"layernorm", 0.7}, {"batchnorm", 0.7}, {"rmsnorm", 0.7}, {"ibnorm-t:lambda=1", 0.7},
        {"dyt", 0.95}, {"ln-tanh:lambda=1", 0.95}, {"ibnorm-s:order=first:kappa=0.5", 0.95}, {"normalnorm", 0.95}};
    for (const auto& [norm, ratio] : norms) {
      torch::manual_seed(71);
      const int64_t classes = data == &text ? 256 : 10;
      auto model = ibn::models::make_model(spec, ibn::models::ModelContext(shape, classes, norm));
      torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(3e-3));
      double first = 0, last = 0;
      for (int step = 0; step < 40; ++step) {
        const auto logits = model->forward(data->inputs);
        const auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), data->labels.reshape({-1}));
        if (step == 0) first = loss.item<double>();
        last = loss.item<double>();
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
      }
      EXPECT_LT(last, ratio * first) << spec << " with " << norm;
    }
  }
}

// Decoders are causal: changing later tokens leaves earlier logits as they were.
TEST(Models, DecodersAreCausalAndHaveTheirDefaultNorms) {
  for (const char* spec : {"gpt:dim=16:depth=2:heads=2", "llama:dim=16:depth=2:heads=2"}) {
    torch::manual_seed(72);
    const auto model = ibn::models::make_model(spec, ibn::models::ModelContext({12}, 256, ""));
    model->eval();
    auto tokens = torch::randint(0, 256, {2, 12}, torch::kLong);
    const auto before = model->forward(tokens);
    tokens.slice(1, 7).random_(0, 256);
    const auto after = model->forward(tokens);
    EXPECT_TRUE(before.slice(1, 0, 7).allclose(after.slice(1, 0, 7), 1e-5, 1e-6)) << spec;
    EXPECT_FALSE(before.slice(1, 7).allclose(after.slice(1, 7))) << spec;
  }
  EXPECT_EQ(ibn::models::resolve_norm("llama:dim=8", ""), "rmsnorm");
  EXPECT_EQ(ibn::models::resolve_norm("gpt", ""), "layernorm");
  EXPECT_EQ(ibn::models::resolve_norm("llama", "ibnorm-t"), "ibnorm-t");
  const auto llama = ibn::models::make_model("llama:dim=16:depth=1:heads=2", ibn::models::ModelContext({8}, 256, ""));
  EXPECT_EQ(llama->normalizers().front().second->spec().name, "rmsnorm");
}

// Rotary embeddings turn pairs of coordinates: norms are kept, and q_m·k_n depends on m − n only.
TEST(Models, RotaryEmbeddingRotatesByPosition) {
  torch::manual_seed(73);
  const auto q = torch::randn({1, 1, 1, 8}, torch::kDouble).expand({1, 1, 6, 8}).contiguous();
  const auto k = torch::randn({1, 1, 1, 8}, torch::kDouble).expand({1, 1, 6, 8}).contiguous();
  const auto rq = ibn::models::rotary_embedding(q), rk = ibn::models::rotary_embedding(k);
  EXPECT_TRUE(rq.norm(2, {-1}).allclose(q.norm(2, {-1})));
  EXPECT_TRUE(rq[0][0][0].equal(q[0][0][0]));  // position 0 is not turned
  const auto dot = [&](int64_t m, int64_t n) { return rq[0][0][m].dot(rk[0][0][n]).item<double>(); };
  EXPECT_NEAR(dot(3, 1), dot(4, 2), 1e-12);
  EXPECT_NEAR(dot(5, 2), dot(3, 0), 1e-12);
  EXPECT_GT(std::abs(dot(3, 1) - dot(3, 2)), 1e-6);
}

TEST(Data, TextWindowsPredictTheNextByte) {
  const auto data = ibn::data::load_dataset("text:max_bytes=50000:context=32:valid=0.2", 0);
  EXPECT_TRUE(data.sequence);
  EXPECT_EQ(data.classes, 256);
  EXPECT_EQ(data.train.inputs.size(1), 32);
  EXPECT_EQ(data.train.inputs.size(0), (40000 - 1) / 32);
  // Labels are the inputs shifted by one byte, across window boundaries too.
  EXPECT_TRUE(data.train.labels.select(1, 0).equal(data.train.inputs.select(1, 1)));
  EXPECT_TRUE(data.train.labels.slice(0, 0, -1).select(1, 31).equal(data.train.inputs.slice(0, 1).select(1, 0)));
  EXPECT_TRUE(throws_usage_error([] { ibn::data::load_dataset("text:path=/nonexistent/corpus", 0); },
                                 "text: no such file or directory '/nonexistent/corpus'"));
}

TEST(Models, TransformerSitesTakeTheirOwnNorms) {
  ibn::models::ModelContext context({1, 28, 28}, 10, "layernorm");
  context.norm_attn = "rmsnorm";
  context.norm_final = "ibnorm-t:lambda=2";
  const auto vit = ibn::models::make_model("vit:patch=14:dim=16:depth=2:heads=2", context);
  std::vector<std::string> sites;
  for (const auto& [name, norm] : vit->normalizers()) sites.push_back(name + "=" + norm->spec().name);
  EXPECT_EQ(sites, (std::vector<std::string>{"block1_norm_attn=rmsnorm", "block1_norm_mlp=layernorm",
                                             "block2_norm_attn=rmsnorm", "block2_norm_mlp=layernorm",
                                             "norm_final=ibnorm-t"}));
  ibn::models::Taps taps;
  vit->forward(torch::rand({3, 1, 28, 28}), &taps);
  EXPECT_EQ(taps.at("block2").sizes(), torch::IntArrayRef({3, 4, 16}));  // 4 patches of 14×14
  EXPECT_TRUE(throws_usage_error([] { ibn::models::make_model("vit:patch=5", ibn::models::ModelContext({1, 28, 28}, 10, "layernorm")); },
                                 "patch=5 must divide the 28x28 image"));
  EXPECT_TRUE(throws_usage_error([] { ibn::models::make_model("resnet", ibn::models::ModelContext({12}, 2, "layernorm")); },
                                 "resnet needs image inputs"));
}

TEST(Train, DumpSchedules) {
  using ibn::train::dump_schedule;
  EXPECT_EQ(dump_schedule("none", 10), (std::vector<int64_t>{}));
  EXPECT_EQ(dump_schedule("all", 3), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(dump_schedule("every:4", 10), (std::vector<int64_t>{0, 4, 8, 10}));
  EXPECT_EQ(dump_schedule("list:5,1,5", 10), (std::vector<int64_t>{1, 5}));
  // More log-spaced points than epochs: every epoch, none lost to the spacing.
  EXPECT_EQ(dump_schedule("log:20", 5), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  const auto log = dump_schedule("log:6", 1000);
  EXPECT_EQ(log.front(), 0);
  EXPECT_EQ(log.back(), 1000);
  EXPECT_EQ(log.size(), 6u);
  EXPECT_LT(log[2], 100);  // denser early on
  EXPECT_TRUE(throws_usage_error([] { dump_schedule("log:1", 10); }, "--dump-epochs 'log:1' must be"));
  EXPECT_TRUE(throws_usage_error([] { dump_schedule("list:3,20", 10); }, "lists epoch 20 of a 10-epoch run"));
  EXPECT_TRUE(throws_usage_error([] { dump_schedule("sometimes", 10); }, "must be none, all, every:K"));
}

// Every normalizer trains: the loss after a few epochs is below the untrained model's.
TEST(Train, LossGoesDownWithEachNormalizer) {
  for (const char* norm : {"layernorm", "batchnorm", "rmsnorm", "ibnorm-t:lambda=1", "ibnorm-s:lambda=0.5:area=batch"}) {
    ibn::train::TrainConfig c;
    c.data = "gaussian-mixture:classes=3,n=600";
    c.model = "mlp:widths=16-16";
    c.norm = norm;
    c.epochs = 5;
    c.batch = 32;
    c.lr = 0.01;
    c.dump_epochs = "none";
    c.progress = "quiet";
    c.out = temp_run(std::string("loss_") + std::to_string(std::hash<std::string>()(norm)));
    std::ostringstream log;
    const auto result = ibn::train::train(c, log);
    EXPECT_LT(result.metrics.back().train_loss, 0.7 * result.metrics.front().train_loss) << norm;
    fs::remove_all(c.out);
  }
}

// Shwartz-Ziv & Tishby's network learns the task on the CPU in a few seconds; the same seed
// gives the same run bit for bit, and the store holds what the schema says.
TEST(Train, Ibsgd12NetworkLearnsDeterministicallyAndStoresActivations) {
  ibn::train::TrainConfig c;
  c.norm = "ibnorm-t:lambda=1";
  c.epochs = 80;
  c.batch = 64;
  c.lr = 0.01;
  c.dump_epochs = "list:0,40,80";
  c.progress = "quiet";
  c.out = temp_run("ibsgd12_a");
  std::ostringstream log;
  const auto first = ibn::train::train(c, log);
  EXPECT_GT(first.metrics.back().train_accuracy, 0.90);
  c.out = temp_run("ibsgd12_b");
  const auto second = ibn::train::train(c, log);
  ASSERT_EQ(first.metrics.size(), second.metrics.size());
  for (size_t i = 0; i < first.metrics.size(); ++i) EXPECT_EQ(first.metrics[i].train_loss, second.metrics[i].train_loss) << i;

  const std::string a = temp_run("ibsgd12_a") + "/activations.h5";
  const std::string b = temp_run("ibsgd12_b") + "/activations.h5";
  EXPECT_TRUE(ibn::io::read_dataset(a, "/epochs/80/fc3").equal(ibn::io::read_dataset(b, "/epochs/80/fc3")));
  EXPECT_EQ(ibn::io::read_dataset(a, "/data/inputs").sizes(), torch::IntArrayRef({4096, 12}));
  EXPECT_EQ(ibn::io::read_dataset(a, "/epochs/0/fc1").sizes(), torch::IntArrayRef({4096, 10}));
  EXPECT_EQ(ibn::io::read_dataset(a, "/epochs/40/logits").sizes(), torch::IntArrayRef({4096, 2}));
  EXPECT_TRUE(ibn::io::read_dataset(a, "/meta/dumped_epochs").equal(torch::tensor({0, 40, 80}, torch::kLong)));
  EXPECT_EQ(ibn::io::read_dataset(a, "/metrics/train_accuracy").size(0), 81);
  EXPECT_DOUBLE_EQ(ibn::io::read_dataset(a, "/metrics/train_accuracy")[80].item<double>(), first.metrics.back().train_accuracy);
  EXPECT_EQ(std::get<int64_t>(ibn::io::read_attribute(a, "/", "complete")), 1);
  EXPECT_EQ(std::get<std::string>(ibn::io::read_attribute(a, "/", "model")), "mlp:widths=10-7-5-4-3:act=tanh");
  EXPECT_NE(std::get<std::string>(ibn::io::read_attribute(a, "/", "config")).find("\nnorm = ibnorm-t:lambda=1\n"), std::string::npos);
  // Samples are the training rows, then the 614 test rows.
  const auto split = ibn::io::read_dataset(a, "/data/split");
  EXPECT_EQ(split.sum().item<int64_t>(), 614);
  EXPECT_EQ(std::get<int64_t>(ibn::io::read_attribute(a, "/", "test_predictions")), 614);
  const auto test_labels = ibn::io::read_dataset(a, "/data/labels").index_select(0, split.eq(1).nonzero().squeeze(1));
  const double ones = test_labels.sum().item<double>() / 614.0;
  EXPECT_DOUBLE_EQ(std::get<double>(ibn::io::read_attribute(a, "/", "test_majority_rate")), std::max(ones, 1 - ones));
  // The analysis of this store sums IB over exactly fc1..fc5 and the logits, never norm_i
  // (norm_i and fc_i = tanh(norm_i) are one block).
  ibn::analysis::AnalyzeConfig analyze;
  analyze.run = temp_run("ibsgd12_a");
  analyze.estimators = {"binning:bins=30"};
  analyze.layers = "all";
  analyze.epochs = "80";
  analyze.sensitivity = false;
  analyze.quiet = true;
  const ibn::analysis::Analysis analysis = ibn::analysis::analyze(analyze, log);
  EXPECT_EQ(analysis.chain, (std::vector<std::string>{"fc1", "fc2", "fc3", "fc4", "fc5", "logits"}));
  EXPECT_EQ(analysis.layers.size(), 11u);
  double chain_sum = 0;
  int chain_rows = 0;
  for (const auto& row : analysis.rows) {
    EXPECT_EQ(row.in_chain, row.layer.rfind("norm", 0) != 0) << row.layer;
    if (row.in_chain) {
      chain_sum += row.ib;
      ++chain_rows;
    }
  }
  EXPECT_EQ(chain_rows, 6);
  EXPECT_NEAR(ibn::analysis::ib_total(analysis, 80, "binning:bins=30"), chain_sum, 1e-12);
  EXPECT_EQ(split[0].item<int64_t>(), 0);
  std::ifstream csv(temp_run("ibsgd12_a") + "/metrics.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "epoch,train_loss,train_accuracy,test_loss,test_accuracy,lr,seconds");
  fs::remove_all(temp_run("ibsgd12_a"));
  fs::remove_all(temp_run("ibsgd12_b"));
}

TEST(Train, BadOptionsFailBeforeAnyWork) {
  ibn::train::TrainConfig c;
  c.out = temp_run("bad");
  std::ostringstream log;
  const auto expect = [&](auto change, const std::string& needle) {
    ibn::train::TrainConfig bad = c;
    change(bad);
    EXPECT_TRUE(throws_usage_error([&] { ibn::train::train(bad, log); }, needle)) << needle;
  };
  expect([](auto& x) { x.optimizer = "lion"; }, "--optimizer 'lion' must be one of: sgd, adam, adamw");
  expect([](auto& x) { x.norm = "fancynorm"; }, "unknown normalizer 'fancynorm'");
  expect([](auto& x) { x.model = "mlp:depth=3"; }, "unknown key 'depth'; mlp accepts");
  expect([](auto& x) { x.data = "cifar"; }, "unknown dataset 'cifar'");
  expect([](auto& x) { x.dump_layers = "fc1,fc9"; }, "the model has no layer 'fc9'");
  expect([](auto& x) { x.epochs = 0; }, "--epochs 0 must lie in [1, 10000000]");
  // Counts a run cannot use: each once hung for minutes or allocated without bound.
  expect([](auto& x) { x.epochs = 100'000'000'000; }, "--epochs 100000000000 must lie in [1, 10000000]");
  expect([](auto& x) { x.dump_epochs = "log:100000000000"; }, "asks for 100000000000 dumps; at most 100000");
  expect([](auto& x) { x.epochs = 10'000'000, x.dump_epochs = "all"; }, "asks for 10000001 dumps; at most 100000");
  expect([](auto& x) { x.threads = 100000; }, "--threads 100000 must lie in [0, 512]");
  expect([](auto& x) { x.threads = -4; }, "--threads -4 must lie in [0, 512]");
  expect([](auto& x) { x.checkpoint_every = -1; }, "--checkpoint-every -1 must be >= 0");
  expect([](auto& x) { x.lr = std::numeric_limits<double>::infinity(); }, "--lr inf must lie in (0, 1e+06]");
  expect([](auto& x) { x.lr = 1e38; }, "--lr 1e+38 must lie in (0, 1e+06]");
  expect([](auto& x) { x.norm_attn = "rmsnorm"; }, "--norm-attn 'rmsnorm': model 'mlp' has no such normalization site");
  expect([](auto& x) { x.validation = 1.0; }, "--validation 1 must lie in [0, 1)");
  expect([](auto& x) { x.validation = -0.1; }, "--validation -0.1 must lie in [0, 1)");
  expect([](auto& x) { x.out = ""; }, "--out RUN_DIR is required");
  EXPECT_FALSE(fs::exists(c.out));  // nothing was created
}

}  // namespace

// Evaluation and dumps on a fixed subset: half the budget from each split, the metrics those of
// the stored samples, stated in the log; the analysis caps its samples and records the cap.
TEST(Train, EvaluationSubsetIsFixedStatedAndAnalyzedWithinItsCap) {
  ibn::train::TrainConfig c;
  c.data = "gaussian-mixture:classes=3,n=3000";
  c.model = "mlp:widths=8";
  c.norm = "layernorm";
  c.epochs = 2;
  c.batch = 100;
  c.eval_samples = "1000";
  c.dump_epochs = "list:0,2";
  c.progress = "lines";
  c.out = temp_run("eval_subset");
  std::ostringstream log;
  const auto result = ibn::train::train(c, log);
  const auto data = ibn::data::load_dataset(c.data, 0);
  const int64_t n_train = data.train.labels.size(0), n_test = data.test.labels.size(0);
  ASSERT_GT(n_train, 500);
  ASSERT_GT(n_test, 500);
  EXPECT_NE(log.str().find(fmt::format("a fixed subset of 500 of {} train and 500 of {} test samples", n_train, n_test)),
            std::string::npos) << log.str();
  const std::string store = c.out + "/activations.h5";
  const auto split = ibn::io::read_dataset(store, "/data/split");
  ASSERT_EQ(split.size(0), 1000);
  EXPECT_EQ(split.sum().item<int64_t>(), 500);
  EXPECT_EQ(std::get<int64_t>(ibn::io::read_attribute(store, "/", "test_predictions")), 500);
  // The stored rows are distinct rows of each split, and the epoch's test accuracy is that of
  // the stored test samples' logits.
  const auto index = ibn::io::read_dataset(store, "/data/index");
  for (const int64_t s : {0, 1}) {
    const auto rows = index.index_select(0, split.eq(s).nonzero().squeeze(1));
    EXPECT_EQ(std::get<0>(at::_unique2(rows)).size(0), 500) << s;
  }
  const auto test_rows = split.eq(1).nonzero().squeeze(1);
  const auto logits = ibn::io::read_dataset(store, "/epochs/2/logits").index_select(0, test_rows);
  const auto labels = ibn::io::read_dataset(store, "/data/labels").index_select(0, test_rows);
  const double accuracy = logits.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(result.metrics.back().test_accuracy, accuracy, 1e-12);

  ibn::analysis::AnalyzeConfig analyze;
  analyze.run = c.out;
  analyze.estimators = {"binning:bins=10"};
  analyze.sensitivity = false;
  analyze.max_samples = 300;
  const auto analysis = ibn::analysis::analyze(analyze, log);
  EXPECT_EQ(analysis.samples, 300);
  EXPECT_EQ(analysis.stored_samples, 1000);
  EXPECT_EQ(std::get<int64_t>(ibn::io::read_attribute(c.out + "/analysis.h5", "/", "max_samples")), 300);
  EXPECT_NE(log.str().find("on 300 samples, a seeded subset of the 1000 stored"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("ETA"), std::string::npos);

  c.eval_samples = "1";
  EXPECT_TRUE(throws_usage_error([&] { ibn::train::train(c, log); }, "--eval-samples '1' must be all or a count N >= 2"));
  fs::remove_all(c.out);
}
