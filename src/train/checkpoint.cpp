#include "checkpoint.h"

#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/error.h"

namespace ibn::train {
namespace {

constexpr int64_t kMetricColumns = 7;  // EpochMetrics' fields, in declaration order

at::Tensor text_as_tensor(const std::string& text) {
  return torch::tensor(std::vector<uint8_t>(text.begin(), text.end()), torch::kByte);
}

std::string tensor_as_text(const at::Tensor& bytes) {
  const at::Tensor b = bytes.contiguous();
  const auto* data = b.data_ptr<uint8_t>();
  return std::string(data, data + b.numel());
}

at::Tensor metrics_as_tensor(const std::vector<EpochMetrics>& metrics) {
  std::vector<double> rows;
  for (const EpochMetrics& m : metrics) {
    rows.insert(rows.end(), {static_cast<double>(m.epoch), m.train_loss, m.train_accuracy, m.test_loss, m.test_accuracy, m.lr, m.seconds});
  }
  return torch::tensor(rows, torch::kDouble).reshape({-1, kMetricColumns});
}

std::vector<EpochMetrics> tensor_as_metrics(const at::Tensor& table) {
  if (table.dim() != 2 || table.size(1) != kMetricColumns || table.size(0) < 1) {
    throw DataError(fmt::format("the checkpoint's metrics table has shape [{}]; expected [epochs, {}]", fmt::join(table.sizes(), ", "), kMetricColumns));
  }
  std::vector<EpochMetrics> metrics;
  const at::Tensor rows = table.to(torch::kDouble).contiguous();
  const double* v = rows.data_ptr<double>();
  for (int64_t r = 0; r < rows.size(0); ++r, v += kMetricColumns) {
    metrics.push_back({static_cast<int64_t>(v[0]), v[1], v[2], v[3], v[4], v[5], v[6]});
  }
  return metrics;
}

}  // namespace

std::string encode_checkpoint(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer,
                              const TrainingProgress& progress, const std::string& config) {
  torch::serialize::OutputArchive archive;
  model.save(archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("epoch", torch::tensor(progress.epoch));
  archive.write("shuffle_rng", progress.shuffle_rng);
  archive.write("metrics", metrics_as_tensor(progress.metrics));
  archive.write("dumped_epochs", torch::tensor(progress.dumped_epochs, torch::kLong));
  archive.write("config", text_as_tensor(config));
  std::ostringstream bytes;
  archive.save_to(bytes);
  return bytes.str();
}

CheckpointReader::CheckpointReader(const std::string& path) { archive_.load_from(path); }

CheckpointReader::CheckpointReader(std::istream& bytes) { archive_.load_from(bytes); }

// InputArchive::read fills the tensor it is given, so each value gets its own.
at::Tensor CheckpointReader::read(const std::string& key) {
  at::Tensor value;
  archive_.read(key, value);
  return value;
}

int64_t CheckpointReader::epoch() { return read("epoch").item<int64_t>(); }

std::string CheckpointReader::config() {
  at::Tensor bytes;
  if (!archive_.try_read("config", bytes)) return "";
  return tensor_as_text(bytes);
}

TrainingProgress CheckpointReader::restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer) {
  model.load(archive_);
  torch::serialize::InputArchive optimizer_archive;
  archive_.read("optimizer", optimizer_archive);
  optimizer.load(optimizer_archive);
  TrainingProgress progress;
  progress.epoch = epoch();
  progress.shuffle_rng = read("shuffle_rng");
  progress.metrics = tensor_as_metrics(read("metrics"));
  const at::Tensor dumped = read("dumped_epochs").to(torch::kLong).contiguous();
  progress.dumped_epochs.assign(dumped.data_ptr<int64_t>(), dumped.data_ptr<int64_t>() + dumped.numel());
  return progress;
}

}  // namespace ibn::train
