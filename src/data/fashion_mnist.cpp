// fashion-mnist: the gzip'd IDX files of Debian's dataset-fashion-mnist
// (/usr/share/datasets/fashion-mnist) or of any directory given (dir=...), read directly.
// Inputs [N, 1, 28, 28] scaled to [0, 1]; the files' own train (60 000) and test (10 000)
// splits, optionally cut to seeded subsets (train_n, test_n) for quick runs.
#include <zlib.h>

#include <array>
#include <filesystem>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/randperm.h>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "ibn/data/dataset.h"
#include "ibn/error.h"
#include "ibn/spec_string.h"

namespace ibn::data {
namespace {

constexpr const char* kDefaultDir = "/usr/share/datasets/fashion-mnist";
constexpr uint32_t kImageMagic = 0x00000803;  // unsigned bytes, 3 dims
constexpr uint32_t kLabelMagic = 0x00000801;  // unsigned bytes, 1 dim

// The whole decompressed file.
std::vector<uint8_t> read_gzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) throw DataError(fmt::format("cannot open '{}'", path));
  std::vector<uint8_t> bytes;
  std::array<uint8_t, 1 << 16> chunk{};
  int got = 0;
  while ((got = gzread(file, chunk.data(), chunk.size())) > 0) bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + got);
  const bool failed = got < 0;
  gzclose(file);
  if (failed) throw DataError(fmt::format("'{}' is not a readable gzip file", path));
  return bytes;
}

uint32_t big_endian(const std::vector<uint8_t>& b, size_t at) {
  return (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) | uint32_t{b[at + 3]};
}

}  // namespace

// Reads one IDX file of unsigned bytes (images [N, rows, cols] or labels [N]) into a uint8 tensor.
at::Tensor read_idx(const std::string& path) {
  const std::vector<uint8_t> bytes = read_gzip(path);
  if (bytes.size() < 8) throw DataError(fmt::format("'{}' is too short for an IDX file", path));
  const uint32_t magic = big_endian(bytes, 0);
  if (magic != kImageMagic && magic != kLabelMagic) {
    throw DataError(fmt::format("'{}' is not an IDX file of unsigned bytes (magic {:#010x})", path, magic));
  }
  const size_t dims = magic & 0xff;
  std::vector<int64_t> shape;
  size_t count = 1;
  for (size_t d = 0; d < dims; ++d) {
    shape.push_back(big_endian(bytes, 4 + 4 * d));
    count *= static_cast<size_t>(shape.back());
  }
  const size_t header = 4 + 4 * dims;
  if (bytes.size() != header + count) {
    throw DataError(fmt::format("'{}' holds {} bytes of data; its header promises {}", path, bytes.size() - header, count));
  }
  return at::from_blob(const_cast<uint8_t*>(bytes.data() + header), shape, at::kByte).clone();
}

namespace {

// The decoded files, kept for the process: checking a sweep loads the dataset once per point
// (55 points re-read 55 MB of gzip each), and a run reads it once. Keyed by path, size and
// modification time, so a file rewritten in between is read again.
at::Tensor read_idx_cached(const std::string& path) {
  static std::mutex mutex;
  static std::map<std::string, at::Tensor> decoded;
  const auto stamp = std::filesystem::last_write_time(path).time_since_epoch().count();
  const std::string key = fmt::format("{}\n{}\n{}", path, std::filesystem::file_size(path), stamp);
  const std::lock_guard<std::mutex> lock(mutex);
  const auto found = decoded.find(key);
  if (found != decoded.end()) return found->second;
  return decoded.emplace(key, read_idx(path)).first->second;
}

Split subset(const at::Tensor& images, const at::Tensor& labels, int64_t n, uint64_t seed) {
  at::Tensor rows = at::arange(images.size(0), at::kLong);
  if (n < images.size(0)) {
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
    rows = std::get<0>(at::randperm(images.size(0), g, at::TensorOptions().dtype(at::kLong)).slice(0, 0, n).sort());
  }
  return {images.index_select(0, rows).unsqueeze(1).to(at::kFloat).div(255.0), labels.index_select(0, rows).to(at::kLong), rows};
}

ClassificationData load(KeyValueSpec& kv, uint64_t seed) {
  const std::string dir = kv.text_value("dir", kDefaultDir);
  const int64_t train_n = kv.integer_at_least("train_n", 60000, 1);
  const int64_t test_n = kv.integer_at_least("test_n", 10000, 1);
  const auto file = [&](const char* name) {
    const std::string path = dir + "/" + name;
    if (!std::filesystem::exists(path)) {
      throw UsageError(fmt::format("fashion-mnist: no '{}'{}", path,
                                   dir == kDefaultDir ? " (install Debian's dataset-fashion-mnist: apt-get install dataset-fashion-mnist)"
                                                      : " (dir= must hold the four *-ubyte.gz files)"));
    }
    return read_idx_cached(path);
  };
  const at::Tensor train_images = file("train-images-idx3-ubyte.gz"), train_labels = file("train-labels-idx1-ubyte.gz");
  const at::Tensor test_images = file("t10k-images-idx3-ubyte.gz"), test_labels = file("t10k-labels-idx1-ubyte.gz");
  if (train_images.size(0) != train_labels.size(0) || test_images.size(0) != test_labels.size(0)) {
    throw DataError(fmt::format("fashion-mnist in '{}': image and label counts differ", dir));
  }
  ClassificationData data;
  data.spec = fmt::format("fashion-mnist:dir={}:train_n={}:test_n={}", dir, std::min(train_n, train_images.size(0)),
                          std::min(test_n, test_images.size(0)));
  data.description = fmt::format("Fashion-MNIST from {}, pixels scaled to [0, 1]", dir);
  data.classes = 10;
  data.train = subset(train_images, train_labels, train_n, seed);
  data.test = subset(test_images, test_labels, test_n, seed + 1);
  data.sample_shape.assign(data.train.inputs.sizes().begin() + 1, data.train.inputs.sizes().end());
  return data;
}

}  // namespace

DatasetEntry fashion_mnist_dataset() {
  return {"fashion-mnist", "Fashion-MNIST 28x28 images, 10 classes (Debian's dataset-fashion-mnist or dir=...)",
          "dir (/usr/share/datasets/fashion-mnist), train_n (60000), test_n (10000)", load};
}

}  // namespace ibn::data
