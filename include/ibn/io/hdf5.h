#pragma once
// A small, generic HDF5 layer: read an N-d dataset of any float or integer type into a tensor,
// write tensors with attributes into a new file atomically (temporary name, then rename).
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ibn::io {

using AttributeValue = std::variant<std::string, double, int64_t>;

struct Attribute {
  std::string name;
  AttributeValue value;
};

struct DatasetToWrite {
  std::string path;               // "/group/name"; groups are created as needed
  at::Tensor tensor;              // any device; float16/32/64, int32/64, uint8 or bool
  std::vector<Attribute> attributes;
  bool float16 = false;           // store floats as IEEE half (h5py's float16): half the bytes
};

// A CPU tensor holding the dataset: float64 -> kDouble, other floats (float16, float32) ->
// kFloat, every integer type -> kLong.
// Throws ibn::UsageError for a missing file, a file that is not HDF5, or a missing dataset
// (naming the datasets the file has), and ibn::DataError for types it cannot read.
at::Tensor read_dataset(const std::string& file, const std::string& dataset);

// Every dataset path in the file, sorted: for error messages and `ibn mi --list`.
std::vector<std::string> list_datasets(const std::string& file);

// Reads a string or numeric attribute of an object ("/" for the file); throws if absent.
AttributeValue read_attribute(const std::string& file, const std::string& object, const std::string& name);
// The same for a text attribute; ibn::DataError when it is absent or not text.
std::string read_text_attribute(const std::string& file, const std::string& object, const std::string& name);

// A dataset of any numeric type as doubles, flattened in row-major order (read_dataset's rules).
std::vector<double> read_doubles(const std::string& file, const std::string& dataset);

// Writes a new file holding `datasets` (chunked and compressed when large), `root` attributes
// on "/", and every dataset of the files in `copy_from` at the same path (copied as stored, so
// compressed chunks are not recompressed). The file appears complete or not at all; an existing
// file of that name is replaced only on success. HDF5 writes straight into a temporary beside
// it (no copy of the file in memory), which is synced and renamed. Throws std::runtime_error
// naming the path.
void write_datasets(const std::string& file, const std::vector<DatasetToWrite>& datasets,
                    const std::vector<Attribute>& root = {}, const std::vector<std::string>& copy_from = {});
// The bytes of the file write_datasets would write to `file` (for io::write_files_atomically,
// when several files must appear together).
std::string hdf5_image(const std::string& file, const std::vector<DatasetToWrite>& datasets,
                       const std::vector<Attribute>& root = {}, const std::vector<std::string>& copy_from = {});

}  // namespace ibn::io
