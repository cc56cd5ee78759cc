#pragma once
// Transforms of the continuous sides before any estimator sees them (SPEC §4): one registry,
// one file per transform in estimators/, chosen with the estimator key `transform=NAME`:
//
//   ibn::mi::make_estimator("ksg:k=3:transform=rank");   // KSG on per-coordinate ranks
//
// Each transform is an invertible, increasing map of each coordinate taken alone, so the
// mutual information of the population is unchanged (I(f(A);g(B)) = I(A;B) for invertible
// f, g); only the finite-sample behaviour of the estimator changes. Discrete sides are never
// transformed.
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ibn::mi {

struct TransformEntry {
  std::string name;
  std::string summary;  // formula and the reason to use it, for help texts
  // [N, d] floating point -> [N, d], same dtype and device.
  at::Tensor (*apply)(const at::Tensor& x);
};

const std::vector<TransformEntry>& transforms();

// The entry called `name`; ibn::UsageError listing the names otherwise.
const TransformEntry& find_transform(const std::string& name);

// Per column, the rank of each value among the N values of its column, 1..N, ties given the
// average of the ranks they span (mid-ranks), as double.
at::Tensor mid_ranks(const at::Tensor& x);

}  // namespace ibn::mi
