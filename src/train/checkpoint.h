#pragma once
// A run's checkpoint (RUN/checkpoint.pt): the model's and the optimizer's state, the options the
// run was started with, and the progress a later epoch depends on. One codec for the three
// readers: training (save, resume), the resume check, and `run_status`.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ibn/train/train.h"

namespace ibn::train {

// Everything a later epoch depends on besides the weights and the optimizer's moments.
struct TrainingProgress {
  int64_t epoch = 0;                   // the last epoch trained
  std::vector<EpochMetrics> metrics;   // epochs 0 .. epoch
  std::vector<int64_t> dumped_epochs;  // the dumped epochs whose part files were on disk
  at::Tensor shuffle_rng;              // the state of the batch order's generator
};

// The checkpoint's bytes. Serialized in memory for the caller to write atomically: LibTorch's
// file writer aborts the process when a write fails (it throws from a destructor), and a full
// disk must be an error.
std::string encode_checkpoint(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer,
                              const TrainingProgress& progress, const std::string& config);

class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path);  // throws when the file cannot be read
  explicit CheckpointReader(std::istream& bytes);      // a checkpoint's bytes (encode_checkpoint's)
  int64_t epoch();
  // The run's options as config.ini held them when it started; "" for a checkpoint that
  // predates that record.
  std::string config();
  // Loads the model's and the optimizer's state; returns the progress.
  TrainingProgress restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer);

 private:
  at::Tensor read(const std::string& key);
  torch::serialize::InputArchive archive_;
};

}  // namespace ibn::train
