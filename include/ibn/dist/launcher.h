#pragma once
// `ibn train --nproc N`: N worker processes on this machine, for users without torchrun. Each
// is this program again, with the same arguments and torchrun's variables set (RANK,
// LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT).
#include <ostream>
#include <string>
#include <vector>

namespace ibn::dist {

// Set (to "1") in each worker's environment: the worker then ignores --nproc in its arguments.
inline constexpr const char* kLocalWorkerVariable = "IBN_NPROC_WORKER";

struct LocalLaunch {
  int processes = 2;
  std::vector<std::string> arguments;  // after the program's name: "train" and its options, as given
  // OMP_NUM_THREADS for each worker when the caller's environment does not set it: the CPU's
  // cores shared out, so that N workers do not each start a thread per core.
  int threads_per_process = 1;
};

// Starts the workers and waits for them. When one fails (a non-zero exit or a signal), the
// others get 3 s to stop by themselves, then SIGTERM, then SIGKILL 10 s later; its failure is returned:
// its exit code, or 1 for a signal, after one line on `errors` naming the rank and the cause.
// A SIGINT or SIGTERM sent to this process (ignored ones stay ignored) reaches the workers, and
// this process then dies of it once they have stopped. A worker gets SIGTERM if this process
// dies.
// Returns 0 when all succeed.
int run_local_workers(const LocalLaunch& launch, std::ostream& errors);

// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice for port 0).
int free_local_port();

}  // namespace ibn::dist
