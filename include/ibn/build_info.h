#pragma once
// What this binary is: version, commit, and the LibTorch it was built against.
#include <string>

namespace ibn {

struct BuildInfo {
  std::string version;        // ibnorm's own, e.g. "0.1.0"
  std::string git_commit;     // short hash of HEAD at configure time, or "unknown"
  std::string torch_version;  // LibTorch headers the build used, e.g. "1.13.0"
  bool torch_has_cuda;        // LibTorch was built with CUDA (kernels linked in)
};

const BuildInfo& build_info();

}  // namespace ibn
