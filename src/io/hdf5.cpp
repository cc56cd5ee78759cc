#include "ibn/io/hdf5.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <H5Cpp.h>
#include <ATen/ops/empty.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/error.h"

namespace ibn::io {
namespace {

// HDF5 prints its error stack to stderr by default; errors here become exceptions instead.
void silence_hdf5() {
  static const bool silenced = [] {
    H5::Exception::dontPrint();
    return true;
  }();
  (void)silenced;
}

H5::H5File open_for_reading(const std::string& file) {
  silence_hdf5();
  if (!std::filesystem::exists(file)) throw UsageError(fmt::format("no such file '{}'", file));
  try {
    if (!H5::H5File::isHdf5(file)) throw UsageError(fmt::format("'{}' is not an HDF5 file", file));
    return H5::H5File(file, H5F_ACC_RDONLY);
  } catch (const H5::Exception& e) {
    throw UsageError(fmt::format("cannot open HDF5 file '{}': {}", file, e.getDetailMsg()));
  }
}

// Whether every link along `path` exists (nameExists fails on a missing intermediate group).
bool path_exists(const H5::H5File& file, const std::string& path) {
  size_t pos = 0;
  while (true) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (!prefix.empty() && prefix != "/" && !file.nameExists(prefix)) return false;
    if (pos == std::string::npos) return true;
  }
}

void collect_datasets(const H5::Group& group, const std::string& prefix, std::vector<std::string>& out) {
  for (hsize_t i = 0; i < group.getNumObjs(); ++i) {
    const std::string name = group.getObjnameByIdx(i);
    const std::string path = prefix + "/" + name;
    const H5G_obj_t type = group.getObjTypeByIdx(i);
    if (type == H5G_DATASET) out.push_back(path);
    if (type == H5G_GROUP) collect_datasets(group.openGroup(name), path, out);
  }
}

std::vector<std::string> datasets_of(const H5::H5File& file) {
  std::vector<std::string> out;
  collect_datasets(file.openGroup("/"), "", out);
  std::sort(out.begin(), out.end());
  return out;
}

std::string some_datasets(const H5::H5File& file) {
  std::vector<std::string> names = datasets_of(file);
  if (names.empty()) return "the file has no datasets";
  constexpr size_t kShown = 8;
  std::string shown = fmt::format("{}", fmt::join(names.begin(), names.begin() + std::min(kShown, names.size()), ", "));
  if (names.size() > kShown) shown += fmt::format(", ... ({} in all)", names.size());
  return "datasets: " + shown;
}

H5::PredType memory_type_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return H5::PredType::NATIVE_FLOAT;
    case at::kDouble: return H5::PredType::NATIVE_DOUBLE;
    case at::kInt: return H5::PredType::NATIVE_INT32;
    case at::kLong: return H5::PredType::NATIVE_INT64;
    case at::kByte: return H5::PredType::NATIVE_UINT8;
    default: throw std::runtime_error(fmt::format("cannot write tensors of type {} to HDF5", c10::toString(t.scalar_type())));
  }
}

H5::Group ensure_groups(H5::H5File& file, const std::string& path) {
  size_t pos = 0;
  while ((pos = path.find('/', pos + 1)) != std::string::npos) {
    const std::string prefix = path.substr(0, pos);
    if (!file.nameExists(prefix)) file.createGroup(prefix);
  }
  return file.openGroup("/");
}

void write_attribute(H5::H5Object& object, const Attribute& attribute) {
  const H5::DataSpace scalar(H5S_SCALAR);
  if (const auto* text = std::get_if<std::string>(&attribute.value)) {
    // Variable-length UTF-8, which h5py returns as str (fixed-length strings come back as bytes).
    H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
    type.setCset(H5T_CSET_UTF8);
    object.createAttribute(attribute.name, type, scalar).write(type, *text);
  } else if (const auto* number = std::get_if<double>(&attribute.value)) {
    object.createAttribute(attribute.name, H5::PredType::NATIVE_DOUBLE, scalar).write(H5::PredType::NATIVE_DOUBLE, number);
  } else {
    const int64_t integer = std::get<int64_t>(attribute.value);
    object.createAttribute(attribute.name, H5::PredType::NATIVE_INT64, scalar).write(H5::PredType::NATIVE_INT64, &integer);
  }
}

