#include "ibn/mi/max_norm_tree.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace ibn::mi {
namespace {

// Points per leaf: small enough that a leaf's scan is cheap, large enough that the tree's
// boxes are not most of the work (scikit-learn's KD-tree default is 40, SciPy's cKDTree 16).
constexpr int64_t kLeafSize = 12;

}  // namespace

template <typename T>
MaxNormTree<T>::MaxNormTree(const T* points, int64_t n, int64_t dims)
    : n_(n), dims_(dims), order_(static_cast<size_t>(n)), position_(static_cast<size_t>(n)) {
  std::iota(order_.begin(), order_.end(), int64_t{0});
  coords_.assign(points, points + n * dims);  // original order while building
  if (dims_ == 1) {
    std::stable_sort(order_.begin(), order_.end(), [&](int64_t a, int64_t b) { return coords_[a] < coords_[b]; });
  } else if (n_ > 0) {
    nodes_.reserve(static_cast<size_t>(2 * (n_ / kLeafSize + 1)));
    build(0, n_);
  }
  std::vector<T> stored(coords_.size());
  for (int64_t s = 0; s < n_; ++s) {
    const int64_t i = order_[static_cast<size_t>(s)];
    position_[static_cast<size_t>(i)] = s;
    std::copy(points + i * dims_, points + (i + 1) * dims_, stored.begin() + s * dims_);
  }
  coords_.swap(stored);
}

// Splits at the median of the widest coordinate. While building, coords_ is in original order
// and order_[begin, end) lists the node's points.
template <typename T>
int64_t MaxNormTree<T>::build(int64_t begin, int64_t end) {
  const int64_t node = static_cast<int64_t>(nodes_.size());
  nodes_.push_back({begin, end, -1, -1});
  bounds_.resize(bounds_.size() + static_cast<size_t>(2 * dims_));
  T* lo = bounds_.data() + node * 2 * dims_;
  T* hi = lo + dims_;
  for (int64_t c = 0; c < dims_; ++c) {
    lo[c] = hi[c] = coords_[order_[begin] * dims_ + c];
  }
  for (int64_t s = begin + 1; s < end; ++s) {
    const T* x = coords_.data() + order_[s] * dims_;
    for (int64_t c = 0; c < dims_; ++c) {
      lo[c] = std::min(lo[c], x[c]);
      hi[c] = std::max(hi[c], x[c]);
    }
  }
  if (end - begin <= kLeafSize) return node;
  int64_t widest = 0;
  for (int64_t c = 1; c < dims_; ++c) {
    if (hi[c] - lo[c] > hi[widest] - lo[widest]) widest = c;
  }
  const int64_t middle = begin + (end - begin) / 2;
  std::nth_element(order_.begin() + begin, order_.begin() + middle, order_.begin() + end, [&](int64_t a, int64_t b) {
    const T xa = coords_[a * dims_ + widest], xb = coords_[b * dims_ + widest];
    return xa < xb || (xa == xb && a < b);
  });
  const int64_t left = build(begin, middle);
  const int64_t right = build(middle, end);
  nodes_[static_cast<size_t>(node)].left = left;
  nodes_[static_cast<size_t>(node)].right = right;
  return node;
}

template <typename T>
T MaxNormTree<T>::distance(const T* q, int64_t stored) const {
  const T* x = coords_.data() + stored * dims_;
  T d = 0;
  for (int64_t c = 0; c < dims_; ++c) d = std::max(d, std::abs(q[c] - x[c]));
  return d;
}

// Lower and upper bounds of the distance from q to every point of a node's box. Rounding is
// monotone: lo ≤ x implies fl(lo − q) ≤ fl(x − q), so `near` never exceeds a point's computed
// distance and `far` never falls below it. Branch-free: outside the box one of lo − q, q − hi
// is positive; inside, both are ≤ 0.
template <typename T>
T MaxNormTree<T>::box_distance(int64_t node, const T* q) const {
  const T* lo = low(node);
  const T* hi = high(node);
  T near = 0;
  for (int64_t c = 0; c < dims_; ++c) near = std::max(near, std::max(lo[c] - q[c], q[c] - hi[c]));
  return near;
}

