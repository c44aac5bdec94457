// NOTE_FORK, NOTE_EXEC and NOTE_TRACK for any process, in a program with CAP_NET_ADMIN: the kernel's
// process-events connector (cn_proc, NETLINK_CONNECTOR) multicasts every fork, exec and exit on the system to the
// sockets that listen. Used where the layer's own reports cannot reach (proc_events.hpp): a process that is not a
// descendant forked after the first queue, or one that exec'd since. One socket per knote, in the queue's epoll
// set beside the pidfd: it hears of every process, and keeps what concerns its own.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace kqcompat {

// A listening socket (non-blocking, close-on-exec), or -1 with errno: EPERM without CAP_NET_ADMIN, or whatever
// the kernel says when it has no connector.
int proc_connector_open();

// What the socket heard of `pid` since the last read: its forks (of processes, not threads) and whether it
// exec'd. Messages the socket could not hold (ENOBUFS) are lost.
struct ConnectorNews {
  uint32_t forks = 0;
  bool exec = false;
  std::vector<pid_t> children;
};
void proc_connector_read(int fd, pid_t pid, ConnectorNews& news);

}  // namespace kqcompat
