#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "checkpoint.h"
#include "ibn/io/hdf5.h"
#include "ibn/train/run_directory.h"
#include "ibn/train/train.h"
#include "prepared_run.h"

namespace ibn::train {

std::map<std::string, std::string> read_run_config(const std::string& run) {
  std::ifstream in(RunDirectory{run}.config());
  return config_entries(std::string(std::istreambuf_iterator<char>(in), {}));
}

RunStatus run_status(const std::string& run) {
  RunStatus status;
  const RunDirectory files{run};
  if (!std::filesystem::exists(files.config())) {
    status.summary = fmt::format("'{}' is not a run directory (no config.ini)", run);
    return status;
  }
  const auto config = read_run_config(run);
  if (config.count("epochs")) status.epochs = std::atoll(config.at("epochs").c_str());
  const std::string checkpoint = files.checkpoint();
  if (std::filesystem::exists(checkpoint)) {
    try {
      CheckpointReader reader(checkpoint);
      status.checkpoint_epoch = reader.epoch();
      // The run's planned length is the one it was started with, whatever config.ini says now.
      const auto started_with = config_entries(reader.config());
      if (started_with.count("epochs")) status.epochs = std::atoll(started_with.at("epochs").c_str());
    } catch (const std::exception&) {
      status.checkpoint_epoch = -1;  // unreadable: reported as no checkpoint
    }
  }
  const std::string store = files.store();
  bool complete = false;
  std::string unreadable;  // why a store that should be complete cannot be read
  if (std::filesystem::exists(store) && !std::filesystem::exists(files.parts())) {
    try {
      complete = std::get<int64_t>(io::read_attribute(store, "/", "complete")) == 1;
    } catch (const std::exception& e) {
      unreadable = e.what();
    }
  }
  if (!unreadable.empty()) {
    // The store is there and nothing is pending, yet it does not read: a damaged file. Resuming
    // cannot rebuild it (the parts were removed once gathered into it).
    status.state = RunStatus::State::damaged;
    status.summary = fmt::format("{}: its activations.h5 cannot be read ({}); train the run again", run, unreadable);
  } else if (complete) {
    status.state = RunStatus::State::complete;
    status.summary = fmt::format("{}: complete ({} epochs)", run, status.epochs);
  } else {
    status.state = RunStatus::State::incomplete;
    status.summary =
        status.checkpoint_epoch >= 0
            ? fmt::format("{}: incomplete, trained to epoch {} of {}; resume with: ibn train --resume {}", run,
                          status.checkpoint_epoch, status.epochs, run)
            : fmt::format("{}: incomplete, no checkpoint yet (killed early, or still running); start it again", run);
  }
  return status;
}

}  // namespace ibn::train
