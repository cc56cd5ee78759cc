#pragma once
// Error types shared by the library and the CLI. The CLI maps UsageError to exit code 2 and
// every other exception to exit code 1; library users can catch std::invalid_argument.
#include <stdexcept>
#include <string>

namespace ibn {

// Bad input from the user: a malformed spec string, an unknown name, an option out of range,
// an input shape a layer cannot take. The message is one line naming the offending part and
// what would have been accepted.
class UsageError : public std::invalid_argument {
 public:
  explicit UsageError(const std::string& what) : std::invalid_argument(what) {}
};

}  // namespace ibn
