#pragma once
// The files of a run directory (`ibn train --out RUN`), named in one place:
//   config.ini      the run's options, as `ibn train --config` reads them
//   checkpoint.pt   weights, optimizer state and progress (train/checkpoint.h)
//   metrics.csv     one row per epoch
//   activations.h5  the store: every dumped epoch, the samples, metrics and provenance
//   activations.parts/epoch-E.h5  each dumped epoch while the run trains, gathered at its end
#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace ibn::train {

struct RunDirectory {
  std::string root;

  std::string config() const { return root + "/config.ini"; }
  std::string checkpoint() const { return root + "/checkpoint.pt"; }
  std::string metrics() const { return root + "/metrics.csv"; }
  std::string store() const { return root + "/activations.h5"; }
  std::string parts() const { return root + "/activations.parts"; }
  std::string part(int64_t epoch) const { return fmt::format("{}/epoch-{}.h5", parts(), epoch); }
  // The files of the run written through io::write_file_atomically (whose temporaries a killed
  // run may leave behind), by name.
  static constexpr const char* kAtomicFiles[] = {"config.ini", "metrics.csv", "checkpoint.pt", "activations.h5"};
};

}  // namespace ibn::train
