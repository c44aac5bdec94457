// EVFILT_PROC: a process's exit, with its wait status, without reaping it.
//
// kqueue(2): "Takes the process ID to monitor as the identifier and the events to watch for in fflags, and
// returns when the process performs one or more of the requested events. [...] NOTE_EXIT: The process has
// exited. The exit status will be stored in data." FreeBSD's filt_proc sets EV_EOF|EV_ONESHOT on that event, and
// filt_procattach sets EV_CLEAR, fails with ESRCH for a process it cannot find, and fires at once for one that is
// already exiting (a zombie). Any process may be watched, not only children, and watching never reaps.
//
// Linux: one pidfd per knote (pidfd_open(2), Linux 5.3), in the queue's epoll set; it becomes readable once the
// process has exited. The status comes from what can read it without reaping:
//   1. waitid(P_PIDFD, ..., WEXITED | WNOHANG | WNOWAIT): an exited child not reaped yet;
//   2. the pidfd's exit information (PIDFD_GET_INFO, Linux 6.15): any process once its parent reaped it;
//   3. /proc/PID/stat's exit_code field, checked against the pidfd: a zombie that is not ours (same user).
// Otherwise data is 0 (listed in compat/README.md). NOTE_FORK and NOTE_EXEC have no unprivileged source on Linux
// (the process-events connector needs CAP_NET_ADMIN): registering them fails with ENOTSUP rather than never firing.
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include "kqueue.hpp"

namespace kqcompat {
namespace {

constexpr unsigned int kUnsupported = NOTE_FORK | NOTE_EXEC | NOTE_TRACK;
constexpr idtype_t kPidfdId = static_cast<idtype_t>(3);  // P_PIDFD (Linux 5.4), missing from older headers

// <linux/pidfd.h> of Linux 6.15: struct pidfd_info up to exit_code (its first published size, 64 bytes).
struct PidfdInfo {
  uint64_t mask;
  uint64_t cgroupid;
  uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
  int32_t exit_code;
};
constexpr uint64_t kPidfdInfoExit = 1u << 3;
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, PidfdInfo);

// The pidfd, in the queue's epoll set as an internal source that names its knote.
struct ProcSource : InternalSource {
  Knote* knote = nullptr;
};

struct ProcKnote : FilterState {
  ProcSource source;
  ~ProcKnote() override { ::close(source.fd_); }
};

ProcSource& source_of(Knote& knote) { return static_cast<ProcKnote&>(*source_knote(knote).state_).source; }
pid_t pid_of(const Knote& knote) { return static_cast<pid_t>(knote.ident_); }

void exited(Kqueue& queue, InternalSource& source) {
  Knote& knote = *static_cast<ProcSource&>(source).knote;
  // FreeBSD drops the knote without an event when NOTE_EXIT was not asked for (filt_proc: EV_DROP).
  if (!(knote.sfflags_ & NOTE_EXIT))
    queue.drop_knote(knote);
  else
    queue.queue_pending(knote);
}

// The wait status as waitpid(2) would give it, from waitid's siginfo.
int64_t wait_status(const siginfo_t& info) {
  switch (info.si_code) {
    case CLD_EXITED:
      return (info.si_status & 0xff) << 8;
    case CLD_DUMPED:
      return info.si_status | 0x80;
    default:
      return info.si_status;  // CLD_KILLED: the signal number
  }
}

bool reaped_exit_code(int pidfd, int64_t& status) {
  PidfdInfo info{};
  info.mask = kPidfdInfoExit;
  if (ioctl(pidfd, kPidfdGetInfo, &info) != 0 || !(info.mask & kPidfdInfoExit)) return false;
  status = info.exit_code;
  return true;
}

// /proc/PID/stat's 52nd field (proc(5)), trusted only if the process was still unreaped after the read, so the
// number cannot have been reused by then.
bool zombie_exit_code(int pidfd, pid_t pid, int64_t& status) {
  char path[32], text[1024];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const ssize_t size = read(fd, text, sizeof text - 1);
  ::close(fd);
  if (size <= 0) return false;
  text[size] = '\0';
  const char* field = std::strrchr(text, ')');  // the command name may hold spaces and parentheses
  for (int number = 2; field && number < 52; ++number) field = std::strchr(field + 1, ' ');
  if (!field || syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) != 0) return false;
  status = std::strtoll(field + 1, nullptr, 10);
  return true;
}

int64_t exit_status(int pidfd, pid_t pid) {
  siginfo_t info{};
  if (waitid(kPidfdId, static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0)
    return wait_status(info);
  int64_t status = 0;
  if (reaped_exit_code(pidfd, status) || zombie_exit_code(pidfd, pid, status) || reaped_exit_code(pidfd, status))
    return status;
  return 0;
}

int attach(Kqueue& queue, Knote& knote) {
  if (knote.sfflags_ & kUnsupported) return ENOTSUP;
  if (knote.ident_ == 0 || knote.ident_ > INT_MAX) return ESRCH;
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_of(knote), 0));  // close-on-exec
  if (pidfd < 0) return errno == EINVAL ? ESRCH : errno;  // EINVAL: a thread's id, not a process's
  auto state = std::make_unique<ProcKnote>();
  state->source.fd_ = pidfd;
  state->source.on_ready = exited;
  state->source.knote = &knote;
  epoll_event event{};
  event.events = EPOLLIN | EPOLLET;  // one edge, at exit; a disabled knote is looked at again on enable
  event.data.u64 = epoll_data_for(state->source);
  if (epoll_ctl(queue.epoll_fd_, EPOLL_CTL_ADD, pidfd, &event) != 0) return errno;  // `state` closes the pidfd
  source_knote(knote).state_ = std::move(state);
  knote.flags_ |= EV_CLEAR;  // set by FreeBSD's filt_procattach
  return 0;
}

int modify(Kqueue&, Knote& knote, const struct kevent& change) {
  if (change.fflags & kUnsupported) return ENOTSUP;
  knote.sfflags_ = change.fflags;  // FreeBSD replaces the interest on every change
  knote.sdata_ = change.data;
  return 0;
}

bool enable_changed(Kqueue&, Knote&) { return false; }

void detach(Kqueue& queue, Knote& knote) {
  if (!queue.closed_.load()) epoll_ctl(queue.epoll_fd_, EPOLL_CTL_DEL, source_of(knote).fd_, nullptr);
}

bool evaluate(Kqueue& queue, Knote& knote, uint32_t, struct kevent& out) {
  ProcSource& source = source_of(knote);
  pollfd probe{source.fd_, POLLIN, 0};
  if (poll(&probe, 1, 0) != 1) return false;  // still running
  if (!(knote.sfflags_ & NOTE_EXIT)) {
    // The interest was replaced after the exit was seen (a re-EV_ADD with fflags 0): filt_proc sets EV_DROP and
    // the scan frees the knote without an event. Nothing touches the knote after a false return.
    queue.drop_knote(knote);
    return false;
  }
  knote.flags_ |= EV_ONESHOT;  // filt_proc: the knote goes with its one event
  out.flags |= EV_EOF | EV_ONESHOT;
  out.fflags = knote.sfflags_ & NOTE_EXIT;
  out.data = exit_status(source.fd_, pid_of(knote));
  return true;
}

bool source_is_level(const Knote&) { return false; }

}  // namespace

const FilterOps proc_filter = {
    .attach = attach,
    .modify = modify,
    .enable_changed = enable_changed,
    .detach = detach,
    .evaluate = evaluate,
    .clear = nullptr,
    .source_is_level = source_is_level,
};

}  // namespace kqcompat
