#pragma once
// Data-parallel training across processes on PyTorch's c10d: Gloo on the CPU, NCCL for CUDA
// tensors where LibTorch was built with it. A ProcessGroup is the few collectives `ibn train`
// needs; a group of one process makes every one of them the identity, so the single-process
// path is the same code.
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace ibn::dist {

// The torchrun environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
struct LaunchEnvironment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr;
  int master_port = 0;
  // torchrun's agent serves the store itself (TORCHELASTIC_USE_AGENT_STORE=True): every rank is
  // its client, under the prefix of this restart (TORCHELASTIC_RESTART_COUNT), as PyTorch does.
  bool agent_store = false;
  std::string store_prefix;
  bool distributed() const { return world_size > 1; }
};

// Reads the environment. Without WORLD_SIZE (or with WORLD_SIZE=1) the run is one process.
// Throws ibn::UsageError naming the variable for a malformed or missing value.
LaunchEnvironment read_launch_environment();

// Rows [first, second) of a batch of `rows` that `rank` of `world` takes: contiguous, in rank
// order, sizes differing by at most one (the first rows % world ranks take one more).
std::pair<int64_t, int64_t> shard(int64_t rows, int rank, int world);

// Whether this ibn can form groups of more than one process (LibTorch's c10d with Gloo was
// found at build time), and which backends it has: "gloo", "gloo,nccl", or "".
std::string available_backends();

// A collective that failed: another process stopped, or the network failed.
class CollectiveError : public std::runtime_error {
 public:
  explicit CollectiveError(const std::string& what) : std::runtime_error(what) {}
};

class ProcessGroup {
 public:
  class Backend;  // the c10d process group behind it (process_group.cpp)

  // One process: every collective returns its input.
  static std::shared_ptr<ProcessGroup> single();
  // Joins the group the environment describes (rank 0 serves the TCP store at MASTER_ADDR:
  // MASTER_PORT). `device` chooses the backend: NCCL for CUDA where built with it, else Gloo
  // (CUDA tensors then travel through host memory). `timeout` bounds the rendezvous and every
  // collective: a peer that stops answering ends the run with an error, never a hang.
  // Throws ibn::UsageError for a port in use or an address that does not resolve, and
  // std::runtime_error when the other processes do not arrive within `timeout`.
  static std::shared_ptr<ProcessGroup> connect(const LaunchEnvironment& environment, const c10::Device& device,
                                               std::chrono::milliseconds timeout);
  // Rank `rank` of a group of threads in this process sharing an in-memory store (`tag` names
  // the group): for tests.
  static std::shared_ptr<ProcessGroup> in_process(const std::string& tag, int rank, int world_size);

  ProcessGroup(int rank, int world_size, std::unique_ptr<Backend> backend);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return world_size_; }
  bool is_root() const { return rank_ == 0; }
  std::string backend_name() const;

  // Sums `values` over the group, in place (any device, any floating or integer dtype).
  void all_reduce_sum(at::Tensor& values);
  // Overwrites `values` on every rank with rank `root`'s (same shape and dtype everywhere).
  void broadcast(at::Tensor& values, int root = 0);
  // Rank 0's bytes on every rank.
  std::string broadcast_bytes(const std::string& bytes);
  // On rank 0: every rank's `rows` concatenated along dimension 0 in rank order, where rank r
  // holds `rows_per_rank[r]` rows and the same trailing shape and dtype as rank 0. Elsewhere: an
  // undefined tensor. A rank with no rows sends nothing.
  at::Tensor gather_rows(const at::Tensor& rows, const std::vector<int64_t>& rows_per_rank);
  // Whether every rank passed `ok`: each learns whether some other rank failed, so that all
  // stop together instead of waiting for the failed one.
  bool all_ok(bool ok);

  // The same sum as a differentiable function: its gradient is the sum of the ranks' gradients
  // (synchronized batch statistics, whose backward passes must meet as the forward ones did).
  at::Tensor differentiable_sum(const at::Tensor& values);

 private:
  int rank_;
  int world_size_;
  std::unique_ptr<Backend> backend_;
};

}  // namespace ibn::dist
