#include "ibn/dist/process_group.h"

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>

#include <fmt/format.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <c10/util/Logging.h>

#include "ibn/error.h"
#include "ibn/spec_string.h"

// LibTorch's c10d headers declare the Gloo and NCCL groups only under these macros (PyTorch's
// own build defines them); CMake sets IBN_WITH_GLOO where gloo's headers were found.
#if IBN_WITH_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#if IBN_WITH_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace ibn::dist {

namespace {

// The variable's value, or nothing when it is unset or empty (as a shell's `RANK= cmd` leaves it).
std::optional<std::string> environment(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

int integer_variable(const char* name, const std::string& value, int64_t low, int64_t high) {
  const std::optional<int64_t> n = parse_integer(value);
  if (!n || *n < low || *n > high) {
    throw UsageError(fmt::format("environment variable {}='{}' must be an integer in [{}, {}]", name, value, low, high));
  }
  return static_cast<int>(*n);
}

// Errors from c10d and Gloo carry source paths and, from c10::Error, a backtrace: the first line
// says what happened.
std::string first_line(const std::exception& error) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&error);
  std::string text = c10_error != nullptr ? c10_error->what_without_backtrace() : error.what();
  const size_t end = text.find('\n');
  if (end != std::string::npos) text.resize(end);
  while (!text.empty() && (text.back() == '.' || text.back() == ' ')) text.pop_back();
  return text;
}

}  // namespace

LaunchEnvironment read_launch_environment() {
  LaunchEnvironment env;
  const std::optional<std::string> world = environment("WORLD_SIZE");
  if (!world) {
    for (const char* name : {"RANK", "LOCAL_RANK"}) {
      if (environment(name)) throw UsageError(fmt::format("environment variable {} is set but WORLD_SIZE is not; set both (torchrun does)", name));
    }
    return env;
  }
  // Synchronized float32 statistics send their counts in parts that stay exact up to 4096
  // processes (StatsContext::mean).
  constexpr int64_t kMaxWorld = 4096;
  env.world_size = integer_variable("WORLD_SIZE", *world, 1, kMaxWorld);
  if (env.world_size == 1) return env;
  const std::optional<std::string> rank = environment("RANK");
  if (!rank) throw UsageError(fmt::format("WORLD_SIZE={} is set but RANK is not: each process needs its RANK (torchrun sets it)", env.world_size));
  env.rank = integer_variable("RANK", *rank, 0, env.world_size - 1);
  env.local_rank = integer_variable("LOCAL_RANK", environment("LOCAL_RANK").value_or("0"), 0, kMaxWorld);
  const std::optional<std::string> address = environment("MASTER_ADDR");
  if (!address || address->empty()) {
    throw UsageError(fmt::format("WORLD_SIZE={} is set but MASTER_ADDR is not: set MASTER_ADDR and MASTER_PORT to rank 0's host "
                                 "and a free port (torchrun does), or run one machine's processes with ibn train --nproc N",
                                 env.world_size));
  }
  env.master_addr = *address;
  const std::optional<std::string> port = environment("MASTER_PORT");
  if (!port) throw UsageError(fmt::format("WORLD_SIZE={} is set but MASTER_PORT is not: set it to a free port on {}", env.world_size, env.master_addr));
  env.master_port = integer_variable("MASTER_PORT", *port, 1, 65535);
  env.agent_store = environment("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  if (env.agent_store) env.store_prefix = "/worker/attempt_" + environment("TORCHELASTIC_RESTART_COUNT").value_or("0");
  return env;
}

std::pair<int64_t, int64_t> shard(int64_t rows, int rank, int world) {
  const int64_t base = rows / world, extra = rows % world;
  const int64_t first = rank * base + std::min<int64_t>(rank, extra);
  return {first, first + base + (rank < extra ? 1 : 0)};
}

std::string available_backends() {
  std::string names;
#if IBN_WITH_GLOO
  names = "gloo";
#endif
#if IBN_WITH_NCCL
  names += names.empty() ? "nccl" : ",nccl";
#endif
  return names;
}

// ---------------------------------------------------------------------------------------------

#if IBN_WITH_GLOO
// LibTorch 2 moved the collectives from ProcessGroup to Backend, which the Gloo and NCCL groups
// now derive from; the calls used here are the same in both.
#if TORCH_VERSION_MAJOR >= 2
using C10dGroup = c10d::Backend;
#else
using C10dGroup = c10d::ProcessGroup;
#endif

class ProcessGroup::Backend {
 public:
  // `device`: where the backend's tensors live (Gloo: host memory; NCCL: this rank's GPU).
  Backend(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<C10dGroup> group, std::string name, c10::Device device)
      : store_(std::move(store)), group_(std::move(group)), name_(std::move(name)), device_(device) {}

  const std::string& name() const { return name_; }

  // Runs `collective` on a contiguous copy of `values` on the backend's device where it needs
  // one, and writes the result back.
  template <typename Collective>
  void run(at::Tensor& values, const Collective& collective, const char* what) {
    const bool move = values.device() != device_;
    at::Tensor buffer = move ? values.to(device_).contiguous() : values.contiguous();
    std::vector<at::Tensor> tensors{buffer};
    try {
      collective(tensors)->wait();
    } catch (const std::exception& error) {
      throw CollectiveError(fmt::format("{} across the processes failed: {} (another process stopped, or the network failed)",
                                        what, first_line(error)));
    }
    if (!buffer.is_same(values)) values.copy_(buffer);
  }

  C10dGroup& group() { return *group_; }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<C10dGroup> group_;
  std::string name_;
  c10::Device device_;
};

namespace {

c10::intrusive_ptr<C10dGroup> gloo_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size,
                                         const std::string& host, std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create();
  options->timeout = timeout;
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, options);
}

