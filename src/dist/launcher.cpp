#include "ibn/dist/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <algorithm>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace ibn::dist {

namespace {

// The workers' process ids, for the signal handler (async-signal-safe: a fixed array).
constexpr int kMaxWorkers = 1024;
volatile pid_t g_workers[kMaxWorkers];
volatile int g_worker_count = 0;
volatile sig_atomic_t g_received = 0;  // the last SIGINT or SIGTERM this process got

void forward_signal(int signal) {
  const int saved_errno = errno;
  g_received = signal;
  for (int i = 0; i < g_worker_count; ++i) {
    if (g_workers[i] > 0) ::kill(g_workers[i], signal);
  }
  errno = saved_errno;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  return fmt::format("stopped (wait status {})", status);
}

// A worker's argv and environment, made before fork(): between fork and exec a child of a
// threaded process (LibTorch's pools) may only make async-signal-safe calls, and allocating is
// not one.
struct WorkerCommand {
  std::vector<std::string> words, environment;
  std::vector<char*> argv, envp;
};

WorkerCommand worker_command(const LocalLaunch& launch, int rank, int port) {
  WorkerCommand command;
  command.words.push_back("ibn");
  command.words.insert(command.words.end(), launch.arguments.begin(), launch.arguments.end());
  const std::vector<std::pair<std::string, std::string>> variables = {
      {"RANK", std::to_string(rank)},
      {"LOCAL_RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(launch.processes)},
      {"LOCAL_WORLD_SIZE", std::to_string(launch.processes)},
      {"MASTER_ADDR", "127.0.0.1"},
      {"MASTER_PORT", std::to_string(port)},
      {kLocalWorkerVariable, "1"},
      // The workers form their own group: a torchrun agent around this launcher serves no store
      // for them.
      {"TORCHELASTIC_USE_AGENT_STORE", "False"}};
  bool threads_set = false;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const std::string name = text.substr(0, text.find('='));
    if (name == "OMP_NUM_THREADS") threads_set = true;
    if (std::none_of(variables.begin(), variables.end(), [&](const auto& v) { return v.first == name; })) {
      command.environment.push_back(text);
    }
  }
  for (const auto& [name, value] : variables) command.environment.push_back(name + "=" + value);
  if (!threads_set) command.environment.push_back("OMP_NUM_THREADS=" + std::to_string(launch.threads_per_process));
  for (std::string& word : command.words) command.argv.push_back(word.data());
  command.argv.push_back(nullptr);
  for (std::string& entry : command.environment) command.envp.push_back(entry.data());
  command.envp.push_back(nullptr);
  return command;
}

// The signals the launcher forwards, and what each did before it (SIG_IGN stays ignored, in the
// launcher and its workers: a background job's Ctrl-C is not for it).
struct ForwardedSignals {
  struct sigaction old_int {}, old_term{};
  sigset_t both{};
};

// Forks a worker with SIGINT and SIGTERM blocked, so that neither lands between fork() and the
// caller recording the pid. Only async-signal-safe calls between fork and exec: the worker
// restores the signals' old actions, asks to be sent SIGTERM when the launcher dies (an OOM
// kill must not leave workers training), then execs.
pid_t start_worker(WorkerCommand& command, const ForwardedSignals& signals) {
  const pid_t launcher = ::getpid();
  sigset_t before;
  ::sigprocmask(SIG_BLOCK, &signals.both, &before);
  const pid_t pid = ::fork();
  if (pid != 0) return pid;  // the caller unblocks after recording it
  ::sigaction(SIGINT, &signals.old_int, nullptr);
  ::sigaction(SIGTERM, &signals.old_term, nullptr);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != launcher) ::_exit(1);
  ::sigprocmask(SIG_SETMASK, &before, nullptr);
  ::execve("/proc/self/exe", command.argv.data(), command.envp.data());
  static const char message[] = "ibn train --nproc: cannot start a worker: exec of /proc/self/exe failed\n";
  (void)!::write(STDERR_FILENO, message, sizeof message - 1);
  ::_exit(127);
}

void forget_worker(pid_t pid) {
  for (int i = 0; i < g_worker_count; ++i) {
    if (g_workers[i] == pid) g_workers[i] = 0;
  }
}

