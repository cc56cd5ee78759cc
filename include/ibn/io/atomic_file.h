#pragma once
// Writing files so that a reader never sees half of one: write a temporary file beside the
// target, flush it, then rename it over the target (atomic on POSIX file systems).
#include <cstddef>
#include <string>

namespace ibn::io {

// Throws std::runtime_error naming the path and the system's reason; the target is then
// untouched and the temporary file removed.
void write_file_atomically(const std::string& path, const char* data, size_t size);
inline void write_file_atomically(const std::string& path, const std::string& content) {
  write_file_atomically(path, content.data(), content.size());
}

}  // namespace ibn::io
