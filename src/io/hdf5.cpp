#include "ibn/io/hdf5.h"


#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include <H5Cpp.h>
#include <ATen/ops/empty.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/error.h"
#include "ibn/io/atomic_file.h"

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

// The one place where HDF5's C++ exceptions (not std::exceptions) become the tool's errors:
// every public function of this file runs its body through it.
template <typename Body>
auto hdf5_boundary(const std::string& file, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const H5::Exception& e) {
    const std::string detail = e.getDetailMsg();
    throw DataError(fmt::format("cannot read HDF5 file '{}': {}", file, detail.empty() ? e.getFuncName() : detail));
  }
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

// Whether every link along `path` exists and leads through groups (nameExists fails on a
// missing intermediate group, and throws on one that is a dataset).
bool path_exists(const H5::H5File& file, const std::string& path) {
  size_t pos = 0;
  while (true) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (!prefix.empty() && prefix != "/") {
      if (!file.nameExists(prefix)) return false;
      if (pos != std::string::npos && file.childObjType(prefix) != H5O_TYPE_GROUP) return false;
    }
    if (pos == std::string::npos) return true;
  }
}

// Where an object lives (file number, address): hard links can make a group its own
// descendant, so traversals remember what they have visited.
std::string object_identity(hid_t object) {
#if H5_VERSION_GE(1, 12, 0)
  H5O_info2_t info;
  if (H5Oget_info3(object, &info, H5O_INFO_BASIC) < 0) throw DataError("cannot read an HDF5 object's header");
  const auto* where = reinterpret_cast<const char*>(&info.token);
  return std::to_string(info.fileno) + ":" + std::string(where, sizeof info.token);
#else
  H5O_info_t info;
  if (H5Oget_info2(object, &info, H5O_INFO_BASIC) < 0) throw DataError("cannot read an HDF5 object's header");
  return std::to_string(info.fileno) + ":" + std::to_string(info.addr);
#endif
}

// Deeper than this is no layout a person or a tool makes; a cycle of soft links would
// otherwise recurse without end.
constexpr int kMaxGroupDepth = 64;

void collect_datasets(const H5::Group& group, const std::string& prefix, int depth,
                      std::set<std::string>& visited, std::vector<std::string>& out) {
  if (!visited.insert(object_identity(group.getId())).second) return;  // a hard-link cycle, or a group seen already
  if (depth > kMaxGroupDepth) {
    throw DataError(fmt::format("'{}' lies more than {} groups deep; is the file's link structure circular?", prefix,
                                kMaxGroupDepth));
  }
  for (hsize_t i = 0; i < group.getNumObjs(); ++i) {
    const std::string name = group.getObjnameByIdx(i);
    const std::string path = prefix + "/" + name;
    const H5G_obj_t type = group.getObjTypeByIdx(i);
    if (type == H5G_DATASET) out.push_back(path);
    if (type == H5G_GROUP) collect_datasets(group.openGroup(name), path, depth + 1, visited, out);
  }
}

std::vector<std::string> datasets_of(const H5::H5File& file) {
  std::vector<std::string> out;
  std::set<std::string> visited;
  collect_datasets(file.openGroup("/"), "", 0, visited, out);
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

// The write path uses HDF5's C API: the C++ wrappers close objects in destructors that print
// to stderr when the close fails, which is exactly what happens when a disk fills up.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t), const char* what) : id_(id), close_(close) {
    if (id_ < 0) fail(what);
  }
  ~Handle() {
    if (id_ >= 0) close_(id_);  // on the error path only: close() reports failures otherwise
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  // Closes now, reporting failure (a close flushes, so a full disk can surface here).
  void close(const char* what) {
    const hid_t id = id_;
    id_ = -1;
    if (close_(id) < 0) fail(what);
  }
  // Why a call failed: errno when the system refused a write (HDF5 probes files on its own,
  // so other errno values can be stale), else the HDF5 call that failed.
  [[noreturn]] static void fail(const char* what) {
    const int error = errno;
    const bool refused = error == ENOSPC || error == EFBIG || error == EDQUOT || error == EROFS || error == EIO || error == EACCES;
    throw std::runtime_error(refused ? std::strerror(error) : std::string(what) + " failed");
  }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

void check(herr_t status, const char* what) {
  if (status < 0) Handle::fail(what);
}

hid_t memory_type_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return H5T_NATIVE_FLOAT;
    case at::kDouble: return H5T_NATIVE_DOUBLE;
    case at::kInt: return H5T_NATIVE_INT32;
    case at::kLong: return H5T_NATIVE_INT64;
    case at::kByte: return H5T_NATIVE_UINT8;
    default: throw std::runtime_error(fmt::format("cannot write tensors of type {} to HDF5", c10::toString(t.scalar_type())));
  }
}

