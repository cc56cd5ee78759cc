#pragma once
// An exact spatial index under the max-norm (Chebyshev distance), for the k-nearest-neighbour
// estimators: the distance to the k-th nearest other point, and the number of points strictly
// closer than a radius.
//
//   MaxNormTree<float> tree(points, n, dims);            // points row-major [n, dims]
//   float eps = tree.kth_neighbour_distance(i, 3);       // 3rd nearest other point of point i
//   int64_t c = tree.count_closer(tree.point(i), eps);   // points (i itself too) with d < eps
//
// Distances are |q − x| per coordinate in T, maximised over coordinates: the same arithmetic as
// the brute-force path, so both give the same neighbours and counts, ties included (pruning
// compares box bounds that rounding keeps on the same side). One dimension is a sorted array
// searched by bisection; more are a k-d tree with leaves of a few points and a bounding box per
// node. Queries are const and may run on many threads at once.
#include <cstdint>
#include <vector>

namespace ibn::mi {

template <typename T>
class MaxNormTree {
 public:
  MaxNormTree(const T* points, int64_t n, int64_t dims);

  int64_t size() const { return n_; }
  int64_t dims() const { return dims_; }
  // Point `i` (original index) as stored: dims values.
  const T* point(int64_t i) const { return coords_.data() + position_[static_cast<size_t>(i)] * dims_; }
  // Original indices in storage order: queries made in this order touch memory in order.
  const std::vector<int64_t>& storage_order() const { return order_; }

  // Distance from point `self` to its k-th nearest other point (1 ≤ k < n); points at
  // distance 0 (duplicates) count as neighbours.
  T kth_neighbour_distance(int64_t self, int64_t k) const;
  // Number of stored points x with max_c |q_c − x_c| < radius.
  int64_t count_closer(const T* q, T radius) const;

 private:
  struct Node {
    int64_t begin, end;   // storage range
    int64_t left, right;  // children, −1 for a leaf
  };
  int64_t build(int64_t begin, int64_t end);
  const T* low(int64_t node) const { return bounds_.data() + node * 2 * dims_; }
  const T* high(int64_t node) const { return bounds_.data() + node * 2 * dims_ + dims_; }
  T box_distance(int64_t node, const T* q) const;  // a lower bound of every point's distance
  void box_bounds(int64_t node, const T* q, T& near, T& far) const;  // lower and upper bounds
  T distance(const T* q, int64_t stored) const;
  void search(int64_t node, T near, const T* q, int64_t self, int64_t k, T* best, int64_t& found) const;
  int64_t count_in(int64_t node, const T* q, T radius) const;
  int64_t count_sorted(T q, T radius) const;

  int64_t n_, dims_;
  std::vector<T> coords_;           // points in storage order
  std::vector<int64_t> order_;      // storage position -> original index
  std::vector<int64_t> position_;   // original index -> storage position
  std::vector<Node> nodes_;
  std::vector<T> bounds_;           // per node: low[dims], high[dims]
};

extern template class MaxNormTree<float>;
extern template class MaxNormTree<double>;

}  // namespace ibn::mi
