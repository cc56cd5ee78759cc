#pragma once
// The options of `ibn train` turned into everything a run needs before it writes anything.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "ibn/data/dataset.h"
#include "ibn/models/model.h"
#include "ibn/train/train.h"

namespace ibn::train {

// Everything a run needs before it writes anything: options checked, data loaded, the model
// built, the stored layers and samples chosen. Bad options throw here, with nothing written.
struct PreparedRun {
  TrainConfig config;  // the norm resolved to the model's default where none was given
  std::vector<int64_t> dumps;
  c10::Device device{c10::kCPU};
  data::ClassificationData data;
  std::shared_ptr<models::ModelImpl> model;
  std::vector<std::string> layers;
  // The evaluation samples of each split: all of them, or a fixed seeded subset.
  data::Split eval_train, eval_test;
  // The dumped samples: the evaluation samples, train then test rows (split 0/1), or a seeded
  // subset of them.
  at::Tensor dump_inputs, dump_labels, dump_index, dump_split;
};

// Throws UsageError naming the first option out of its range; reads no file.
void check_config(const TrainConfig& c);

// Checks the options, loads the data, builds the model (seeded) and chooses the stored layers
// and samples. Bad options throw here, with nothing written.
PreparedRun prepare_run(const TrainConfig& options);

// The checks a data-parallel run of `world_size` processes adds to check_config, once the data
// are known: equal shares of every batch, and rows of the dump for every rank. Throws
// UsageError; nothing for one process.
void check_world(const PreparedRun& run, int world_size);

// The resolved configuration as an .ini file whose keys are `ibn train`'s options, so
// `ibn train --config RUN/config.ini --out OTHER` repeats the run.
std::string config_text(const TrainConfig& c, const std::string& data_spec, const std::string& model_spec);

// config_text's "key = value" lines as a map.
std::map<std::string, std::string> config_entries(const std::string& text);

}  // namespace ibn::train
