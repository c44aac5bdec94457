// NOTE_FORK, NOTE_EXEC and NOTE_TRACK for processes that run the layer: what their own fork hooks report.
//
// No unprivileged Linux interface tells one process of another's fork or exec. But a process forked from a
// program linked with the layer runs the layer's fork hooks, and two signals from there are honest:
//   - fork: the new child's fork hook writes "PARENT forked CHILD" upstream, before fork() returns in it;
//   - exec: a descriptor with O_CLOEXEC closes exactly when an exec succeeds (and at exit), so its peer sees the
//     end of file; /proc tells an exit (the process is gone or has PF_EXITING) from an exec.
// The upstream channels are "ends": SOCK_SEQPACKET socket pairs whose child side (close-on-exec) a process keeps
// and whose watcher side an ancestor reads. A process that has a live queue when it forks makes a pair for
// itself first (its children report to it through it); each child, in its fork hook, makes a fresh pair for
// every end it inherited, sends the fresh watcher side up that end with the fork message (SCM_RIGHTS), keeps the
// fresh child side and closes what it inherited. So every ancestor that listened when the process was forked
// holds a watcher side for it: its forks and its exec reach them all. A program that closes its child side on
// purpose (a daemon closing every descriptor) sends "abandoned" first (the close wrapper), so that is not taken
// for an exec. Processes started any other way (posix_spawn, vfork, a fork before the first queue, a process
// that is not a descendant, or one that has exec'd since) cannot be followed: EV_ADD fails with ENOTSUP.
//
// The watcher's side is a registry per process (one lock, taken inside a queue's lock), which every queue
// watching a process reads: each knote compares what it last saw with what the registry knows.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kqcompat {

// Starts following `pid` for one knote: 0 with `*fd` set to a descriptor that becomes readable (edge) when
// something new arrives for it (owned by the registry: put it in the queue's epoll set, never close it; -1 when
// nothing more can arrive), or ENOTSUP. Waits up to 200 ms for the first report of a child forked a moment ago.
// A process that exec'd (or abandoned its end) is refused, since nothing of the new program can be known, unless
// `since_fork` (NOTE_TRACK, which follows a child from its fork on, as FreeBSD registers it at fork time).
int proc_events_follow(pid_t pid, bool since_fork, int* fd);
// The knote stops following `pid`.
void proc_events_unfollow(pid_t pid);

// What is known of `pid` after reading everything that arrived: its forks so far, whether it exec'd, and the
// children it forked from the `children_seen`-th on (in order). False when `pid` is not followed. When the
// process has `exited`, waits up to 50 ms for its end of file: a child it forked a moment ago may still hold a
// copy of its end, between reporting the fork and closing that copy, and an exec must be told before the exit.
struct ProcNews {
  uint32_t forks = 0;
  bool exec = false;
  std::vector<pid_t> children;
};
bool proc_events_news(pid_t pid, size_t children_seen, bool exited, ProcNews& news);

// The close wrapper, before any close of a number the layer knows: a child side the program closes on purpose
// says "abandoned" first. Async-signal-safe.
void proc_events_descriptor_closing(int fd);

// fork (fork_hooks.cpp): the prepare handler makes this process's own pair when it has a live queue; the child
// handler reports the fork up every inherited end and swaps them for fresh ones, and drops the parent's
// registry (its descriptors are the parent's business).
void proc_events_fork_prepare();
void proc_events_fork_parent();
void proc_events_fork_child();

// /proc/PID/stat (proc(5)) read into `text` (`size` bytes at most, NUL-terminated); returns where its fields after
// the command name begin (at the name's closing parenthesis, the last one in the text: the name may hold spaces and
// parentheses), or null when the process is gone.
const char* read_proc_stat(pid_t pid, char* text, size_t size);

}  // namespace kqcompat
