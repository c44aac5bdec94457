// EVFILT_READ on sockets, pipes, FIFOs, regular files and other queues: readable data, waiting connections, end
// of file, pending events.
//
// FreeBSD's contract (kqueue(2)): `data` is the number of bytes readable; on a listening socket the number of
// connections waiting in accept's queue; EV_EOF is set once the peer shut down writing, possibly while data is
// still buffered, with the socket error (if any) in `fflags`. NOTE_LOWAT puts the threshold in `data`. On a
// regular file, `data` is what lies past the offset (file_watch.hpp); on another kqueue, the number of events
// pending there.
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <utility>

#include "fd_filter.hpp"
#include "fd_table.hpp"
#include "file_watch.hpp"

namespace kqcompat {
namespace {

int attach(Kqueue& queue, Knote& knote) { return fd_attach(queue, knote); }

// Completed connections waiting for accept(): Linux reports the accept queue's length in TCP_INFO's
// tcpi_unacked for a listening socket. Other listening sockets (Unix domain) only tell "at least one".
int64_t waiting_connections(int fd, uint32_t events) {
  tcp_info info{};
  socklen_t size = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) == 0 && size >= sizeof info.tcpi_unacked)
    return info.tcpi_unacked;
  return (events & EPOLLIN) ? 1 : 0;
}

// FreeBSD's filt_soread reports every byte in the receive buffer, over all the datagrams queued; Linux's FIONREAD
// gives the next datagram's size only (`next`), and nothing gives the sum. What does bound it is the memory the
// queue is charged (SO_MEMINFO's SK_MEMINFO_RMEM_ALLOC): each datagram's truesize, its bytes plus the kernel's
// bookkeeping (struct sk_buff and skb_shared_info, 576 bytes on x86-64; 832 per small datagram measured on
// loopback). So with two or more datagrams queued the charge is at least next + 2 * kMinOverhead, and the sum is
// at most the charge less 2 * kMinOverhead: an upper bound that never under-counts (UDP also releases the charge
// of datagrams already read in batches, which only loosens it). Below that, only one datagram is queued and
// `next` is exact. A Unix-domain datagram is charged to its sender: the charge is 0 and `data` is `next`
// (compat/README.md).
int64_t queued_datagram_bytes(int fd, int64_t next) {
  constexpr int64_t kMinOverhead = 512;
  uint32_t memory[SK_MEMINFO_VARS] = {};
  socklen_t size = sizeof memory;
  if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, memory, &size) != 0 || size <= SK_MEMINFO_RMEM_ALLOC * sizeof(uint32_t))
    return next;
  const int64_t charged = memory[SK_MEMINFO_RMEM_ALLOC];
  return charged < next + 2 * kMinOverhead ? next : std::max(next, charged - 2 * kMinOverhead);
}

// vfs_subr.c's filt_vfsread: active while the offset is not at the end (data != 0, negative past it), always
// with NOTE_FILE_POLL.
bool evaluate_file(Knote& knote, struct kevent& out) {
  out.data = file_unread_bytes(record_of(knote));
  if (record_of(knote).lost_) return false;
  return out.data != 0 || (knote.sfflags_ & NOTE_FILE_POLL);
}

// filt_kqueue: the watched queue's pending count (kq_count). Its lock is taken only while this queue holds an
// epoll entry on it (registered_), which is the lock order kqueue.hpp relies on: epoll refuses cycles (ELOOP).
bool evaluate_queue(WatchedFd& record, struct kevent& out) {
  if (!record.registered_) return false;
  Kqueue* watched = queue_of(record.fd());
  if (!watched) return false;  // closed since: the core purges the knote
  watched->callers_.fetch_add(1);  // keeps it from being freed, as a kevent() call on it does
  {
    std::lock_guard guard(watched->lock_);
    out.data = watched->collect_pending();
  }
  watched->callers_.fetch_sub(1);
  return out.data > 0;
}

