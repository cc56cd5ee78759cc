#include "ibn/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>

namespace ibn::io {
namespace {

constexpr const char* kTempMarker = ".ibn-tmp-";

// The process's umask, read without changing it (umask(2) would race with writer threads).
mode_t current_umask() {
  static const mode_t mask = [] {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Umask:", 0) == 0) return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
    }
    return static_cast<mode_t>(022);
  }();
  return mask;
}

std::pair<std::string, std::string> directory_and_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

[[noreturn]] void fail(const std::string& path, int error) {
  throw std::runtime_error(fmt::format("cannot write '{}': {}", path, std::strerror(error)));
}

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += written;
    size -= static_cast<size_t>(written);
  }
  return true;
}

}  // namespace

void write_files_atomically(const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<std::unique_ptr<TemporaryFile>> temporaries;
  for (const auto& [path, content] : files) {
    temporaries.push_back(std::make_unique<TemporaryFile>(path));
    temporaries.back()->write(content.data(), content.size());
    temporaries.back()->sync();
  }
  for (const auto& temporary : temporaries) temporary->commit();
}

std::string temporary_pattern(const std::string& path) {
  const auto [directory, name] = directory_and_name(path);
  return fmt::format("{}/.{}{}XXXXXX", directory, name, kTempMarker);
}

bool is_temporary_of(const std::string& file_name, const std::string& target_name) {
  const std::string prefix = "." + target_name + kTempMarker;
  if (file_name.size() != prefix.size() + 6 || file_name.compare(0, prefix.size(), prefix) != 0) return false;
  for (size_t i = prefix.size(); i < file_name.size(); ++i) {
    if (!std::isalnum(static_cast<unsigned char>(file_name[i]))) return false;
  }
  return true;
}

TemporaryFile::TemporaryFile(const std::string& target) : target_(target) {
  std::string pattern = temporary_pattern(target);
  // mkostemp creates the file with O_CREAT|O_EXCL: a planted file or symlink of that name makes
  // it pick another name; it never opens what is there.
  fd_ = ::mkostemp(pattern.data(), O_CLOEXEC);
  if (fd_ < 0) fail(target, errno);
  path_ = pattern;
  // mkstemp creates 0600; the target gets what a plain create would have given it.
  ::fchmod(fd_, 0666 & ~current_umask());
}

TemporaryFile::~TemporaryFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!path_.empty()) ::unlink(path_.c_str());
}

void TemporaryFile::write(const char* data, size_t size) {
  if (!write_all(fd_, data, size)) fail(target_, errno);
}

void TemporaryFile::reserve(size_t size) {
  const int error = ::posix_fallocate(fd_, 0, static_cast<off_t>(size));
  if (error != 0) fail(target_, error);
}

void TemporaryFile::shrink_to(size_t size) {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail(target_, errno);
  if (static_cast<size_t>(st.st_size) > size && ::ftruncate(fd_, static_cast<off_t>(size)) != 0) fail(target_, errno);
}

void TemporaryFile::sync() {
  if (fd_ < 0) return;
  int error = ::fsync(fd_) == 0 ? 0 : errno;
  if (::close(fd_) != 0 && error == 0) error = errno;  // a full disk can surface only here
  fd_ = -1;
  if (error != 0) fail(target_, error);
}

void TemporaryFile::commit() {
  sync();
  if (::rename(path_.c_str(), target_.c_str()) != 0) fail(target_, errno);
  path_.clear();
}

void write_file_atomically(const std::string& path, const char* data, size_t size) {
  TemporaryFile file(path);
  file.write(data, size);
  file.commit();
}

TemporaryDirectory::TemporaryDirectory(const std::string& prefix) {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string pattern = fmt::format("{}/{}XXXXXX", tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp", prefix);
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error(fmt::format("cannot create a temporary directory '{}': {}", pattern, std::strerror(errno)));
  }
  path_ = pattern;
}

TemporaryDirectory::~TemporaryDirectory() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) throw std::runtime_error(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error(fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
  return bytes;
}

}  // namespace ibn::io
