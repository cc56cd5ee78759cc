#pragma once
// Error types shared by the library and the CLI. The CLI maps UsageError to exit code 2 and
// every other exception (DataError included) to exit code 1; library users can catch
// std::invalid_argument and std::runtime_error.
#include <stdexcept>
#include <string>

namespace ibn {

// Bad input from the user: a malformed spec string, an unknown name, an option out of range,
// a missing file or dataset, an input shape a layer cannot take. The message is one line
// naming the offending part and what would have been accepted.
class UsageError : public std::invalid_argument {
 public:
  explicit UsageError(const std::string& what) : std::invalid_argument(what) {}
};

// Data that cannot be used as given: NaN or Inf values, empty arrays, sample counts that do
// not match. One line naming the data and the problem.
class DataError : public std::runtime_error {
 public:
  explicit DataError(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace ibn