// The address Gloo's own connections use: loopback stays loopback; elsewhere the host's name,
// which resolves to the interface the other machines reach (as torchrun's default does).
std::string gloo_host(const std::string& master_addr) {
  if (master_addr == "127.0.0.1" || master_addr == "localhost" || master_addr == "::1") return master_addr;
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return master_addr;
  return name;
}

}  // namespace
#else
class ProcessGroup::Backend {};
#endif

std::shared_ptr<ProcessGroup> ProcessGroup::single() { return std::make_shared<ProcessGroup>(0, 1, nullptr); }

std::shared_ptr<ProcessGroup> ProcessGroup::connect(const LaunchEnvironment& env, const c10::Device& device,
                                                    std::chrono::milliseconds timeout) {
  if (!env.distributed()) return single();
#if IBN_WITH_GLOO
  // c10d logs each failed bind or connect attempt through glog, several lines per failure on
  // stderr; the one-line errors below say what happened. Fatal messages only.
  FLAGS_caffe2_log_level = 3;
  c10::UpdateLoggingLevelsFromFlags();
  const std::string arrival = fmt::format("the {} processes did not all meet at {}:{} within {} s", env.world_size,
                                          env.master_addr, env.master_port, timeout.count() / 1000.0);
  const std::string hint = fmt::format("start all {} with the same MASTER_ADDR and MASTER_PORT (rank 0 serves it), or raise "
                                       "--dist-timeout", env.world_size);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(env.master_port);
    options.isServer = env.rank == 0 && !env.agent_store;
    options.numWorkers = static_cast<size_t>(env.world_size);
    // No store-level wait for the others: a client's wait is a read without a timeout (LibTorch
    // 1.13), which a port held by a program that accepts and never answers would hold forever,
    // and the server's counts clients that wait too. Gloo's rendezvous, next, waits for every
    // rank's address in the store, bounded by `timeout`.
    options.waitWorkers = false;
    options.timeout = timeout;
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
    if (env.agent_store) store = c10::make_intrusive<c10d::PrefixStore>(env.store_prefix, store);
  } catch (const std::exception& error) {
    const std::string cause = first_line(error);
    if (env.rank == 0 && cause.find("in use") != std::string::npos) {
      throw UsageError(fmt::format("MASTER_PORT {} on {} is in use by another program: choose a free port", env.master_port,
                                   env.master_addr));
    }
    throw std::runtime_error(fmt::format("{} ({}): {}", arrival, cause, hint));
  }
  try {
#if IBN_WITH_NCCL
    if (device.is_cuda()) {
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, options);
      return std::make_shared<ProcessGroup>(env.rank, env.world_size,
                                            std::make_unique<Backend>(store, group, "nccl", device));
    }
#else
    (void)device;
#endif
    auto group = gloo_group(store, env.rank, env.world_size, gloo_host(env.master_addr), timeout);
    return std::make_shared<ProcessGroup>(env.rank, env.world_size,
                                          std::make_unique<Backend>(store, group, "gloo", c10::Device(c10::kCPU)));
  } catch (const std::exception& error) {
    throw std::runtime_error(fmt::format("{} (forming the process group: {}): {}", arrival, first_line(error), hint));
  }
#else
  (void)device;
  (void)timeout;
  throw UsageError(fmt::format("WORLD_SIZE={}: this ibn was built without LibTorch's c10d Gloo backend (install libgloo-dev "
                               "and rebuild)", env.world_size));
#endif
}