// Whether an EV_CLEAR read knote fires for this report, when its descriptor's epoll entry is shared with a write
// knote: deviation 28's mirror. A wake-up that only made room in the send buffer is reported with EPOLLIN too
// while data waits unread, but FreeBSD activates a read knote only when data arrives (sorwakeup), and an EV_CLEAR
// knote, once returned, only then. The bytes received tell the two apart: unchanged since the knote last fired,
// nothing arrived. A re-evaluation that epoll did not report (after EV_ENABLE, say) fires as BSD's would.
bool data_arrived(Kqueue& queue, const Knote& knote, WatchedFd& record, uint32_t hint) {
  auto* write = static_cast<WriteKnote*>(record.write());
  if (!(knote.flags_ & EV_CLEAR) || !write || hint == 0 || record.kind_ != WatchedFd::Kind::stream) return true;
  const uint64_t received = tcp_counts(queue, record, true).received;
  if (received == WriteKnote::kUncountable) return true;
  return std::exchange(write->received_when_read_fired_, received) != received;  // kNeverFired differs from any
}

}  // namespace

int64_t read_bytes_asked_lost(WatchedFd& record) {
  if (errno == EBADF) record.lost_ = true;  // closed by a raw system call: see compat/README.md
  if (errno == EINVAL && record.kind_ == WatchedFd::Kind::stream) record.kind_ = WatchedFd::Kind::listener;
  return 0;
}

// Every case but the common one (fd_filter.hpp's read_evaluate). Out of line, so that the common case pays for none
// of its calls.
bool read_evaluate_generally(Kqueue& queue, Knote& knote, uint32_t hint, struct kevent& out) {
  WatchedFd& record = record_of_read_knote(knote);
  if (record.kind_ == WatchedFd::Kind::file) return evaluate_file(knote, out);
  if (record.kind_ == WatchedFd::Kind::queue) return evaluate_queue(record, out);
  if (record.inert(EVFILT_READ)) return false;
  if (hint == 0) hint = fd_probe(knote, POLLIN);
  if (record.lost_) return false;
  if (record.kind_ == WatchedFd::Kind::listener) {
    out.data = waiting_connections(record.fd(), hint);
    return out.data > 0 || (hint & EPOLLERR);
  }
  if (fd_unconnected_stream(queue, knote, hint)) return false;
  const bool eof = hint & (EPOLLRDHUP | EPOLLHUP);
  const bool error = hint & EPOLLERR;
  if (record.kind_ == WatchedFd::Kind::eventfd) {
    out.data = static_cast<int64_t>(eventfd_counter(record.fd()));  // filt_eventfdread: the counter
    return hint & EPOLLIN;
  }
  if (record.kind_ == WatchedFd::Kind::other) {
    // eventfd, timerfd, signalfd...: readable is all epoll tells. A terminal answers FIONREAD with what a read
    // would return (FreeBSD's filt_ttyread reports that count), and a hang-up is its end of file.
    int bytes = 0;
    out.data = ioctl(record.fd(), FIONREAD, &bytes) == 0 ? bytes : 0;
    if (eof) out.flags |= EV_EOF;
    return (hint & EPOLLIN) || eof;
  }
  out.data = readable_bytes(queue, record);
  if (record.lost_) return false;
  if (record.kind_ == WatchedFd::Kind::datagram) out.data = queued_datagram_bytes(record.fd(), out.data);
  if (eof) out.flags |= EV_EOF;
  if ((eof || error) && record.kind_ != WatchedFd::Kind::pipe) out.fflags = socket_error(record.fd(), hint);
  const int64_t low_water = (knote.sfflags_ & NOTE_LOWAT) && knote.sdata_ > 0 ? knote.sdata_ : 1;
  if (record.kind_ == WatchedFd::Kind::datagram && (hint & EPOLLIN)) return true;  // empty datagrams count
  if (eof || error) return true;
  return out.data >= low_water && data_arrived(queue, knote, record, hint);
}

namespace {

bool evaluate(Kqueue& queue, Knote& knote, uint32_t hint, struct kevent& out) {
  return read_evaluate(queue, knote, hint, out);
}

}  // namespace

const FilterOps read_filter = {
    .attach = attach,
    .modify = fd_modify,
    .enable_changed = fd_enable_changed,
    .detach = fd_detach,
    .evaluate = evaluate,
    .clear = nullptr,
    .source_is_level = fd_source_is_level,
};

}  // namespace kqcompat
