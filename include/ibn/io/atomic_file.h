#pragma once
// Writing files so that a reader never sees half of one: write a temporary file beside the
// target, flush it, then rename it over the target (atomic on POSIX file systems).
//
// The temporary is `DIR/.NAME.ibn-tmp-XXXXXX`, created with O_CREAT|O_EXCL (mkostemp): it never
// follows or reuses a file or symlink that is already there, and its name says whose it is, so
// a later run can clear the temporaries that a killed one left (is_temporary_of) without
// touching anything else.
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace ibn::io {

// A temporary file beside `target`, removed on destruction unless commit() renamed it.
class TemporaryFile {
 public:
  explicit TemporaryFile(const std::string& target);
  ~TemporaryFile();
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

  const std::string& path() const { return path_; }
  void write(const char* data, size_t size);
  // Allocates `size` bytes of disk for the file now (posix_fallocate), so that writes within
  // them cannot fail for want of space; throws naming the target when the disk has no room. (A
  // file-size limit beyond `size` raises SIGXFSZ, which kills the process unless ignored.)
  // shrink_to() then cuts the file to the length it needs (never lengthens it).
  void reserve(size_t size);
  void shrink_to(size_t size);
  int descriptor() const { return fd_; }
  // Flushes to disk and closes (no more writes); throws naming the target.
  void sync();
  // sync(), then renames over the target; throws naming the target.
  void commit();

 private:
  std::string target_, path_;
  int fd_ = -1;
};

// Throws std::runtime_error naming the path and the system's reason; the target is then
// untouched and the temporary file removed.
void write_file_atomically(const std::string& path, const char* data, size_t size);
inline void write_file_atomically(const std::string& path, const std::string& content) {
  write_file_atomically(path, content.data(), content.size());
}

// Several files as one step: each written whole to its temporary first, then all renamed. A
// failed write (disk full) leaves every target as it was; only a failing rename, after every
// byte is on disk, could leave some renamed and some not.
void write_files_atomically(const std::vector<std::pair<std::string, std::string>>& files);

// A whole file's bytes; throws std::runtime_error naming the path when it cannot be read.
std::string read_file(const std::string& path);

// The mkstemp pattern of `path`'s temporaries: "DIR/.NAME.ibn-tmp-XXXXXX".
std::string temporary_pattern(const std::string& path);
// Whether `file_name` (a bare name) is a temporary this library made for `target_name`.
bool is_temporary_of(const std::string& file_name, const std::string& target_name);

// A new private directory under $TMPDIR (else /tmp) named PREFIX + six random characters
// (mkdtemp), removed with its contents on destruction.
class TemporaryDirectory {
 public:
  explicit TemporaryDirectory(const std::string& prefix);
  ~TemporaryDirectory();
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace ibn::io
