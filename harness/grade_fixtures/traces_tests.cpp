// A grade fixture (harness/test_grade.py), added beside a lesson's program that fails one test: before main()
// runs, it goes for every other process it can name (by /proc, by its parent, by trying every pid up to 65536):
// attaches with ptrace(PTRACE_SEIZE), writes into it with process_vm_writev, takes its descriptors with
// pidfd_getfd, and, for each one it reached, sends SIGKILL. Had it reached the test runner, the tests would end
// abnormally or pass; the lesson's row must instead fail with its own reason.
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>

namespace {

bool reached(pid_t pid) {
  bool got_in = false;
  if (ptrace(PTRACE_SEIZE, pid, nullptr, nullptr) == 0) {
    ptrace(PTRACE_DETACH, pid, nullptr, nullptr);
    got_in = true;
  }
  char byte = 0;
  iovec local{&byte, 1};
  iovec remote{reinterpret_cast<void*>(0x1000), 1};
  if (process_vm_writev(pid, &local, 1, &remote, 1, 0) >= 0 || errno == EFAULT) got_in = true;  // allowed
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) {
    for (int fd = 0; fd < 16; ++fd) {
      const int taken = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
      if (taken >= 0) {
        close(taken);
        got_in = true;
      }
    }
    close(pidfd);
  }
  return got_in;
}

const bool attacked = [] {
  std::set<pid_t> targets = {getppid()};
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ignored)) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") == std::string::npos) targets.insert(std::stoi(name));
  }
  for (pid_t pid = 1; pid < 65536; ++pid) {
    if (kill(pid, 0) == 0 || errno == EPERM) targets.insert(pid);
  }
  targets.erase(getpid());
  int hit = 0;
  for (pid_t pid : targets) {
    if (reached(pid)) {
      ++hit;
      kill(pid, SIGKILL);
    }
  }
  std::fprintf(stderr, "traces-tests: %zu processes named, %d reached\n", targets.size(), hit);
  return true;
}();

}  // namespace
