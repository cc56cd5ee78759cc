// The emulator's scheduler (see simt.h): blocks in sequence, each block's threads as fibers.
#include "simt.h"

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>

namespace simt {
namespace ctx = boost::context;

void fail(const std::string& what) {
  std::fprintf(stderr, "simt: %s (block %u,%u,%u thread %u,%u,%u)\n", what.c_str(), blockIdx.x, blockIdx.y, blockIdx.z,
               threadIdx.x, threadIdx.y, threadIdx.z);
  std::fflush(stderr);
  std::abort();
}

namespace {

constexpr size_t kStackBytes = 128 * 1024;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // without cudaFuncSetAttribute, as on every GPU since Volta

size_t page_size() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

// Fiber stacks, each with an inaccessible guard page below it, kept for the whole process.
class StackPool {
 public:
  ctx::stack_context take() {
    if (free_.empty()) {
      const size_t guard = page_size();
      void* base = mmap(nullptr, kStackBytes + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (base == MAP_FAILED) fail("cannot map a fiber stack");
      mprotect(base, guard, PROT_NONE);
      ctx::stack_context stack;
      stack.size = kStackBytes;
      stack.sp = static_cast<char*>(base) + guard + kStackBytes;
      return stack;
    }
    ctx::stack_context stack = free_.back();
    free_.pop_back();
    return stack;
  }
  void give_back(const ctx::stack_context& stack) { free_.push_back(stack); }

 private:
  std::vector<ctx::stack_context> free_;
};
StackPool& stacks() {
  static StackPool pool;
  return pool;
}
struct PooledStack {
  ctx::stack_context allocate() { return stacks().take(); }
  void deallocate(ctx::stack_context& stack) noexcept { stacks().give_back(stack); }
};

// The block's dynamic shared memory: poisoned, and followed by an inaccessible page.
class SharedArena {
 public:
  void prepare(size_t bytes) {
    const size_t rounded = (bytes + 15) / 16 * 16;
    const size_t pages = (rounded + page_size() - 1) / page_size();
    if (pages > pages_) {
      release();
      pages_ = pages;
      base_ = static_cast<unsigned char*>(
          mmap(nullptr, (pages_ + 1) * page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
      if (base_ == MAP_FAILED) fail("cannot map the shared-memory arena");
      mprotect(base_ + pages_ * page_size(), page_size(), PROT_NONE);
    }
    start_ = base_ + pages_ * page_size() - rounded;
    bytes_ = rounded;
  }
  void poison() { std::memset(start_, 0xFF, bytes_); }
  unsigned char* start() const { return start_; }
  ~SharedArena() { release(); }

 private:
  void release() {
    if (base_ != nullptr) munmap(base_, (pages_ + 1) * page_size());
    base_ = nullptr;
  }
  unsigned char* base_ = nullptr;
  unsigned char* start_ = nullptr;
  size_t pages_ = 0, bytes_ = 0;
};

enum class State { runnable, waiting, finished };

struct Thread {
  ctx::fiber fiber;  // the thread's own continuation, resumed by the scheduler
  ctx::fiber sink;   // the scheduler's, resumed by the thread when it waits
  State state = State::runnable;
  uint3 index{0, 0, 0};
  uint64_t shuffles = 0;  // this lane's shuffle count: picks the exchange buffer
};

// A barrier over a set of live threads: the last to arrive releases the others.
struct Barrier {
  int live = 0, arrived = 0;
  std::vector<int> waiting;
};

struct Warp {
  Barrier barrier;
  std::array<std::array<uint64_t, 32>, 2> exchange{};
  int size = 32;
};

struct Block {
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  Barrier barrier;
  int current = 0;
};

Block* running = nullptr;
SharedArena arena;
Traffic counters;
const char* launch_error = nullptr;

bool reverse_schedule() {
  static const bool reverse = [] {
    const char* order = std::getenv("SIMT_SCHEDULE");
    return order != nullptr && std::strcmp(order, "reverse") == 0;
  }();
  return reverse;
}

void yield_to_scheduler() {
  Thread& me = running->threads[running->current];
  me.sink = std::move(me.sink).resume();
}

void release(Barrier& b) {
  for (int t : b.waiting) running->threads[t].state = State::runnable;
  b.waiting.clear();
  b.arrived = 0;
}

void wait_at(Barrier& b) {
  if (++b.arrived == b.live) return release(b);
  b.waiting.push_back(running->current);
  running->threads[running->current].state = State::waiting;
  yield_to_scheduler();
}

// A thread that returned no longer counts at its block's and warp's barriers.
void leave(Barrier& b) {
  --b.live;
  if (b.arrived > 0 && b.arrived == b.live) release(b);
}

const char* check(const Config& c) {
  const uint64_t threads = uint64_t(c.block.x) * c.block.y * c.block.z;
  if (threads == 0 || c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0) return "invalid configuration argument: a zero dimension";
  if (threads > 1024 || c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64) {
    return "invalid configuration argument: more than 1024 threads per block";
  }
  if (c.grid.x > 0x7fffffffu || c.grid.y > 65535 || c.grid.z > 65535) return "invalid configuration argument: grid too large";
  if (c.shared_bytes > kMaxSharedBytes) return "invalid argument: more than 48 KiB of dynamic shared memory";
  return nullptr;
}

void run_block(Block& block, const std::function<void()>& body) {
  const int n = static_cast<int>(block.threads.size());
  block.barrier = Barrier{};
  block.barrier.live = n;
  for (size_t w = 0; w < block.warps.size(); ++w) {
    block.warps[w].barrier = Barrier{};
    block.warps[w].size = std::min(32, n - static_cast<int>(w) * 32);
    block.warps[w].barrier.live = block.warps[w].size;
  }
  arena.poison();
  for (int t = 0; t < n; ++t) {
    Thread& thread = block.threads[t];
    thread.state = State::runnable;
    thread.shuffles = 0;
    thread.index = {t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y)};
    thread.fiber = ctx::fiber(std::allocator_arg, PooledStack(), [&block, &body, t](ctx::fiber&& sink) {
      block.threads[t].sink = std::move(sink);
      body();
      Thread& me = block.threads[t];
      me.state = State::finished;
      leave(block.barrier);
      leave(block.warps[t / 32].barrier);
      return std::move(me.sink);
    });
  }
  for (int finished = 0; finished < n;) {
    bool ran = false;
    finished = 0;
    for (int k = 0; k < n; ++k) {
      const int t = reverse_schedule() ? n - 1 - k : k;
      Thread& thread = block.threads[t];
      if (thread.state == State::runnable) {
        ran = true;
        block.current = t;
        threadIdx = thread.index;
        thread.fiber = std::move(thread.fiber).resume();
      }
      finished += thread.state == State::finished;
    }
    if (!ran && finished < n) fail("no thread can run: a barrier or shuffle that not every thread reaches");
  }
}

}  // namespace

void run(const Config& config, const std::function<void()>& body) {
  if (const char* error = check(config)) {
    if (launch_error == nullptr) launch_error = error;
    return;
  }
  if (running != nullptr) fail("a kernel launched from inside a kernel");
  gridDim = config.grid, blockDim = config.block;
  arena.prepare(config.shared_bytes);
  Block block;
  const int threads = static_cast<int>(config.block.x * config.block.y * config.block.z);
  block.threads.resize(threads);
  block.warps.resize((threads + 31) / 32);
  running = &block;
  const uint64_t blocks = uint64_t(config.grid.x) * config.grid.y * config.grid.z;
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t i = reverse_schedule() ? blocks - 1 - k : k;
    blockIdx = {unsigned(i % config.grid.x), unsigned(i / config.grid.x % config.grid.y),
                unsigned(i / (uint64_t(config.grid.x) * config.grid.y))};
    run_block(block, body);
  }
  running = nullptr;
  threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
}

const char* take_launch_error() {
  const char* error = launch_error;
  launch_error = nullptr;
  return error;
}
const char* peek_launch_error() { return launch_error; }

unsigned char* dynamic_shared() { return arena.start(); }

int lane_id() { return running->current % 32; }

void sync_block() {
  if (running == nullptr) fail("__syncthreads outside a kernel");
  wait_at(running->barrier);
}

void sync_warp() {
  Warp& warp = running->warps[running->current / 32];
  wait_at(warp.barrier);
}

uint64_t exchange(uint64_t bits, int source_lane, unsigned mask) {
  if (running == nullptr) fail("a shuffle outside a kernel");
  Warp& warp = running->warps[running->current / 32];
  const unsigned all = warp.size == 32 ? 0xffffffffu : ((1u << warp.size) - 1u);
  if ((mask & ~all) != 0) fail("shuffle mask names lanes that do not exist in this warp");
  if (mask != all) fail("partial-mask shuffles are not emulated");
  if (warp.barrier.live != warp.size) fail("a shuffle after some lanes of the warp returned");
  Thread& me = running->threads[running->current];
  // Two buffers used alternately: one barrier per shuffle suffices, as buffer k is written
  // again only after every lane has passed shuffle k + 1's barrier, having read shuffle k's.
  auto& buffer = warp.exchange[me.shuffles++ & 1];
  buffer[lane_id()] = bits;
  wait_at(warp.barrier);
  return source_lane < warp.size ? buffer[source_lane] : bits;
}

Traffic& traffic() { return counters; }

void check_alignment(const void* p, size_t alignment, size_t bytes, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % alignment != 0) {
    fail("misaligned " + std::to_string(bytes) + "-byte global " + what + " at " +
         std::to_string(reinterpret_cast<uintptr_t>(p)));
  }
}

}  // namespace simt
