#include "ibn/mi/transform.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>

#include "ibn/spec_string.h"

namespace ibn::mi {

// Defined in estimators/transform_*.cpp; listed once in estimators/transform_registry.cpp.
const std::vector<TransformEntry>& transform_registry();

const std::vector<TransformEntry>& transforms() { return transform_registry(); }

const TransformEntry& find_transform(const std::string& name) { return find_named(transforms(), name, "transform"); }

at::Tensor mid_ranks(const at::Tensor& x) {
  const at::Tensor columns = x.reshape({x.size(0), -1}).to(at::kCPU, at::kDouble).t().contiguous();  // [d, N]
  const auto [sorted, index] = columns.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false);
  const int64_t d = columns.size(0), n = columns.size(1);
  at::Tensor ranks = at::empty({d, n}, columns.options());
  const auto value = sorted.accessor<double, 2>();
  const auto from = index.accessor<int64_t, 2>();
  auto rank = ranks.accessor<double, 2>();
  for (int64_t c = 0; c < d; ++c) {
    for (int64_t start = 0; start < n;) {
      int64_t stop = start + 1;
      while (stop < n && value[c][stop] == value[c][start]) ++stop;
      const double average = 0.5 * static_cast<double>(start + 1 + stop);  // mean of ranks start+1..stop
      for (int64_t s = start; s < stop; ++s) rank[c][from[c][s]] = average;
      start = stop;
    }
  }
  return ranks.t().reshape(x.sizes()).to(x.device());
}

}  // namespace ibn::mi
