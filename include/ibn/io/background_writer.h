#pragma once
// Writes HDF5 files on a thread of its own, so that compression and disk time overlap with
// training. The queue is bounded: a producer that gets ahead by more than `capacity` files
// waits, so memory stays at most `capacity` files' worth of tensors.
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "ibn/io/hdf5.h"

namespace ibn::io {

class BackgroundWriter {
 public:
  explicit BackgroundWriter(size_t capacity = 2);
  // Finishes the queued files, then stops; errors left unreported by drain() are dropped.
  ~BackgroundWriter();
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;

  // Queues a file for write_datasets (atomic: whole or absent). Waits while the queue is full.
  // Throws the first failure of an earlier write; once one write failed, later ones are dropped.
  void write(std::string file, std::vector<DatasetToWrite> datasets, std::vector<Attribute> root = {});
  // Waits until every queued file is on disk; throws the first failure.
  void drain();

 private:
  struct Job {
    std::string file;
    std::vector<DatasetToWrite> datasets;
    std::vector<Attribute> root;
  };
  void work();
  void rethrow_failure();

  const size_t capacity_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Job> queue_;
  bool busy_ = false, stopping_ = false;
  std::exception_ptr failure_;
  std::thread thread_;
};

}  // namespace ibn::io
