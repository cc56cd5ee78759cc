// Data-parallel pieces (src/dist) on Gloo over loopback, ranks as threads of this process: the
// collectives against sums and concatenations done by hand, and synchronized batch statistics
// (SyncBatchNorm) against one process computing on the whole batch, outputs, input and
// parameter gradients and running statistics, in float64.
#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/dist/process_group.h"
#include "ibn/norm/normalizer.h"
#include "test_util.h"

namespace {

using ibn::dist::ProcessGroup;
using ibn::test::nan_aware_max_diff;

// Runs `body(group)` on `world` threads, rank r on thread r, each with its own Gloo group over
// one in-memory store; rethrows the first failure after every thread has finished. Each call
// gets a store of its own: a second group on a used store would meet the first one's keys.
void on_ranks(const std::string& name, int world, const std::function<void(ProcessGroup&)>& body) {
  if (ibn::dist::available_backends().empty()) GTEST_SKIP() << "built without c10d Gloo";
  static std::atomic<int> calls{0};
  const std::string tag = name + "_" + std::to_string(calls++);
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> failures(world);
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        at::set_num_threads(1);
        auto group = ProcessGroup::in_process(tag, rank, world);
        body(*group);
      } catch (...) {
        failures[rank] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& failure : failures) {
    if (failure) std::rethrow_exception(failure);
  }
}

TEST(Dist, ShardsCoverTheRowsInOrderAndDifferByAtMostOne) {
  for (int64_t rows : {0, 1, 2, 5, 64, 97}) {
    for (int world : {1, 2, 3, 8}) {
      int64_t next = 0, smallest = rows, largest = 0;
      for (int r = 0; r < world; ++r) {
        const auto [first, end] = ibn::dist::shard(rows, r, world);
        EXPECT_EQ(first, next) << rows << " rows, rank " << r << " of " << world;
        next = end;
        smallest = std::min(smallest, end - first);
        largest = std::max(largest, end - first);
      }
      EXPECT_EQ(next, rows);
      EXPECT_LE(largest - smallest, 1);
    }
  }
}

TEST(Dist, SingleProcessCollectivesAreTheIdentity) {
  auto group = ProcessGroup::single();
  at::Tensor x = torch::arange(6, torch::kDouble);
  group->all_reduce_sum(x);
  EXPECT_TRUE(torch::equal(x, torch::arange(6, torch::kDouble)));
  EXPECT_EQ(group->broadcast_bytes("abc"), "abc");
  EXPECT_TRUE(group->all_ok(true));
  EXPECT_FALSE(group->all_ok(false));
}

TEST(Dist, CollectivesMatchSumsAndConcatenationsByHand) {
  constexpr int kWorld = 3;
  on_ranks("collectives", kWorld, [](ProcessGroup& group) {
    const int r = group.rank();
    at::Tensor values = torch::full({4}, static_cast<double>(r + 1)) * torch::arange(1, 5, torch::kDouble);
    group.all_reduce_sum(values);  // (1 + 2 + 3)·[1, 2, 3, 4]
    EXPECT_EQ(nan_aware_max_diff(values, 6.0 * torch::arange(1, 5, torch::kDouble)), 0.0);

    // A non-contiguous view is written back in place.
    at::Tensor matrix = torch::ones({3, 2}, torch::kLong) * (r + 1);
    at::Tensor column = matrix.select(1, 0);
    group.all_reduce_sum(column);
    EXPECT_EQ(matrix[1][0].item<int64_t>(), 6);
    EXPECT_EQ(matrix[1][1].item<int64_t>(), r + 1);

    at::Tensor root_value = torch::full({2}, static_cast<float>(10 * r));
    group.broadcast(root_value);
    EXPECT_EQ(root_value[1].item<float>(), 0.0f);
    EXPECT_EQ(group.broadcast_bytes(r == 0 ? std::string("rank zero\0bytes", 15) : "ignored"), std::string("rank zero\0bytes", 15));

    // Uneven rows (3, 0, 2), rank r's rows holding r: rank 0 gets them in rank order.
    const std::vector<int64_t> rows{3, 0, 2};
    const at::Tensor mine = torch::full({rows[r], 2}, static_cast<float>(r));
    const at::Tensor gathered = group.gather_rows(mine, rows);
    if (r == 0) {
      const at::Tensor expected = torch::tensor({0.f, 0.f, 0.f, 2.f, 2.f}).unsqueeze(1).expand({5, 2});
      EXPECT_EQ(nan_aware_max_diff(gathered, expected), 0.0);
    } else {
      EXPECT_FALSE(gathered.defined());
    }
    EXPECT_TRUE(group.all_ok(true));
    EXPECT_FALSE(group.all_ok(r != 1));  // one rank's failure reaches all
  });
}

// y = Σ_r x_r on every rank and L = Σ_r (w_r · y).sum(): dL/dx_r = Σ_r' w_r'.
TEST(Dist, DifferentiableSumGivesEveryRankTheSummedGradient) {
  constexpr int kWorld = 2;
  on_ranks("differentiable", kWorld, [](ProcessGroup& group) {
    const double w = group.rank() == 0 ? 2.0 : -0.5;
    at::Tensor x = torch::randn({5}, torch::kDouble).requires_grad_();
    const at::Tensor y = group.differentiable_sum(x);
    y.mul(w).sum().backward();
    EXPECT_EQ(nan_aware_max_diff(x.grad(), torch::full({5}, 1.5, torch::kDouble)), 0.0);
  });
}