// Creates the groups along `path` ("/a/b/name" creates /a and /a/b).
void ensure_groups(hid_t file, const std::string& path) {
  size_t pos = 0;
  while ((pos = path.find('/', pos + 1)) != std::string::npos) {
    const std::string prefix = path.substr(0, pos);
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) {
      Handle(H5Gcreate2(file, prefix.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, "H5Gcreate").close("H5Gclose");
    }
  }
}

void write_attribute(hid_t object, const Attribute& attribute) {
  const Handle scalar(H5Screate(H5S_SCALAR), H5Sclose, "H5Screate");
  if (const auto* text = std::get_if<std::string>(&attribute.value)) {
    // Variable-length UTF-8, which h5py returns as str (fixed-length strings come back as bytes).
    const Handle type(H5Tcopy(H5T_C_S1), H5Tclose, "H5Tcopy");
    check(H5Tset_size(type.get(), H5T_VARIABLE), "H5Tset_size");
    check(H5Tset_cset(type.get(), H5T_CSET_UTF8), "H5Tset_cset");
    Handle a(H5Acreate2(object, attribute.name.c_str(), type.get(), scalar.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, "H5Acreate");
    const char* data = text->c_str();
    check(H5Awrite(a.get(), type.get(), &data), "H5Awrite");
    a.close("H5Aclose");
  } else if (const auto* number = std::get_if<double>(&attribute.value)) {
    Handle a(H5Acreate2(object, attribute.name.c_str(), H5T_NATIVE_DOUBLE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, "H5Acreate");
    check(H5Awrite(a.get(), H5T_NATIVE_DOUBLE, number), "H5Awrite");
    a.close("H5Aclose");
  } else {
    const int64_t integer = std::get<int64_t>(attribute.value);
    Handle a(H5Acreate2(object, attribute.name.c_str(), H5T_NATIVE_INT64, scalar.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, "H5Acreate");
    check(H5Awrite(a.get(), H5T_NATIVE_INT64, &integer), "H5Awrite");
    a.close("H5Aclose");
  }
}

void write_one(hid_t file, const DatasetToWrite& d) {
  at::Tensor t = d.tensor.cpu().contiguous();
  if (t.scalar_type() == at::kBool) t = t.to(at::kByte);
  if (d.float16 && t.is_floating_point()) t = t.to(at::kHalf);
  ensure_groups(file, d.path);
  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  const Handle space(t.dim() == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                     H5Sclose, "H5Screate");
  const Handle properties(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "H5Pcreate");
  // Chunk and compress arrays of more than 64 KiB: rows of up to 1 MiB per chunk. Byte shuffle
  // then deflate level 1: floats compress nearly as well as at level 4, several times faster.
  constexpr int64_t kCompressAbove = 64 * 1024;
  constexpr int64_t kChunkBytes = 1 << 20;
  if (t.dim() > 0 && t.numel() * t.element_size() > kCompressAbove) {
    std::vector<hsize_t> chunk = dims;
    const int64_t row_bytes = std::max<int64_t>(1, t.numel() / t.size(0) * t.element_size());
    chunk[0] = static_cast<hsize_t>(std::clamp<int64_t>(kChunkBytes / row_bytes, 1, t.size(0)));
    check(H5Pset_chunk(properties.get(), static_cast<int>(chunk.size()), chunk.data()), "H5Pset_chunk");
    check(H5Pset_shuffle(properties.get()), "H5Pset_shuffle");
    check(H5Pset_deflate(properties.get(), 1), "H5Pset_deflate");
  }
  // Half tensors (float16): IEEE half as h5py writes it (HDF5 1.10 has no predefined half type).
  std::unique_ptr<Handle> half;
  if (t.scalar_type() == at::kHalf) {
    half = std::make_unique<Handle>(H5Tcopy(H5T_IEEE_F32LE), H5Tclose, "H5Tcopy");
    check(H5Tset_fields(half->get(), 15, 10, 5, 0, 10), "H5Tset_fields");
    check(H5Tset_size(half->get(), 2), "H5Tset_size");
    check(H5Tset_ebias(half->get(), 15), "H5Tset_ebias");
  }
  const hid_t type = half ? half->get() : memory_type_of(t);
  Handle dataset(H5Dcreate2(file, d.path.c_str(), type, space.get(), H5P_DEFAULT, properties.get(), H5P_DEFAULT), H5Dclose,
                 "H5Dcreate");
  if (t.numel() > 0) check(H5Dwrite(dataset.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()), "H5Dwrite");
  for (const Attribute& a : d.attributes) write_attribute(dataset.get(), a);
  dataset.close("H5Dclose");
}

}  // namespace

at::Tensor read_dataset(const std::string& path, const std::string& name) {
  return hdf5_boundary(path, [&] {
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
  });
}

std::vector<std::string> list_datasets(const std::string& path) {
  return hdf5_boundary(path, [&] { return datasets_of(open_for_reading(path)); });
}

AttributeValue read_attribute(const std::string& path, const std::string& object, const std::string& name) {
  return hdf5_boundary(path, [&]() -> AttributeValue {
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
  });
}

namespace {

// Root attributes, datasets, then every dataset of the `copy_from` files (copied as stored).
void fill_file(hid_t file, const std::vector<DatasetToWrite>& datasets, const std::vector<Attribute>& root,
               const std::vector<std::string>& copy_from) {
  {
    Handle top(H5Gopen2(file, "/", H5P_DEFAULT), H5Gclose, "H5Gopen");
    for (const Attribute& a : root) write_attribute(top.get(), a);
    top.close("H5Gclose");
  }
  for (const DatasetToWrite& d : datasets) write_one(file, d);
  for (const std::string& source_path : copy_from) {
    const H5::H5File source = open_for_reading(source_path);  // read-only: its close cannot fail on a write
    for (const std::string& name : datasets_of(source)) {
      ensure_groups(file, name);
      check(H5Ocopy(source.getId(), name.c_str(), file, name.c_str(), H5P_DEFAULT, H5P_DEFAULT), "H5Ocopy");
    }
  }
  check(H5Fflush(file, H5F_SCOPE_GLOBAL), "H5Fflush");
}

// An upper bound on the bytes of the file hdf5_image and write_datasets make: 64 KiB for the superblock and
// groups; per dataset its stored bytes (1 % more for compression that does not shrink) and
// 4 KiB of header and chunk index; text attributes at their length (the global heap); a copied
// file at its size (it brings its own metadata). A source that cannot be sized adds nothing:
// opening it reports the problem.
size_t upper_bound(const std::vector<DatasetToWrite>& datasets, const std::vector<Attribute>& root,
                   const std::vector<std::string>& copy_from) {
  size_t bound = 64 << 10;
  const auto text_bytes = [](const std::vector<Attribute>& attributes) {
    size_t bytes = 0;
    for (const Attribute& a : attributes) {
      if (const auto* text = std::get_if<std::string>(&a.value)) bytes += text->size() + 64;
    }
    return bytes;
  };
  for (const DatasetToWrite& d : datasets) {
    const size_t element = d.float16 && d.tensor.is_floating_point() ? 2 : static_cast<size_t>(d.tensor.element_size());
    bound += static_cast<size_t>(d.tensor.numel()) * element * 101 / 100 + (4 << 10) + text_bytes(d.attributes);
  }
  bound += text_bytes(root);
  for (const std::string& source : copy_from) {
    std::error_code error;
    const std::uintmax_t size = std::filesystem::file_size(source, error);
    if (!error) bound += static_cast<size_t>(size) * 101 / 100;
  }
  return bound;
}

// Runs `write`, turning its failures into errors that name `path`.
template <typename Write>
void naming_the_file(const std::string& path, Write&& write) {
  silence_hdf5();
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // the error stack is per thread: writers run on their own
  try {
    write();
  } catch (const H5::Exception& e) {
    throw DataError(fmt::format("cannot write '{}': {}", path, e.getDetailMsg()));
  } catch (const std::exception& e) {
    const std::string prefix = fmt::format("cannot write '{}'", path);  // TemporaryFile's errors name it already
    throw std::runtime_error(std::string(e.what()).rfind(prefix, 0) == 0 ? e.what() : fmt::format("{}: {}", prefix, e.what()));
  }
}

}  // namespace

std::string hdf5_image(const std::string& path, const std::vector<DatasetToWrite>& datasets,
                       const std::vector<Attribute>& root, const std::vector<std::string>& copy_from) {
  std::string image;
  naming_the_file(path, [&] {
    // The core driver grows its buffer by `increment` and zeroes each new piece: a fixed 16 MiB
    // zeroed 16 MiB for every 1 MiB part file. An eighth of the expected size wastes little.
    const size_t increment = std::max<size_t>(64 << 10, upper_bound(datasets, root, copy_from) / 8);
    const Handle access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "H5Pcreate");
    check(H5Pset_fapl_core(access.get(), increment, /*backing_store=*/false), "H5Pset_fapl_core");
    // A name of its own: HDF5 refuses to create a file under the name of one it has open.
    static std::atomic<int64_t> images{0};
    const std::string name = fmt::format("{}.in-memory.{}", path, images++);
    Handle file(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.get()), H5Fclose, "H5Fcreate");
    fill_file(file.get(), datasets, root, copy_from);
    const ssize_t size = H5Fget_file_image(file.get(), nullptr, 0);
    if (size < 0) Handle::fail("H5Fget_file_image");
    image.resize(static_cast<size_t>(size));
    if (H5Fget_file_image(file.get(), image.data(), image.size()) != size) Handle::fail("H5Fget_file_image");
    file.close("H5Fclose");
  });
  return image;
}