// Gives the workers still running `own_time` to stop by themselves (a worker whose peer died
// fails its next collective at once, and says so), then asks them to stop (SIGTERM), and after
// `grace` more kills them.
void stop_workers(std::vector<pid_t>& running, std::chrono::milliseconds own_time, std::chrono::milliseconds grace) {
  const auto reap = [&] {
    for (auto it = running.begin(); it != running.end();) {
      int status = 0;
      if (::waitpid(*it, &status, WNOHANG) == *it) {
        forget_worker(*it);
        it = running.erase(it);
      } else {
        ++it;
      }
    }
  };
  const auto own_deadline = std::chrono::steady_clock::now() + own_time;
  while (!running.empty() && std::chrono::steady_clock::now() < own_deadline) {
    reap();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (pid_t pid : running) ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (!running.empty()) {
    reap();
    if (running.empty()) break;
    if (std::chrono::steady_clock::now() > deadline) {
      for (pid_t pid : running) ::kill(pid, SIGKILL);
      for (pid_t pid : running) {
        ::waitpid(pid, nullptr, 0);
        forget_worker(pid);
      }
      running.clear();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(fmt::format("cannot open a socket to find a free port: {}", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string reason = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error(fmt::format("cannot find a free port on 127.0.0.1: {}", reason));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

int run_local_workers(const LocalLaunch& launch, std::ostream& errors) {
  if (launch.processes < 1 || launch.processes > kMaxWorkers) {
    throw std::invalid_argument(fmt::format("--nproc {} must lie in [1, {}]", launch.processes, kMaxWorkers));
  }
  const int port = free_local_port();
  std::vector<WorkerCommand> commands;
  for (int rank = 0; rank < launch.processes; ++rank) commands.push_back(worker_command(launch, rank, port));
  std::vector<pid_t> running;
  // Installed before the first fork, so that a signal in between reaches every worker started;
  // a signal ignored on entry stays ignored.
  ForwardedSignals signals;
  struct sigaction forward {};
  forward.sa_handler = forward_signal;
  ::sigemptyset(&forward.sa_mask);
  ::sigemptyset(&signals.both);
  ::sigaddset(&signals.both, SIGINT);
  ::sigaddset(&signals.both, SIGTERM);
  g_worker_count = 0;
  g_received = 0;
  ::sigaction(SIGINT, nullptr, &signals.old_int);
  ::sigaction(SIGTERM, nullptr, &signals.old_term);
  if (signals.old_int.sa_handler != SIG_IGN) ::sigaction(SIGINT, &forward, nullptr);
  if (signals.old_term.sa_handler != SIG_IGN) ::sigaction(SIGTERM, &forward, nullptr);
  const auto restore_signals = [&] {
    ::sigaction(SIGINT, &signals.old_int, nullptr);
    ::sigaction(SIGTERM, &signals.old_term, nullptr);
    g_worker_count = 0;
  };
  for (int rank = 0; rank < launch.processes; ++rank) {
    const pid_t pid = start_worker(commands[rank], signals);
    if (pid > 0) {
      g_workers[rank] = pid;
      g_worker_count = rank + 1;
    }
    ::sigprocmask(SIG_UNBLOCK, &signals.both, nullptr);
    if (pid < 0) {
      const std::string reason = std::strerror(errno);
      stop_workers(running, std::chrono::seconds(0), std::chrono::seconds(10));
      restore_signals();
      throw std::runtime_error(fmt::format("ibn train --nproc: cannot start worker {}: {}", rank, reason));
    }
    running.push_back(pid);
  }
  int result = 0;
  while (!running.empty()) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    const auto it = std::find(running.begin(), running.end(), pid);
    if (it == running.end()) continue;
    running.erase(it);
    int rank = 0;
    while (rank < launch.processes && g_workers[rank] != pid) ++rank;
    forget_worker(pid);
    const bool failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    if (failed && result == 0) {
      result = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
      if (!running.empty()) {
        errors << fmt::format("ibn: train --nproc: rank {} {}; stopping the other {}\n", rank, describe(status),
                              running.size() == 1 ? "rank" : fmt::format("{} ranks", running.size()))
               << std::flush;
      } else {
        errors << fmt::format("ibn: train --nproc: rank {} {}\n", rank, describe(status)) << std::flush;
      }
      stop_workers(running, std::chrono::seconds(3), std::chrono::seconds(10));
    }
  }
  restore_signals();
  // Stopped by Ctrl-C or SIGTERM: die of it, as the 1-process command does, so that a calling
  // shell script stops too rather than read an exit code.
  if (const int received = g_received; received == SIGINT || received == SIGTERM) {
    ::signal(received, SIG_DFL);
    ::raise(received);
  }
  return result;
}

}  // namespace ibn::dist