// A batch-area layer whose statistics are synchronized over ranks holding rows [a_r, b_r) of a
// batch computes what one layer computes on the whole batch: outputs, gradients of the input
// rows and (summed over ranks) of γ and β, and the running statistics.
// In float32 the count travels as two parts (operation.cpp); tolerances are float32's.
void expect_sync_matches_whole_batch(const std::string& spec, const std::vector<int64_t>& shape,
                                     const std::vector<int64_t>& split, at::ScalarType dtype = at::kDouble) {
  const int world = static_cast<int>(split.size());
  const double tolerance = dtype == at::kDouble ? 1e-10 : 2e-5;
  torch::manual_seed(3);
  const at::Tensor x = torch::randn(shape, torch::kDouble).mul(2).add(0.5).to(dtype);
  const at::Tensor upstream = torch::randn(shape, torch::kDouble).to(dtype);
  const int64_t features = shape.size() == 3 ? shape[2] : shape[1];
  ibn::norm::Normalizer whole(spec, features);
  whole->to(dtype);
  {
    torch::NoGradGuard no_grad;
    whole->weight.copy_(torch::randn_like(whole->weight));
    whole->bias.copy_(torch::randn_like(whole->bias));
  }
  const at::Tensor x_whole = x.clone().requires_grad_();
  const at::Tensor y_whole = whole->forward(x_whole);
  y_whole.mul(upstream).sum().backward();

  std::vector<int64_t> starts{0};
  for (int64_t rows : split) starts.push_back(starts.back() + rows);
  const double scale = y_whole.abs().max().item<double>();
  on_ranks("sync_" + spec, world, [&](ProcessGroup& group) {
    const int r = group.rank();
    ibn::norm::Normalizer layer(spec, features);
    layer->to(dtype);
    {
      torch::NoGradGuard no_grad;
      layer->weight.copy_(whole->weight.detach());
      layer->bias.copy_(whole->bias.detach());
    }
    ProcessGroup* shared = &group;
    layer->synchronize_batch_statistics([shared](const at::Tensor& t) { return shared->differentiable_sum(t); });
    ASSERT_TRUE(layer->synchronizes_batch_statistics());
    const at::Tensor x_mine = x.slice(0, starts[r], starts[r + 1]).clone().requires_grad_();
    const at::Tensor y_mine = layer->forward(x_mine);
    y_mine.mul(upstream.slice(0, starts[r], starts[r + 1])).sum().backward();
    EXPECT_LT(nan_aware_max_diff(y_mine, y_whole.slice(0, starts[r], starts[r + 1])), tolerance * scale) << spec << " output";
    EXPECT_LT(nan_aware_max_diff(x_mine.grad(), x_whole.grad().slice(0, starts[r], starts[r + 1])), tolerance) << spec << " dL/dx";
    at::Tensor weight_grad = layer->weight.grad().clone(), bias_grad = layer->bias.grad().clone();
    group.all_reduce_sum(weight_grad);
    group.all_reduce_sum(bias_grad);
    const double grad_scale = 1.0 + whole->weight.grad().abs().max().item<double>();
    EXPECT_LT(nan_aware_max_diff(weight_grad, whole->weight.grad()), tolerance * grad_scale) << spec << " dL/dγ";
    EXPECT_LT(nan_aware_max_diff(bias_grad, whole->bias.grad()), tolerance * grad_scale) << spec << " dL/dβ";
    for (const auto& item : whole->named_buffers()) {
      EXPECT_LT(nan_aware_max_diff(layer->named_buffers()[item.key()], item.value()), tolerance) << spec << " " << item.key();
    }
  });
}

TEST(Dist, SynchronizedBatchNormMatchesTheWholeBatch) {
  expect_sync_matches_whole_batch("batchnorm", {12, 5}, {6, 6});
  expect_sync_matches_whole_batch("batchnorm", {7, 3, 4, 4}, {4, 3});  // feature maps, uneven shares
  // float32, tokens [N, T, D], shares whose counts differ (85·2 and 84·2 values per feature; in
  // float32 the count is sent in two parts): every rank's message has the same length.
  expect_sync_matches_whole_batch("batchnorm", {169, 2, 96}, {85, 84}, at::kFloat);
  // Counts of 5000 and 4000 per feature: both parts of the float32 count are non-zero.
  expect_sync_matches_whole_batch("batchnorm", {9, 1000, 4}, {5, 4}, at::kFloat);
}

TEST(Dist, SynchronizedIbnormAndRmsOverTheBatchMatchTheWholeBatch) {
  expect_sync_matches_whole_batch("ibnorm-t:lambda=1.5:area=batch", {10, 4}, {5, 5});
  expect_sync_matches_whole_batch("ibnorm-s:lambda=0.7:area=batch", {9, 6, 3}, {2, 4, 3});  // tokens, three ranks
  expect_sync_matches_whole_batch("rmsnorm:area=batch", {8, 4}, {4, 4});
}

// Without synchronization each rank normalizes by its own rows: the check above can fail.
TEST(Dist, UnsynchronizedShardsDifferFromTheWholeBatch) {
  torch::manual_seed(4);
  const at::Tensor x = torch::randn({12, 5}, torch::kDouble);
  ibn::norm::Normalizer whole("batchnorm", 5), half("batchnorm", 5);
  whole->to(torch::kDouble);
  half->to(torch::kDouble);
  EXPECT_GT(nan_aware_max_diff(half->forward(x.slice(0, 0, 6)), whole->forward(x).slice(0, 0, 6)), 1e-3);
}

// Per-sample areas have nothing to synchronize: the call leaves them as they are.
TEST(Dist, PerSampleAreasIgnoreSynchronization) {
  ibn::norm::Normalizer layer("layernorm", 4);
  layer->synchronize_batch_statistics([](const at::Tensor& t) { return t * 1000; });
  EXPECT_FALSE(layer->synchronizes_batch_statistics());
}

}  // namespace
