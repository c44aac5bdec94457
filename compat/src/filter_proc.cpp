// EVFILT_PROC: a process's exit, with its wait status, without reaping it; its forks and execs where the
// layer can tell (proc_events.hpp).
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
// Otherwise data is 0 (listed in compat/README.md).
//
// NOTE_FORK, NOTE_EXEC and NOTE_TRACK (kqueue(2): "NOTE_TRACK: Follow a process across fork() calls. The parent
// process registers a new kevent to monitor the child process using the same fflags as the original event. The
// child process will signal an event with NOTE_CHILD set in fflags and the parent PID in data."): from the
// reports of processes that run the layer (proc_events.hpp), in the queue's epoll set beside the pidfd. For any
// other process registering them fails with ENOTSUP rather than never firing.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "fd_table.hpp"
#include "kqueue.hpp"
#include "proc_connector.hpp"
#include "proc_events.hpp"

namespace kqcompat {
namespace {

constexpr unsigned int kNeedReports = NOTE_FORK | NOTE_EXEC | NOTE_TRACK;
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
  // While following forks and execs: the registry's descriptor for the process (not owned), and what this knote
  // has seen of it.
  ProcSource reports;
  uint32_t reports_generation = 0;  // its close generation: another means it is not the registry's any more
  bool follows = false;
  bool via_connector = false;  // `reports` is this knote's own process-events connector socket (owned)
  uint32_t forks_seen = 0;
  bool exec_seen = false;
  size_t children_seen = 0;
  pid_t child_of = 0;       // a knote NOTE_TRACK made for a child: its NOTE_CHILD event is still to come
  unsigned int reported = 0;  // the fflags the last event carried: EV_CLEAR forgets them
  ~ProcKnote() override {
    ::close(source.fd_);
    if (via_connector && reports.fd_ >= 0) ::close(reports.fd_);
  }
};

ProcKnote& state_of(Knote& knote) { return static_cast<ProcKnote&>(*source_knote(knote).state_); }
ProcSource& source_of(Knote& knote) { return state_of(knote).source; }
pid_t pid_of(const Knote& knote) { return static_cast<pid_t>(knote.ident_); }
bool following(Knote& knote) { return state_of(knote).follows; }

int attach_from(Kqueue& queue, Knote& knote, bool since_fork);

// NOTE_TRACK: kern_event.c's knote_fork registers a knote for the child in the same queue, with the parent's
// fflags and udata, which first reports NOTE_CHILD with the parent's pid in data. NOTE_TRACKERR on the parent's
// event when that fails.
void track_child(Kqueue& queue, Knote& parent, pid_t child) {
  const KnoteKey key{static_cast<uintptr_t>(child), EVFILT_PROC};
  if (queue.knotes_.count(key)) return;
  auto knote = std::make_unique<SourceKnote>();
  knote->ident_ = key.ident;
  knote->filter_ = EVFILT_PROC;
  knote->flags_ = parent.flags_;
  knote->sfflags_ = parent.sfflags_;
  knote->sdata_ = pid_of(parent);
  knote->udata_ = parent.udata_;
  if (attach_from(queue, *knote, true) != 0) {
    source_knote(parent).fired_fflags_ |= NOTE_TRACKERR;
    return;
  }
  state_of(*knote).child_of = pid_of(parent);
  Knote& made = *knote;
  queue.knotes_.emplace(key, std::move(knote));
  queue.queue_pending(made);
}

bool has_exited(Knote& knote) {
  pollfd probe{source_of(knote).fd_, POLLIN, 0};
  return poll(&probe, 1, 0) == 1;
}

// Takes what the process's reports say that this knote has not seen: NOTE_FORK and NOTE_EXEC as asked for,
// children to track. Queues the knote when something is to be told.
void take_reports(Kqueue& queue, Knote& knote) {
  ProcKnote& state = state_of(knote);
  ProcNews news;
  if (!following(knote)) return;
  if (state.via_connector) {
    // What the connector heard since the last look: all of it is news.
    ConnectorNews heard;
    proc_connector_read(state.reports.fd_, pid_of(knote), heard);
    news.forks = state.forks_seen + heard.forks;
    news.exec = state.exec_seen || heard.exec;
    state.children_seen = 0;
    news.children = std::move(heard.children);
  } else if (!proc_events_news(pid_of(knote), state.children_seen, has_exited(knote), news)) {
    return;
  }
  unsigned int& fired = source_knote(knote).fired_fflags_;
  if (news.forks != state.forks_seen) fired |= knote.sfflags_ & NOTE_FORK;
  state.forks_seen = news.forks;
  state.children_seen += news.children.size();
  if (knote.sfflags_ & NOTE_TRACK)
    for (const pid_t child : news.children) track_child(queue, knote, child);
  if (news.exec && !state.exec_seen) fired |= knote.sfflags_ & NOTE_EXEC;
  state.exec_seen = news.exec;
  if (fired && !knote.disabled_) queue.queue_pending(knote);
}

void reports_arrived(Kqueue& queue, InternalSource& source) {
  take_reports(queue, *static_cast<ProcSource&>(source).knote);
}

void exited(Kqueue& queue, InternalSource& source) {
  Knote& knote = *static_cast<ProcSource&>(source).knote;
  take_reports(queue, knote);  // a fork or exec reported before the exit is told with it
  // FreeBSD drops the knote without an event when nothing it asked for happened (filt_proc: EV_DROP).
  if (!(knote.sfflags_ & NOTE_EXIT) && !source_knote(knote).fired_fflags_ && !state_of(knote).child_of)
    queue.drop_knote(knote);
  else
    queue.queue_pending(knote);
}

// Starts following the process's reports, for a knote that asks for NOTE_FORK, NOTE_EXEC or NOTE_TRACK: from
// now on, or (a NOTE_TRACK child) from its fork on.
int follow(Kqueue& queue, Knote& knote, ProcKnote& state, bool since_fork) {
  int fd = -1;
  if (const int error = proc_events_follow(pid_of(knote), since_fork, &fd)) {
    // Not a process that reports to this one: the kernel's connector hears of every process, with CAP_NET_ADMIN.
    fd = proc_connector_open();
    if (fd < 0) return error;
    state.via_connector = true;
  }
  state.reports.on_ready = reports_arrived;
  state.reports.knote = &knote;
  if (fd >= 0) {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    event.data.u64 = epoll_data_for(state.reports);
    if (epoll_ctl(queue.epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
      const int error = errno;
      if (state.via_connector)
        ::close(fd);
      else
        proc_events_unfollow(pid_of(knote));
      state.via_connector = false;
      return error;
    }
    state.reports.fd_ = fd;
    state.reports_generation = fd_generation(fd);
  }
  state.follows = true;
  if (since_fork || state.via_connector) return 0;
  ProcNews news;
  proc_events_news(pid_of(knote), 0, false, news);  // only what happens from now on counts
  state.forks_seen = news.forks;
  state.exec_seen = news.exec;
  state.children_seen = news.children.size();
  return 0;
}

void unfollow(Kqueue& queue, Knote& knote) {
  ProcKnote& state = state_of(knote);
  if (!state.follows) return;
  // Before the registry may close it; and only while the number is still its (else epoll dropped it at close).
  if (state.reports.fd_ >= 0 && !queue.closed_.load() && fd_generation(state.reports.fd_) == state.reports_generation)
    epoll_ctl(queue.epoll_fd_, EPOLL_CTL_DEL, state.reports.fd_, nullptr);
  if (state.via_connector)
    ::close(state.reports.fd_);
  else
    proc_events_unfollow(pid_of(knote));
  state.reports.fd_ = -1;
  state.via_connector = state.follows = false;
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
  char text[1024];
  const char* field = read_proc_stat(pid, text, sizeof text);
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

// A new knote; one that NOTE_TRACK makes for a child follows its reports from its fork on.
int attach_from(Kqueue& queue, Knote& knote, bool since_fork) {
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
  if (knote.sfflags_ & kNeedReports) {
    if (const int error = follow(queue, knote, *state, since_fork)) {
      epoll_ctl(queue.epoll_fd_, EPOLL_CTL_DEL, pidfd, nullptr);
      return error;
    }
  }
  source_knote(knote).state_ = std::move(state);
  knote.flags_ |= EV_CLEAR;  // set by FreeBSD's filt_procattach
  return 0;
}

int attach(Kqueue& queue, Knote& knote) { return attach_from(queue, knote, false); }

int modify(Kqueue& queue, Knote& knote, const struct kevent& change) {
  if ((change.fflags & kNeedReports) && !following(knote)) {
    if (const int error = follow(queue, knote, state_of(knote), false)) return error;
  }
  knote.sfflags_ = change.fflags;  // FreeBSD replaces the interest on every change
  knote.sdata_ = change.data;
  return 0;
}

bool enable_changed(Kqueue&, Knote&) { return false; }

void detach(Kqueue& queue, Knote& knote) {
  unfollow(queue, knote);
  if (!queue.closed_.load()) epoll_ctl(queue.epoll_fd_, EPOLL_CTL_DEL, source_of(knote).fd_, nullptr);
}

bool evaluate(Kqueue& queue, Knote& knote, uint32_t, struct kevent& out) {
  ProcKnote& state = state_of(knote);
  unsigned int& fired = source_knote(knote).fired_fflags_;
  state.reported = 0;
  if (state.child_of) {
    // The NOTE_TRACK child's first event; what else it has to tell comes at the next look.
    out.fflags = NOTE_CHILD;
    out.data = state.child_of;
    state.child_of = 0;
    queue.queue_pending(knote);
    return true;
  }
  take_reports(queue, knote);
  ProcSource& source = source_of(knote);
  if (!has_exited(knote)) {  // still running
    if (!fired) return false;
    out.fflags = state.reported = fired;
    return true;
  }
  if (!(knote.sfflags_ & NOTE_EXIT) && !fired) {
    // Nothing it asks for happened (a re-EV_ADD with fflags 0 after the exit was seen, say): filt_proc sets
    // EV_DROP and the scan frees the knote without an event. Nothing touches the knote after a false return.
    queue.drop_knote(knote);
    return false;
  }
  knote.flags_ |= EV_ONESHOT;  // filt_proc: the knote goes with its one event
  out.flags |= EV_EOF | EV_ONESHOT;
  out.fflags = fired | (knote.sfflags_ & NOTE_EXIT);
  if (knote.sfflags_ & NOTE_EXIT) out.data = exit_status(source.fd_, pid_of(knote));
  return true;
}

void clear(Knote& knote) { source_knote(knote).fired_fflags_ &= ~state_of(knote).reported; }

bool source_is_level(const Knote&) { return false; }

}  // namespace

const FilterOps proc_filter = {
    .attach = attach,
    .modify = modify,
    .enable_changed = enable_changed,
    .detach = detach,
    .evaluate = evaluate,
    .clear = clear,
    .source_is_level = source_is_level,
};

}  // namespace kqcompat
