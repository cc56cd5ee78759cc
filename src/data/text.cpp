// text: byte-level language modelling on any files or directories (UTF-8 or not: tokens are
// bytes). Default corpus: Debian's fortunes (/usr/share/games/fortunes, the files without an
// extension). The corpus is concatenated in path order (directory entries sorted), its last
// `valid` fraction held out contiguously, and each part cut into non-overlapping windows:
// inputs [N, context] bytes, labels [N, context] the next bytes.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include <ATen/ops/arange.h>
#include <ATen/ops/from_blob.h>
#include <fmt/format.h>

#include "ibn/data/dataset.h"
#include "ibn/error.h"
#include "ibn/spec_string.h"

namespace ibn::data {
namespace {

namespace fs = std::filesystem;
constexpr const char* kFortunes = "/usr/share/games/fortunes";

void append_file(const fs::path& path, std::vector<uint8_t>& bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt::format("cannot read '{}'", path.string()));
  bytes.insert(bytes.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Files of a directory in name order; for the default corpus only those without an extension
// (fortunes ships each text beside its .dat index and .u8 copy).
std::vector<fs::path> files_of(const fs::path& dir, bool without_extension_only) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    if (without_extension_only && entry.path().has_extension()) continue;
    files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

Split windows(const std::vector<uint8_t>& bytes, size_t begin, size_t end, int64_t context) {
  const int64_t n = static_cast<int64_t>((end - begin - 1) / static_cast<size_t>(context));
  const at::Tensor all = at::from_blob(const_cast<uint8_t*>(bytes.data() + begin), {static_cast<int64_t>(end - begin)}, at::kByte)
                             .to(at::kLong);
  const at::Tensor inputs = all.slice(0, 0, n * context).reshape({n, context});
  const at::Tensor labels = all.slice(0, 1, n * context + 1).reshape({n, context});
  return {inputs, labels, at::arange(n, at::kLong)};
}

ClassificationData load(KeyValueSpec& kv, uint64_t) {
  const std::string paths = kv.text_value("path", kFortunes);
  const int64_t context = kv.integer_at_least("context", 64, 2);
  const double valid = kv.number("valid", 0.1);
  kv.require_within("valid", valid, 0.01, 0.5);
  const int64_t max_bytes = kv.integer_at_least("max_bytes", 0, 0);
  std::vector<uint8_t> bytes;
  for (const fs::path path : split(paths, '|')) {
    if (!fs::exists(path)) {
      throw UsageError(fmt::format("text: no such file or directory '{}'{}", path.string(),
                                   path == kFortunes ? " (install Debian's fortunes: apt-get install fortunes)" : ""));
    }
    if (fs::is_directory(path)) {
      for (const fs::path& file : files_of(path, path == kFortunes)) append_file(file, bytes);
    } else {
      append_file(path, bytes);
    }
  }
  if (max_bytes > 0 && bytes.size() > static_cast<size_t>(max_bytes)) bytes.resize(static_cast<size_t>(max_bytes));
  const size_t boundary = static_cast<size_t>(static_cast<double>(bytes.size()) * (1.0 - valid));
  if (boundary < static_cast<size_t>(context) + 1 || bytes.size() - boundary < static_cast<size_t>(context) + 1) {
    throw DataError(fmt::format("text: {} bytes are too few for windows of {} in both parts", bytes.size(), context));
  }
  ClassificationData data;
  data.spec = fmt::format("text:path={}:context={}:valid={}:max_bytes={}", paths, context, valid, max_bytes);
  data.description = fmt::format("{} bytes of {}; byte tokens; last {} held out", bytes.size(), paths, valid);
  data.classes = 256;
  data.sequence = true;
  data.train = windows(bytes, 0, boundary, context);
  data.test = windows(bytes, boundary, bytes.size(), context);
  data.sample_shape = {context};
  return data;
}

}  // namespace

DatasetEntry text_dataset() {
  return {"text", "byte-level language modelling on files or directories (default: Debian's fortunes)",
          "path (/usr/share/games/fortunes; several joined by |), context (64), valid (0.1), max_bytes (0: all)", load};
}

}  // namespace ibn::data
