#include "ibn/io/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

namespace ibn::io {

void write_file_atomically(const std::string& path, const char* data, size_t size) {
  const std::string temp = fmt::format("{}.tmp.{}", path, ::getpid());
  FILE* file = std::fopen(temp.c_str(), "wb");
  if (file == nullptr) {
    throw std::runtime_error(fmt::format("cannot write '{}': {}", path, std::strerror(errno)));
  }
  const bool written = std::fwrite(data, 1, size, file) == size &&
                       std::fflush(file) == 0 && ::fsync(::fileno(file)) == 0;
  int error = written ? 0 : errno;
  if (std::fclose(file) != 0 && error == 0) error = errno;  // a full disk can surface only here
  if (error != 0) {
    std::remove(temp.c_str());
    throw std::runtime_error(fmt::format("cannot write '{}': {}", path, std::strerror(error)));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(temp.c_str());
    throw std::runtime_error(fmt::format("cannot write '{}': {}", path, std::strerror(rename_errno)));
  }
}

}  // namespace ibn::io
