#pragma once
// The activations of a run while it trains: each dumped epoch goes to its own file,
// RUN/activations.parts/epoch-E.h5, written atomically by a background thread while training
// goes on, so a killed run keeps every epoch it dumped. The end of the run gathers the parts
// into RUN/activations.h5.
#include <cstdint>
#include <string>
#include <vector>

#include "ibn/io/background_writer.h"
#include "ibn/io/hdf5.h"
#include "ibn/train/run_directory.h"

namespace ibn::train {

class ActivationParts {
 public:
  explicit ActivationParts(RunDirectory run) : run_(std::move(run)) {}

  // A fresh run: parts an earlier run left in the directory are not ours.
  void start_fresh();
  // A resumed run: the epochs its checkpoint counts as dumped. Throws if a part is missing.
  void resume(const std::vector<int64_t>& dumped);

  // Queues an epoch's file; the epoch counts as dumped once queued (a failed write is reported
  // by a later call, and on_disk() says what was written).
  void queue(int64_t epoch, std::vector<io::DatasetToWrite> datasets);
  // Waits until every queued part is on disk; throws the first failed write.
  void drain();

  bool dumped(int64_t epoch) const;
  const std::vector<int64_t>& dumped_epochs() const { return dumped_; }
  std::vector<int64_t> on_disk() const;

  // Writes RUN/activations.h5: `datasets` and every part, with `attributes` on its root; then
  // removes the parts.
  void gather(const std::vector<io::DatasetToWrite>& datasets, const std::vector<io::Attribute>& attributes);

 private:
  void remove_temporaries_of_killed_run() const;

  RunDirectory run_;
  std::vector<int64_t> dumped_;
  io::BackgroundWriter writer_{2};
};

}  // namespace ibn::train
