// The parts `ibn train` is built from, each on its own: the checkpoint codec (a round trip
// restores weights, optimizer moments, progress and the batch order's generator, so the next
// step is the same step) and the activation parts (queued epochs land on disk, are gathered into
// one store, and a resume that lacks one is refused before anything is created).
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/hdf5.h"
#include "ibn/train/run_directory.h"
#include "test_util.h"
#include "train/activation_parts.h"
#include "train/checkpoint.h"

namespace {

namespace fs = std::filesystem;
using ibn::train::ActivationParts;
using ibn::train::CheckpointReader;
using ibn::train::RunDirectory;
using ibn::train::TrainingProgress;

// A fresh, empty run directory for one test.
RunDirectory fresh_run(const std::string& name) {
  const RunDirectory run{ibn::test::scratch_path("parts", name)};
  fs::remove_all(run.root);
  fs::create_directories(run.root);
  return run;
}

// One AdamW step on a fixed batch: after it the optimizer holds moments and a step count.
void step(torch::nn::Linear& model, torch::optim::Optimizer& optimizer) {
  const at::Tensor x = torch::arange(12, torch::kFloat).reshape({4, 3}).div(7);
  optimizer.zero_grad();
  model->forward(x).square().sum().backward();
  optimizer.step();
}

TEST(CheckpointCodec, RoundTripRestoresTheNextStepExactly) {
  torch::manual_seed(3);
  torch::nn::Linear model(3, 2);
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(0.01).weight_decay(0.1));
  step(model, optimizer);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(17);
  at::randperm(10, generator);  // a generator part-way through its sequence
  TrainingProgress progress;
  progress.epoch = 2;
  progress.metrics = {{0, 2.5, 0.1, 2.6, 0.12, 0.0, 0.0}, {1, 1.25, 0.5, 1.5, 0.45, 0.01, 0.75}, {2, 0.5, 0.9, 0.7, 0.8, 0.005, 1.5}};
  progress.dumped_epochs = {0, 2};
  progress.shuffle_rng = generator.get_state();
  const RunDirectory run = fresh_run("codec");
  ibn::io::write_file_atomically(run.checkpoint(), ibn::train::encode_checkpoint(*model, optimizer, progress, "seed = 4\n"));

  torch::manual_seed(99);  // other initial weights: the restore must replace them
  torch::nn::Linear restored(3, 2);
  torch::optim::AdamW restored_optimizer(restored->parameters(), torch::optim::AdamWOptions(0.01).weight_decay(0.1));
  CheckpointReader reader(run.checkpoint());
  EXPECT_EQ(reader.epoch(), 2);
  EXPECT_EQ(reader.config(), "seed = 4\n");
  const TrainingProgress back = reader.restore(*restored, restored_optimizer);
  EXPECT_EQ(back.epoch, 2);
  EXPECT_EQ(back.dumped_epochs, progress.dumped_epochs);
  ASSERT_EQ(back.metrics.size(), progress.metrics.size());
  for (size_t i = 0; i < back.metrics.size(); ++i) {
    const auto& a = back.metrics[i];
    const auto& b = progress.metrics[i];
    EXPECT_EQ(a.epoch, b.epoch);
    EXPECT_EQ(std::vector<double>({a.train_loss, a.train_accuracy, a.test_loss, a.test_accuracy, a.lr, a.seconds}),
              std::vector<double>({b.train_loss, b.train_accuracy, b.test_loss, b.test_accuracy, b.lr, b.seconds}));
  }
  auto restored_generator = at::make_generator<at::CPUGeneratorImpl>(0);
  restored_generator.set_state(back.shuffle_rng);
  EXPECT_TRUE(torch::equal(at::randperm(50, restored_generator), at::randperm(50, generator)));
  // The same next step: equal weights alone would not show the moments were restored.
  step(model, optimizer);
  step(restored, restored_optimizer);
  EXPECT_TRUE(torch::equal(model->weight, restored->weight));
  EXPECT_TRUE(torch::equal(model->bias, restored->bias));
  fs::remove_all(run.root);
}