std::shared_ptr<ProcessGroup> ProcessGroup::in_process(const std::string& tag, int rank, int world_size) {
  if (world_size == 1) return single();
#if IBN_WITH_GLOO
  static std::mutex mutex;
  static std::map<std::string, c10::intrusive_ptr<c10d::Store>> stores;
  c10::intrusive_ptr<c10d::Store> store;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    auto& entry = stores[tag];
    if (!entry) entry = c10::make_intrusive<c10d::HashStore>();
    store = entry;
  }
  auto group = gloo_group(store, rank, world_size, "127.0.0.1", std::chrono::seconds(60));
  return std::make_shared<ProcessGroup>(rank, world_size, std::make_unique<Backend>(store, group, "gloo", c10::Device(c10::kCPU)));
#else
  (void)tag;
  (void)rank;
  throw UsageError("this ibn was built without LibTorch's c10d Gloo backend");
#endif
}

ProcessGroup::ProcessGroup(int rank, int world_size, std::unique_ptr<Backend> backend)
    : rank_(rank), world_size_(world_size), backend_(std::move(backend)) {}

ProcessGroup::~ProcessGroup() = default;

std::string ProcessGroup::backend_name() const {
#if IBN_WITH_GLOO
  if (backend_) return backend_->name();
#endif
  return "none";
}

void ProcessGroup::all_reduce_sum(at::Tensor& values) {
  if (world_size_ == 1) return;
#if IBN_WITH_GLOO
  backend_->run(values, [&](std::vector<at::Tensor>& t) { return backend_->group().allreduce(t); }, "a sum");
#endif
}

void ProcessGroup::broadcast(at::Tensor& values, int root) {
  if (world_size_ == 1) return;
#if IBN_WITH_GLOO
  c10d::BroadcastOptions options;
  options.rootRank = root;
  backend_->run(values, [&](std::vector<at::Tensor>& t) { return backend_->group().broadcast(t, options); }, "a broadcast");
#else
  (void)root;
#endif
}

std::string ProcessGroup::broadcast_bytes(const std::string& bytes) {
  if (world_size_ == 1) return bytes;
  at::Tensor size = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kLong);
  broadcast(size);
  at::Tensor data = torch::empty({size.item<int64_t>()}, torch::kByte);
  if (is_root()) std::copy(bytes.begin(), bytes.end(), data.data_ptr<uint8_t>());
  broadcast(data);
  return std::string(reinterpret_cast<const char*>(data.data_ptr<uint8_t>()), static_cast<size_t>(data.numel()));
}

at::Tensor ProcessGroup::gather_rows(const at::Tensor& rows, const std::vector<int64_t>& rows_per_rank) {
  if (world_size_ == 1) return rows;
#if IBN_WITH_GLOO
  constexpr int kTag = 17;
  if (!is_root()) {
    if (rows_per_rank[rank_] == 0) return {};
    at::Tensor sent = rows;
    backend_->run(sent, [&](std::vector<at::Tensor>& t) { return backend_->group().send(t, 0, kTag); }, "sending rows to rank 0");
    return {};
  }
  std::vector<at::Tensor> parts{rows};
  for (int source = 1; source < world_size_; ++source) {
    if (rows_per_rank[source] == 0) continue;
    std::vector<int64_t> shape = rows.sizes().vec();
    shape[0] = rows_per_rank[source];
    at::Tensor received = at::empty(shape, rows.options());
    backend_->run(received, [&](std::vector<at::Tensor>& t) { return backend_->group().recv(t, source, kTag); },
                  "receiving rows on rank 0");
    parts.push_back(received);
  }
  return at::cat(parts);
#else
  (void)rows_per_rank;
  return rows;
#endif
}

bool ProcessGroup::all_ok(bool ok) {
  if (world_size_ == 1) return ok;
  at::Tensor failures = torch::tensor({ok ? int64_t{0} : int64_t{1}}, torch::kLong);
  all_reduce_sum(failures);
  return failures.item<int64_t>() == 0;
}

namespace {

// y = Σ_ranks x; dL/dx = Σ_ranks dL_r/dy, for the loss summed over ranks (each rank's gradient
// of its own loss reaches every rank's statistics). The group travels as its address: saved
// data holds IValues, and the group outlives every step.
class SumOverGroup : public torch::autograd::Function<SumOverGroup> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* context, const at::Tensor& values, int64_t group_address) {
    context->saved_data["group"] = group_address;
    at::Tensor sum = values.clone();
    reinterpret_cast<ProcessGroup*>(group_address)->all_reduce_sum(sum);
    return sum;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list gradients) {
    auto* group = reinterpret_cast<ProcessGroup*>(context->saved_data["group"].toInt());
    at::Tensor sum = gradients[0].clone();
    group->all_reduce_sum(sum);
    return {sum, at::Tensor()};
  }
};

}  // namespace

at::Tensor ProcessGroup::differentiable_sum(const at::Tensor& values) {
  if (world_size_ == 1) return values;
  return SumOverGroup::apply(values, reinterpret_cast<int64_t>(this));
}

}  // namespace ibn::dist
