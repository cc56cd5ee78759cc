#include "activation_parts.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/io/atomic_file.h"

namespace ibn::train {

void ActivationParts::start_fresh() {
  std::filesystem::remove_all(run_.parts());
  std::filesystem::create_directories(run_.parts());
  dumped_.clear();
}

// Checked before anything is created: a refused resume of a finished run (its parts gathered
// and removed) must not leave an empty parts directory, which would mark the run incomplete.
void ActivationParts::resume(const std::vector<int64_t>& dumped) {
  for (const int64_t epoch : dumped) {
    if (!std::filesystem::exists(run_.part(epoch))) {
      throw DataError(fmt::format("cannot resume '{}': '{}' is missing; start the run again without --resume", run_.root,
                                  run_.part(epoch)));
    }
  }
  std::filesystem::create_directories(run_.parts());
  remove_temporaries_of_killed_run();
  dumped_ = dumped;
}

// A killed writer leaves ".epoch-E.h5.ibn-tmp-XXXXXX", the temporary of part E.
void ActivationParts::remove_temporaries_of_killed_run() const {
  for (const auto& entry : std::filesystem::directory_iterator(run_.parts())) {
    const std::string name = entry.path().filename().string();
    const size_t marker = name.find(".h5.");
    if (name.rfind(".epoch-", 0) == 0 && marker != std::string::npos && io::is_temporary_of(name, name.substr(1, marker + 2))) {
      std::filesystem::remove(entry.path());
    }
  }
}

void ActivationParts::queue(int64_t epoch, std::vector<io::DatasetToWrite> datasets) {
  writer_.write(run_.part(epoch), std::move(datasets));
  dumped_.push_back(epoch);
}

void ActivationParts::drain() { writer_.drain(); }

bool ActivationParts::dumped(int64_t epoch) const { return std::find(dumped_.begin(), dumped_.end(), epoch) != dumped_.end(); }

std::vector<int64_t> ActivationParts::on_disk() const {
  std::vector<int64_t> written;
  for (const int64_t epoch : dumped_) {
    if (std::filesystem::exists(run_.part(epoch))) written.push_back(epoch);
  }
  return written;
}

void ActivationParts::gather(const std::vector<io::DatasetToWrite>& datasets, const std::vector<io::Attribute>& attributes) {
  std::vector<std::string> files;
  for (const int64_t epoch : dumped_) files.push_back(run_.part(epoch));
  io::write_datasets(run_.store(), datasets, attributes, files);
  std::filesystem::remove_all(run_.parts());
}

}  // namespace ibn::train
