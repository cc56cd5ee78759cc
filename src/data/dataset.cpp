#include "ibn/data/dataset.h"

#include <cmath>
#include <tuple>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/randperm.h>
#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/spec_string.h"

namespace ibn::data {

DatasetEntry ibsgd12_dataset();
DatasetEntry gaussian_mixture_dataset();
DatasetEntry fashion_mnist_dataset();
DatasetEntry text_dataset();

const std::vector<DatasetEntry>& datasets() {
  static const std::vector<DatasetEntry> entries{
      ibsgd12_dataset(),
      gaussian_mixture_dataset(),
      fashion_mnist_dataset(),
      text_dataset(),
  };
  return entries;
}

ClassificationData load_dataset(const std::string& text, uint64_t seed) {
  KeyValueSpec spec(text, "data spec");
  const DatasetEntry& entry = spec.find_entry(datasets(), "dataset");
  ClassificationData data = entry.load(spec, seed);
  spec.finish(entry.keys);
  return data;
}

void split_by_fraction(ClassificationData& data, const at::Tensor& inputs, const at::Tensor& labels, double test,
                       uint64_t seed) {
  const int64_t n = inputs.size(0);
  const int64_t n_test = std::max<int64_t>(1, static_cast<int64_t>(std::llround(test * static_cast<double>(n))));
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor order = at::randperm(n, generator, at::TensorOptions().dtype(at::kLong));
  const at::Tensor test_rows = std::get<0>(order.slice(0, 0, n_test).sort());
  const at::Tensor train_rows = std::get<0>(order.slice(0, n_test).sort());
  data.test = {inputs.index_select(0, test_rows), labels.index_select(0, test_rows), test_rows};
  data.train = {inputs.index_select(0, train_rows), labels.index_select(0, train_rows), train_rows};
  data.sample_shape.assign(inputs.sizes().begin() + 1, inputs.sizes().end());
}

void split_with_seed(KeyValueSpec& spec, ClassificationData& data, const at::Tensor& inputs, const at::Tensor& labels,
                     double test, uint64_t run_seed) {
  if (spec.has("split_seed")) {
    const int64_t split_seed = spec.integer_at_least("split_seed", 0, 0);
    data.spec += fmt::format(",split_seed={}", split_seed);
    split_by_fraction(data, inputs, labels, test, static_cast<uint64_t>(split_seed));
  } else {
    data.test_varies_with_seed = true;
    split_by_fraction(data, inputs, labels, test, run_seed);
  }
}

void hold_out_validation(ClassificationData& data, double fraction, uint64_t seed) {
  const int64_t n = data.train.labels.size(0);
  const auto n_validation = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
  if (!(fraction > 0 && fraction < 1) || n_validation < 1 || n_validation >= n) {
    throw UsageError(fmt::format("--validation {} of {} training samples leaves no validation or no training sample", fraction, n));
  }
  // A permutation of its own (not the train/test split's): the seed is mixed with a constant.
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x76616c6964617465ull);
  const at::Tensor order = data.sequence ? at::arange(n - 1, -1, -1, at::kLong)  // the last windows first
                                         : at::randperm(n, generator, at::TensorOptions().dtype(at::kLong));
  const at::Tensor validation_rows = std::get<0>(order.slice(0, 0, n_validation).sort());
  const at::Tensor train_rows = std::get<0>(order.slice(0, n_validation).sort());
  const Split& train = data.train;
  const auto rows = [&](const at::Tensor& r) {
    return Split{train.inputs.index_select(0, r), train.labels.index_select(0, r), train.index.index_select(0, r)};
  };
  data.test = rows(validation_rows);
  data.train = rows(train_rows);
  data.description += fmt::format("; evaluated on a validation split of {} of the {} training samples ({}), the test split unused",
                                  n_validation, n, data.sequence ? "the last windows" : "seeded");
}

}  // namespace ibn::data
