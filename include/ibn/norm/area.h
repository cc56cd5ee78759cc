#pragma once
// NAP, normalization area partitioning (SPEC §1): which elements of the input share statistics.
//
// Input layouts every area understands (the channel/feature dimension is what γ, β index):
//   [N, D]              features last
//   [N, T, D]           tokens; features last
//   [N, C, H, W, ...]   feature maps (rank ≥ 4); channels second
// An area turns an input shape into a plan: a view of the input whose `reduce_dims` span one
// group each, so every operation computes its statistics the same way whatever the area.
#include <cstdint>
#include <string>
#include <vector>

#include <c10/util/ArrayRef.h>

namespace ibn::norm {

struct AreaPlan {
  std::vector<int64_t> grouped_shape;  // x.reshape(grouped_shape) exposes the groups
  std::vector<int64_t> reduce_dims;    // one group = these dims of the grouped view
  std::vector<int64_t> stat_shape;     // shape of a per-group statistic (keepdim)
  std::vector<int64_t> affine_shape;   // γ, β [C] viewed this way broadcast against x
  int64_t group_size = 0;              // elements per group
};

class Area {
 public:
  virtual ~Area() = default;
  virtual std::string name() const = 0;
  // Whether statistics are per channel across the batch, so running estimates make sense.
  virtual bool keeps_running_stats() const { return false; }
  // Throws ibn::UsageError when the area cannot split num_features channels.
  virtual void check_features(int64_t num_features) const { (void)num_features; }
  // Throws ibn::UsageError naming the shape and the accepted layouts.
  virtual AreaPlan plan(c10::IntArrayRef shape, int64_t num_features, bool training) const = 0;
};

// The dimension holding the features/channels in a layout of this rank: 2 for [N, T, D],
// else 1 ([N, D], [N, C, H, W, ...]).
inline int64_t feature_dim(size_t rank) { return rank == 3 ? 2 : 1; }

// Shared by the areas: the channel dimension of a supported layout (1 for rank 2 and rank ≥ 4,
// 2 for rank 3); checks that it holds num_features, else throws ibn::UsageError.
int64_t channel_dim(c10::IntArrayRef shape, int64_t num_features, const std::string& area);
// Fills stat_shape, affine_shape and group_size from grouped_shape and reduce_dims.
void finish_plan(AreaPlan& plan, c10::IntArrayRef shape, int64_t channel_dim);
// "[4, 3, 5]"
std::string shape_str(c10::IntArrayRef shape);

}  // namespace ibn::norm