namespace {

// HDF5 opens the temporary again by its name: it must be the file TemporaryFile made (not a
// symlink planted under that name since), or it would write through it.
void check_same_file(hid_t file, int fd, const std::string& path) {
  void* handle = nullptr;
  check(H5Fget_vfd_handle(file, H5P_DEFAULT, &handle), "H5Fget_vfd_handle");
  struct stat ours {}, theirs {};
  if (handle == nullptr || ::fstat(fd, &ours) != 0 || ::fstat(*static_cast<int*>(handle), &theirs) != 0 ||
      ours.st_dev != theirs.st_dev || ours.st_ino != theirs.st_ino) {
    throw std::runtime_error(fmt::format("its temporary '{}' was replaced while being written", path));
  }
}

}  // namespace

// Written by HDF5 straight into the temporary file, which is then synced and renamed: no copy
// of the file is held in memory (a run's final store gathers every dumped epoch). HDF5 1.10
// cannot close a file whose write failed, and crashes on it at exit; so disk space for an upper
// bound of the file is reserved first (posix_fallocate), once before HDF5 creates the file (a
// disk without room fails there, with nothing of HDF5's open) and again after (the create
// truncates), and the file is cut to its length once closed. Copy-on-write file systems (ZFS,
// btrfs) do not honour reservations; there a full disk can still fail inside HDF5.
void write_datasets(const std::string& path, const std::vector<DatasetToWrite>& datasets,
                    const std::vector<Attribute>& root, const std::vector<std::string>& copy_from) {
  naming_the_file(path, [&] {
    const size_t bound = upper_bound(datasets, root, copy_from);
    TemporaryFile temporary(path);
    temporary.reserve(bound);
    Handle file(H5Fcreate(temporary.path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose, "H5Fcreate");
    check_same_file(file.get(), temporary.descriptor(), temporary.path());
    temporary.reserve(bound);
    fill_file(file.get(), datasets, root, copy_from);  // ends with a flush
    hsize_t length = 0;
    check(H5Fget_filesize(file.get(), &length), "H5Fget_filesize");
    file.close("H5Fclose");
    temporary.shrink_to(static_cast<size_t>(length));
    temporary.commit();
  });
}

std::string read_text_attribute(const std::string& file, const std::string& object, const std::string& name) {
  const AttributeValue value = read_attribute(file, object, name);
  if (const auto* text = std::get_if<std::string>(&value)) return *text;
  throw DataError(fmt::format("'{}': attribute '{}' of '{}' is not text", file, name, object));
}

std::vector<double> read_doubles(const std::string& file, const std::string& dataset) {
  const at::Tensor t = read_dataset(file, dataset).to(at::kDouble).contiguous();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

}  // namespace ibn::io