void write_one(H5::H5File& file, const DatasetToWrite& d) {
  at::Tensor t = d.tensor.cpu().contiguous();
  if (t.scalar_type() == at::kBool) t = t.to(at::kByte);
  ensure_groups(file, d.path);
  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  const H5::DataSpace space(static_cast<int>(dims.size()), dims.data());
  H5::DSetCreatPropList properties;
  // Chunk and compress arrays of more than 64 KiB: rows of up to 1 MiB per chunk. Byte shuffle
  // then deflate level 1: floats compress nearly as well as at level 4, several times faster.
  constexpr int64_t kCompressAbove = 64 * 1024;
  constexpr int64_t kChunkBytes = 1 << 20;
  if (t.dim() > 0 && t.numel() * t.element_size() > kCompressAbove) {
    std::vector<hsize_t> chunk = dims;
    const int64_t row_bytes = std::max<int64_t>(1, t.numel() / t.size(0) * t.element_size());
    chunk[0] = static_cast<hsize_t>(std::clamp<int64_t>(kChunkBytes / row_bytes, 1, t.size(0)));
    properties.setChunk(static_cast<int>(chunk.size()), chunk.data());
    properties.setShuffle();
    properties.setDeflate(1);
  }
  const H5::PredType type = memory_type_of(t);
  H5::DataSet dataset = file.createDataSet(d.path, type, space, properties);
  if (t.numel() > 0) dataset.write(t.data_ptr(), type);
  for (const Attribute& a : d.attributes) write_attribute(dataset, a);
}

}  // namespace

at::Tensor read_dataset(const std::string& path, const std::string& name) {
  H5::H5File file = open_for_reading(path);
  if (name.empty() || name[0] != '/' || !path_exists(file, name)) {
    throw UsageError(fmt::format("no dataset '{}' in '{}' ({})", name, path, some_datasets(file)));
  }
  try {
    if (file.childObjType(name) != H5O_TYPE_DATASET) {
      throw UsageError(fmt::format("'{}' in '{}' is a group, not a dataset ({})", name, path, some_datasets(file)));
    }
    H5::DataSet dataset = file.openDataSet(name);
    const H5::DataSpace space = dataset.getSpace();
    std::vector<hsize_t> dims(space.getSimpleExtentNdims());
    space.getSimpleExtentDims(dims.data());
    std::vector<int64_t> sizes(dims.begin(), dims.end());
    at::Tensor out;
    const H5T_class_t type_class = dataset.getTypeClass();
    if (type_class == H5T_FLOAT) {
      const bool wide = dataset.getFloatType().getSize() > 4;
      out = at::empty(sizes, wide ? at::kDouble : at::kFloat);
      if (out.numel() > 0) dataset.read(out.data_ptr(), wide ? H5::PredType::NATIVE_DOUBLE : H5::PredType::NATIVE_FLOAT);
    } else if (type_class == H5T_INTEGER) {
      out = at::empty(sizes, at::kLong);
      if (out.numel() > 0) dataset.read(out.data_ptr(), H5::PredType::NATIVE_INT64);
    } else {
      throw DataError(fmt::format("dataset '{}' in '{}' holds neither floats nor integers", name, path));
    }
    return out;
  } catch (const H5::Exception& e) {
    throw DataError(fmt::format("cannot read dataset '{}' in '{}': {}", name, path, e.getDetailMsg()));
  }
}

std::vector<std::string> list_datasets(const std::string& path) { return datasets_of(open_for_reading(path)); }

AttributeValue read_attribute(const std::string& path, const std::string& object, const std::string& name) {
  H5::H5File file = open_for_reading(path);
  try {
    H5::Attribute attribute = object == "/" ? file.openGroup("/").openAttribute(name)
                                            : file.openDataSet(object).openAttribute(name);
    const H5T_class_t type_class = attribute.getTypeClass();
    if (type_class == H5T_STRING) {
      std::string value;
      attribute.read(attribute.getStrType(), value);
      return value;
    }
    if (type_class == H5T_FLOAT) {
      double value = 0;
      attribute.read(H5::PredType::NATIVE_DOUBLE, &value);
      return value;
    }
    int64_t value = 0;
    attribute.read(H5::PredType::NATIVE_INT64, &value);
    return value;
  } catch (const H5::Exception& e) {
    throw DataError(fmt::format("no attribute '{}' on '{}' in '{}'", name, object, path));
  }
}

void write_datasets(const std::string& path, const std::vector<DatasetToWrite>& datasets,
                    const std::vector<Attribute>& root) {
  silence_hdf5();
  const std::string temp = fmt::format("{}.tmp.{}", path, ::getpid());
  try {
    H5::H5File file(temp, H5F_ACC_TRUNC);
    H5::Group top = file.openGroup("/");
    for (const Attribute& a : root) write_attribute(top, a);
    for (const DatasetToWrite& d : datasets) write_one(file, d);
    file.flush(H5F_SCOPE_GLOBAL);
    file.close();
  } catch (const H5::Exception& e) {
    std::remove(temp.c_str());
    throw std::runtime_error(fmt::format("cannot write '{}': {}", path, e.getDetailMsg()));
  } catch (...) {
    std::remove(temp.c_str());
    throw;
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    throw std::runtime_error(fmt::format("cannot write '{}': rename failed", path));
  }
}

}  // namespace ibn::io
