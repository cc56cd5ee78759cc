#include "ibn/io/background_writer.h"

#include <stdexcept>

namespace ibn::io {

BackgroundWriter::BackgroundWriter(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {
  thread_ = std::thread([this] { work(); });
}

BackgroundWriter::~BackgroundWriter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void BackgroundWriter::rethrow_failure() {
  if (failure_) std::rethrow_exception(failure_);
}

void BackgroundWriter::write(std::string file, std::vector<DatasetToWrite> datasets, std::vector<Attribute> root) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return queue_.size() < capacity_ || failure_; });
  rethrow_failure();
  queue_.push_back({std::move(file), std::move(datasets), std::move(root)});
  changed_.notify_all();
}

void BackgroundWriter::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return (queue_.empty() && !busy_) || failure_; });
  rethrow_failure();
}

void BackgroundWriter::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    changed_.wait(lock, [this] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) return;  // stopping, and nothing left to write
    Job job = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    const bool skip = failure_ != nullptr;
    lock.unlock();
    std::exception_ptr error;
    try {
      if (!skip) write_datasets(job.file, job.datasets, job.root);
    } catch (...) {
      error = std::current_exception();
    }
    job = Job();  // free the tensors before waiting again
    lock.lock();
    busy_ = false;
    if (error && !failure_) failure_ = error;
    changed_.notify_all();
  }
}

}  // namespace ibn::io