TEST(CheckpointCodec, ConfigIsEmptyWhenTheCheckpointPredatesItAndABadTableIsAnError) {
  const RunDirectory run = fresh_run("old_checkpoint");
  torch::nn::Linear model(2, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  torch::serialize::OutputArchive archive;  // as an older ibn wrote it: no "config", and a flat metrics table
  model->save(archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("epoch", torch::tensor(int64_t{1}));
  archive.write("shuffle_rng", at::make_generator<at::CPUGeneratorImpl>(1).get_state());
  archive.write("metrics", torch::zeros({7}, torch::kDouble));
  archive.write("dumped_epochs", torch::zeros({0}, torch::kLong));
  archive.save_to(run.checkpoint());
  CheckpointReader reader(run.checkpoint());
  EXPECT_EQ(reader.epoch(), 1);
  EXPECT_EQ(reader.config(), "");
  ibn::test::expect_error([&] { reader.restore(*model, optimizer); }, "metrics table has shape [7]");
  fs::remove_all(run.root);
}

std::vector<ibn::io::DatasetToWrite> epoch_datasets(int64_t epoch) {
  return {{fmt::format("/epochs/{}/fc1", epoch), torch::full({5, 3}, static_cast<float>(epoch)), {}}};
}

TEST(ActivationParts, QueuedEpochsAreGatheredIntoOneStoreAndThePartsRemoved) {
  const RunDirectory run = fresh_run("gather");
  fs::create_directories(run.parts());
  std::ofstream(run.part(7)) << "left by an earlier run";
  ActivationParts parts(run);
  parts.start_fresh();
  EXPECT_FALSE(fs::exists(run.part(7)));
  for (int64_t epoch : {0, 3}) parts.queue(epoch, epoch_datasets(epoch));
  parts.drain();
  EXPECT_EQ(parts.on_disk(), std::vector<int64_t>({0, 3}));
  EXPECT_TRUE(parts.dumped(3));
  EXPECT_FALSE(parts.dumped(1));
  parts.gather({{"/data/labels", torch::arange(5), {}}}, {{"complete", int64_t{1}}});
  EXPECT_FALSE(fs::exists(run.parts()));
  EXPECT_TRUE(torch::equal(ibn::io::read_dataset(run.store(), "/epochs/3/fc1"), torch::full({5, 3}, 3.0f)));
  EXPECT_TRUE(torch::equal(ibn::io::read_dataset(run.store(), "/epochs/0/fc1"), torch::zeros({5, 3})));
  EXPECT_TRUE(torch::equal(ibn::io::read_dataset(run.store(), "/data/labels"), torch::arange(5)));
  EXPECT_EQ(std::get<int64_t>(ibn::io::read_attribute(run.store(), "/", "complete")), 1);
  // Written through a temporary beside it, which is gone.
  for (const auto& entry : fs::directory_iterator(run.root)) {
    EXPECT_FALSE(ibn::io::is_temporary_of(entry.path().filename().string(), "activations.h5")) << entry.path();
  }
  fs::remove_all(run.root);
}

TEST(ActivationParts, AResumeMissingAPartIsRefusedBeforeAnythingIsCreated) {
  const RunDirectory run = fresh_run("resume");
  ActivationParts parts(run);
  ibn::test::expect_error([&] { parts.resume({0, 5}); }, "epoch-0.h5' is missing");
  EXPECT_FALSE(fs::exists(run.parts()));  // an empty parts directory would mark a complete run incomplete
  // With its parts there, the resumed run counts them as dumped and clears a killed writer's temporary.
  fs::create_directories(run.parts());
  for (int64_t epoch : {0, 5}) ibn::io::write_datasets(run.part(epoch), epoch_datasets(epoch));
  const std::string killed_temporary = run.parts() + "/.epoch-6.h5.ibn-tmp-AbC123";
  std::ofstream(killed_temporary) << "half a file";
  ActivationParts resumed(run);
  resumed.resume({0, 5});
  EXPECT_EQ(resumed.dumped_epochs(), std::vector<int64_t>({0, 5}));
  EXPECT_FALSE(fs::exists(killed_temporary));
  fs::remove_all(run.root);
}

}  // namespace
