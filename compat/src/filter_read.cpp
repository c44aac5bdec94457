// EVFILT_READ on sockets, pipes and FIFOs: readable data, waiting connections, end of file.
//
// FreeBSD's contract (kqueue(2)): `data` is the number of bytes readable; on a listening socket the number of
// connections waiting in accept's queue; EV_EOF is set once the peer shut down writing, possibly while data is
// still buffered, with the socket error (if any) in `fflags`. NOTE_LOWAT puts the threshold in `data`.
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>

#include "fd_filter.hpp"

namespace kqcompat {
namespace {

int attach(Kqueue& queue, Knote& knote) { return fd_attach(queue, knote, &WatchedFd::read_); }

// Completed connections waiting for accept(): Linux reports the accept queue's length in TCP_INFO's
// tcpi_unacked for a listening socket. Other listening sockets (Unix domain) only tell "at least one".
int64_t waiting_connections(int fd, uint32_t events) {
  tcp_info info{};
  socklen_t size = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) == 0 && size >= sizeof info.tcpi_unacked)
    return info.tcpi_unacked;
  return (events & EPOLLIN) ? 1 : 0;
}

int64_t readable_bytes(WatchedFd& record) {
  int bytes = 0;
  if (ioctl(record.fd_, FIONREAD, &bytes) == 0) return bytes;
  if (errno == EBADF) record.lost_ = true;  // closed by a raw system call: see compat/README.md
  if (errno == EINVAL && record.kind_ == WatchedFd::Kind::stream) record.kind_ = WatchedFd::Kind::listener;
  return 0;
}

bool evaluate(Kqueue& queue, Knote& knote, uint32_t hint, struct kevent& out) {
  WatchedFd& record = *knote.fd_;
  if (hint == 0) hint = fd_probe(knote, POLLIN);
  if (record.lost_) return false;
  if (record.kind_ == WatchedFd::Kind::listener) {
    out.data = waiting_connections(record.fd_, hint);
    return out.data > 0 || (hint & EPOLLERR);
  }
  if (fd_unconnected_stream(queue, knote, hint)) return false;
  const bool eof = hint & (EPOLLRDHUP | EPOLLHUP);
  const bool error = hint & EPOLLERR;
  if (record.kind_ == WatchedFd::Kind::other) {
    // eventfd, timerfd, another queue...: readable is all epoll tells.
    out.data = 0;
    return (hint & EPOLLIN) || eof;
  }
  out.data = readable_bytes(record);
  if (record.lost_) return false;
  if (eof) out.flags |= EV_EOF;
  if (error && record.kind_ != WatchedFd::Kind::pipe) out.fflags = socket_error(record.fd_);
  const int64_t low_water = (knote.sfflags_ & NOTE_LOWAT) && knote.sdata_ > 0 ? knote.sdata_ : 1;
  if (record.kind_ == WatchedFd::Kind::datagram && (hint & EPOLLIN)) return true;  // empty datagrams count
  return out.data >= low_water || eof || error;
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
