// EVFILT_WRITE on sockets, pipes, FIFOs and regular files: room to write, and the end of the write side.
//
// FreeBSD's contract (kqueue(2)): `data` is the free space in the send buffer (pipe: in the pipe); a stream
// socket that is not connected is not writable at all; EV_EOF once the write side can send no more (peer gone,
// reset), with the socket error in `fflags`. A regular file is always writable, `data` = 0 (filt_vfswrite); a
// kqueue cannot be watched for writing (EINVAL, as FreeBSD's kqueue_kqfilter).
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "fd_filter.hpp"

namespace kqcompat {
namespace {

int attach(Kqueue& queue, Knote& knote) {
  if (knote.ident_ <= 0x7fffffff && is_queue_descriptor(static_cast<int>(knote.ident_))) return EINVAL;
  return fd_attach(queue, knote);
}

// Bytes that can still be queued. Sockets: SO_SNDBUF minus what waits in the send queue (SIOCOUTQ); the buffer
// size is read each time because Linux grows it as the connection warms up. Pipes: capacity minus contents.
int64_t free_space(WatchedFd& record) {
  int queued = 0;
  const unsigned long request = record.kind_ == WatchedFd::Kind::pipe ? FIONREAD : SIOCOUTQ;
  if (ioctl(record.fd(), request, &queued) != 0) {
    if (errno == EBADF) record.lost_ = true;
    return 0;
  }
  int capacity = record.capacity_;
  if (record.kind_ != WatchedFd::Kind::pipe) {
    socklen_t size = sizeof capacity;
    if (getsockopt(record.fd(), SOL_SOCKET, SO_SNDBUF, &capacity, &size) != 0) capacity = 0;
  }
  return std::max(0, capacity - queued);
}

// Whether an EV_CLEAR write knote fires for this report. FreeBSD activates it when room is made in the send
// buffer (sowwakeup: acknowledged data dropped), never because data arrived. Here it shares its descriptor's
// epoll entry with the read knote, edge-triggered, and epoll reports EPOLLOUT with every wake-up of the socket,
// each arrival of data included. For TCP, the count of bytes the peer acknowledged tells them apart: unchanged
// since the knote last fired, no room was made. (Linux wakes a socket for acknowledged data only when it had run
// out of room; data acknowledged meanwhile makes the next report fire, late, where BSD fired at once.) A
// re-evaluation that epoll did not report (after EV_ADD or EV_ENABLE, which BSD re-evaluates too) fires as usual
// and takes a new count; a socket that is not TCP has no count and fires as before (compat/README.md).
bool room_made(Kqueue& queue, WriteKnote& knote, const WatchedFd& record, bool reported) {
  if (!(knote.flags_ & EV_CLEAR) || record.kind_ != WatchedFd::Kind::stream || !(record.registered_ & EPOLLIN) ||
      knote.acked_when_fired_ == WriteKnote::kUncountable)
    return true;
  const uint64_t acked = tcp_counts(queue, record, reported).acked;
  const uint64_t before = std::exchange(knote.acked_when_fired_, acked);
  return !reported || before == WriteKnote::kNeverFired || acked != before;
}

bool evaluate(Kqueue& queue, Knote& knote, uint32_t hint, struct kevent& out) {
  WatchedFd& record = record_of(knote);
  if (record.kind_ == WatchedFd::Kind::file) {
    if (fcntl(record.fd(), F_GETFD) == -1) record.lost_ = true;  // the raw-close safety net, as elsewhere
    out.data = 0;
    return !record.lost_;
  }
  if (record.inert(EVFILT_WRITE)) return false;
  const bool reported = hint != 0;  // by epoll; else re-evaluated after a change or from the pending list
  if (!reported) hint = fd_probe(knote, POLLOUT);
  if (record.lost_) return false;
  if (fd_unconnected_stream(queue, knote, hint)) return false;
  const bool eof = hint & (EPOLLHUP | EPOLLERR);
  if (!(hint & EPOLLOUT) && !eof) return false;
  if (record.kind_ == WatchedFd::Kind::eventfd) {
    // filt_eventfdwrite: how much may still be added without blocking (the counter's limit is 2^64 - 2).
    out.data = static_cast<int64_t>(UINT64_MAX - 1 - eventfd_counter(record.fd()));
    return hint & EPOLLOUT;
  }
  if (!eof && !room_made(queue, static_cast<WriteKnote&>(knote), record, reported)) return false;
  out.data = eof && record.kind_ == WatchedFd::Kind::pipe ? 0 : free_space(record);
  if (record.lost_) return false;
  if (eof) out.flags |= EV_EOF;
  if (eof && record.kind_ != WatchedFd::Kind::pipe) out.fflags = socket_error(record.fd(), hint);
  if (!eof && (knote.sfflags_ & NOTE_LOWAT) && out.data < knote.sdata_) return false;
  return true;
}

}  // namespace

const FilterOps write_filter = {
    .attach = attach,
    .modify = fd_modify,
    .enable_changed = fd_enable_changed,
    .detach = fd_detach,
    .evaluate = evaluate,
    .clear = nullptr,
    .source_is_level = fd_source_is_level,
};

}  // namespace kqcompat