template <typename T>
void MaxNormTree<T>::box_bounds(int64_t node, const T* q, T& near, T& far) const {
  const T* lo = low(node);
  const T* hi = high(node);
  near = 0;
  far = 0;
  for (int64_t c = 0; c < dims_; ++c) {
    near = std::max(near, std::max(lo[c] - q[c], q[c] - hi[c]));
    far = std::max(far, std::max(q[c] - lo[c], hi[c] - q[c]));
  }
}

// best[0, found) holds the smallest distances so far, ascending; `near` is the node's
// box_distance, computed once by the caller.
template <typename T>
void MaxNormTree<T>::search(int64_t node, T near, const T* q, int64_t self, int64_t k, T* best, int64_t& found) const {
  if (found == k && near >= best[k - 1]) return;
  const Node& nd = nodes_[static_cast<size_t>(node)];
  if (nd.left < 0) {
    for (int64_t s = nd.begin; s < nd.end; ++s) {
      if (order_[static_cast<size_t>(s)] == self) continue;
      const T d = distance(q, s);
      if (found == k && !(d < best[k - 1])) continue;
      int64_t at = found < k ? found++ : k - 1;
      while (at > 0 && best[at - 1] > d) {
        best[at] = best[at - 1];
        --at;
      }
      best[at] = d;
    }
    return;
  }
  const T left = box_distance(nd.left, q), right = box_distance(nd.right, q);
  if (left <= right) {
    search(nd.left, left, q, self, k, best, found);
    search(nd.right, right, q, self, k, best, found);
  } else {
    search(nd.right, right, q, self, k, best, found);
    search(nd.left, left, q, self, k, best, found);
  }
}

template <typename T>
T MaxNormTree<T>::kth_neighbour_distance(int64_t self, int64_t k) const {
  if (k < 1 || k >= n_ || self < 0 || self >= n_) {
    throw std::out_of_range("MaxNormTree: the k-th neighbour needs 1 <= k < n and a stored point");
  }
  const int64_t p = position_[static_cast<size_t>(self)];
  const T q = coords_[p * dims_];
  if (dims_ == 1) {
    // Sorted: the neighbours are the nearest on either side, taken in order of distance.
    int64_t left = p - 1, right = p + 1;
    T d = 0;
    for (int64_t taken = 0; taken < k; ++taken) {
      const T dl = left >= 0 ? std::abs(q - coords_[left]) : std::numeric_limits<T>::infinity();
      const T dr = right < n_ ? std::abs(q - coords_[right]) : std::numeric_limits<T>::infinity();
      if (dl <= dr) {
        d = dl;
        --left;
      } else {
        d = dr;
        ++right;
      }
    }
    return d;
  }
  std::vector<T> best(static_cast<size_t>(k));
  int64_t found = 0;
  const T* point = coords_.data() + p * dims_;
  search(0, box_distance(0, point), point, self, k, best.data(), found);
  return best[static_cast<size_t>(k - 1)];
}

// fl(q − x) falls as x grows, so {x : −r < fl(q − x) < r} is one run of the sorted array.
template <typename T>
int64_t MaxNormTree<T>::count_sorted(T q, T radius) const {
  const auto first = std::partition_point(coords_.begin(), coords_.end(), [&](T x) { return !(q - x < radius); });
  const auto last = std::partition_point(first, coords_.end(), [&](T x) { return q - x > -radius; });
  return static_cast<int64_t>(last - first);
}

template <typename T>
int64_t MaxNormTree<T>::count_in(int64_t node, const T* q, T radius) const {
  T near, far;
  box_bounds(node, q, near, far);
  if (!(near < radius)) return 0;
  const Node& nd = nodes_[static_cast<size_t>(node)];
  if (far < radius) return nd.end - nd.begin;
  if (nd.left < 0) {
    int64_t count = 0;
    for (int64_t s = nd.begin; s < nd.end; ++s) count += distance(q, s) < radius;
    return count;
  }
  return count_in(nd.left, q, radius) + count_in(nd.right, q, radius);
}

template <typename T>
int64_t MaxNormTree<T>::count_closer(const T* q, T radius) const {
  if (n_ == 0) return 0;
  return dims_ == 1 ? count_sorted(q[0], radius) : count_in(0, q, radius);
}

template class MaxNormTree<float>;
template class MaxNormTree<double>;

}  // namespace ibn::mi
