#pragma once
// Writing files so that a reader never sees half of one: write a temporary file beside the
// target, flush it, then rename it over the target (atomic on POSIX file systems).
#include <string>

namespace ibn::io {

// Throws std::runtime_error naming the path and the system's reason; the target is then
// untouched and the temporary file removed.
void write_file_atomically(const std::string& path, const std::string& content);

}  // namespace ibn::io
