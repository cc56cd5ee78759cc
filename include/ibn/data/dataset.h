#pragma once
// Datasets (SPEC §5), one registry; spec strings like every plug-in point:
//   ibsgd12:test=0.15          gaussian-mixture:classes=2,informative=2,nuisance=8,n=4000
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ibn {
class KeyValueSpec;
}

namespace ibn::data {

struct Split {
  at::Tensor inputs;  // [N, ...] float32
  at::Tensor labels;  // [N] int64 in 0..classes-1
  at::Tensor index;   // [N] int64: each sample's row in the generated/loaded whole
};

// A classification dataset held in memory, split by seed and fraction (or, for text, the
// next-token prediction of byte windows).
struct ClassificationData {
  std::string spec;                  // canonical, every parameter resolved
  std::string description;           // how it was made (label rule, source path)
  Split train, test;
  int64_t classes = 0;
  std::vector<int64_t> sample_shape;  // per-sample input shape, e.g. {12} or {1, 28, 28}
  // Sequence data (text): inputs [N, T] token ids, labels [N, T] the next tokens; models emit
  // logits [N, T, classes] and losses are per token (bits per byte for bytes).
  bool sequence = false;
  // Whether another run seed puts other samples in the test split (a split drawn with the run's
  // seed): then one seed's test samples are another's training samples, and a learning-rate
  // search over seeds would see test samples. `split_seed=N` fixes such a split.
  bool test_varies_with_seed = false;
};

struct DatasetEntry {
  std::string name;
  std::string summary;
  std::string keys;  // accepted keys with defaults
  ClassificationData (*load)(KeyValueSpec& spec, uint64_t seed);
};

const std::vector<DatasetEntry>& datasets();

// Throws ibn::UsageError for an unknown dataset, key or value, or missing files (naming the
// Debian package that provides them).
ClassificationData load_dataset(const std::string& spec, uint64_t seed);

// Splits inputs/labels into train and test by a seeded permutation; `test` in (0, 1).
void split_by_fraction(ClassificationData& data, const at::Tensor& inputs, const at::Tensor& labels,
                       double test, uint64_t seed);

// For loaders of generated data: split_by_fraction with the spec's `split_seed` (a whole number
// >= 0; appended to data.spec) when it has one, else with the run's seed (test_varies_with_seed).
void split_with_seed(KeyValueSpec& spec, ClassificationData& data, const at::Tensor& inputs, const at::Tensor& labels,
                     double test, uint64_t run_seed);

// Moves a fraction in (0, 1) of the training samples into a validation split that takes the
// test split's place (the test samples are dropped): training then never sees the validation
// samples, and nothing sees the test samples. The rows are drawn with `seed`; for sequence data
// (text windows in corpus order) they are the last training windows, one contiguous block, so
// that no validation window has training text on both sides. ibn::UsageError when either part
// would be empty.
void hold_out_validation(ClassificationData& data, double fraction, uint64_t seed);

// One gzip'd IDX file of unsigned bytes (MNIST's format) as a uint8 tensor; ibn::DataError for
// a file that is not one or whose length disagrees with its header.
at::Tensor read_idx(const std::string& path);

}  // namespace ibn::data
