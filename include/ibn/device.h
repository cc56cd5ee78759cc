#pragma once
// Choosing where tensors live: `--device cpu|cuda|cuda:N|auto`.
#include <string>

#include <c10/core/Device.h>

namespace ibn {

// "auto" is CUDA when a device is present, else the CPU. Throws ibn::UsageError for an unknown
// name and std::runtime_error when CUDA is asked for but unavailable.
c10::Device resolve_device(const std::string& name);

// "none", or "2 (cuda:0, cuda:1)": for `ibn --version` and reports.
std::string cuda_device_summary();

// LibTorch's CPU allocator hands large blocks straight back to the kernel, so each new
// block-sized temporary (the MI estimators stream [rows, N] blocks) is paid for again in page
// faults: half of KSG's run time on the 2-core machine. This keeps freed memory in the
// process's heap for reuse. Call once at start-up; the `ibn` binary and the tests do.
void keep_freed_memory();

// Sets LibTorch's CPU threads (n <= 0: keep LibTorch's count) and keeps OpenBLAS, when it is
// the BLAS, to the calling thread, unless the environment sets OPENBLAS_NUM_THREADS. Why: beside
// LibTorch's OpenMP pool, OpenBLAS's own idle threads spin in sched_yield after each product,
// and the two pools fight for the cores. On the 2-core machine, at 2 threads, that made the
// small models of `ibn bench train` 1.2-2.7x slower (ViT 10.0 vs 26.9 steps/s back to back)
// and once stole a core from the activation writer. The cost: a large product alone (an MLP at width 512)
// runs on one core, about 1.6x slower; OPENBLAS_NUM_THREADS=N gives such runs N again.
// Throws ibn::UsageError naming --threads for n < 0 or n > kMaxThreads (check_thread_count).
void set_compute_threads(int n);
void check_thread_count(int n);
// The machine's logical cores (at least 1, at most kMaxThreads): the default of the commands whose loops are coarse
// (the MI estimators' queries and block pairs).
int every_core();
// More threads than this only oversubscribes any machine the tool runs on; a typo such as
// --threads 100000 would otherwise spend minutes creating threads.
constexpr int kMaxThreads = 512;

// While one lives, OpenBLAS (when it is the BLAS) runs every product on the calling thread; the
// count before is restored after. For code that spreads products over LibTorch's threads itself:
// OpenBLAS's own threads would then compete with them for the cores.
class BlasOnCallingThread {
 public:
  BlasOnCallingThread();
  ~BlasOnCallingThread();
  BlasOnCallingThread(const BlasOnCallingThread&) = delete;
  BlasOnCallingThread& operator=(const BlasOnCallingThread&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace ibn
