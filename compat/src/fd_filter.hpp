// What EVFILT_READ and EVFILT_WRITE share: both hang a knote on the descriptor's one epoll entry (WatchedFd).
#pragma once

#include <sys/epoll.h>
#include <sys/ioctl.h>

#include <cstdint>

#include "kqueue.hpp"

namespace kqcompat {

// Hangs `knote`, made in its descriptor's record by the core (Kqueue::make_fd_knote), and brings epoll's entry
// up to date. EBADF for a closed number; EPERM for descriptors epoll cannot watch. On failure the knote is left
// unhung and epoll's entry as it was; the core frees the knote.
int fd_attach(Kqueue& queue, Knote& knote);
void fd_detach(Kqueue& queue, Knote& knote);
bool fd_enable_changed(Kqueue& queue, Knote& knote);
// A regular file has no level source: its knotes are re-queued after delivery (FileWatch only tells changes).
// Inline: the core asks after every delivery of a level knote.
inline bool fd_source_is_level(const Knote& knote) {
  const WatchedFd& record = record_of(knote);
  return record.kind_ != WatchedFd::Kind::file && !(record.registered_ & EPOLLET);
}
int fd_modify(Kqueue& queue, Knote& knote, const struct kevent& change);

// A fresh look at the descriptor when no epoll notification is at hand: poll() with a zero timeout, its bits
// given back as epoll bits (they have the same values).
uint32_t fd_probe(Knote& knote, short events);

// True for a stream socket that has never connected, which epoll reports as hung up and BSD as neither
// readable nor writable. While that lasts the epoll entry is edge-triggered, else the constant EPOLLHUP spins.
bool fd_unconnected_stream_look(Kqueue& queue, Knote& knote, uint32_t hint);
inline bool fd_unconnected_stream(Kqueue& queue, Knote& knote, uint32_t hint) {
  // The common case, inline: no hang-up reported, and none believed before.
  if (!(hint & EPOLLHUP) && !record_of(knote).never_connected_) return false;
  return fd_unconnected_stream_look(queue, knote, hint);
}

// EVFILT_READ's evaluate (filter_read.cpp), whose common case the core calls inline: the knote of a connected stream
// socket that epoll reports readable, with no hang-up, no error and no NOTE_LOWAT, is readable with `data` bytes,
// the count asked for with the rest of its epoll batch or else with FIONREAD. Every other case goes out of line,
// through all its checks (which conclude the same for this one).
bool read_evaluate_generally(Kqueue& queue, Knote& knote, uint32_t hint, struct kevent& out);
int64_t read_bytes_asked_lost(WatchedFd& record);  // a failed FIONREAD: what it tells, and 0

inline int64_t readable_bytes(Kqueue& queue, WatchedFd& record) {
  if (queue.readable_known_ >= 0) return queue.readable_known_;  // asked for the whole batch already
  int bytes = 0;
  if (ioctl(record.fd(), FIONREAD, &bytes) == 0) [[likely]] return bytes;
  return read_bytes_asked_lost(record);
}

inline bool plainly_readable_stream(const WatchedFd& record, const Knote& knote, uint32_t hint) {
  return record.kind_ == WatchedFd::Kind::stream && (hint & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) == EPOLLIN &&
         !record.never_connected_ && !(knote.sfflags_ & NOTE_LOWAT);
}

inline bool read_evaluate(Kqueue& queue, Knote& knote, uint32_t hint, struct kevent& out) {
  WatchedFd& record = record_of_read_knote(knote);
  // An EV_CLEAR read knote beside a write knote also asks whether data arrived (filter_read.cpp, data_arrived).
  if (!plainly_readable_stream(record, knote, hint) || ((knote.flags_ & EV_CLEAR) && record.write_hung_)) [[unlikely]]
    return read_evaluate_generally(queue, knote, hint, out);
  out.data = readable_bytes(queue, record);
  return !record.lost_ && out.data > 0;
}

// What a TCP connection has counted so far (TCP_INFO, Linux 4.2): the bytes its peer acknowledged and the bytes
// it received; each WriteKnote::kUncountable where the socket is not TCP. They tell apart the wake-ups of the one
// epoll entry that an EV_CLEAR read knote and an EV_CLEAR write knote share (compat/README.md, deviation 28):
// epoll reports each wake-up with all of the socket's current bits, FreeBSD activates the read knotes for data
// that arrived (sorwakeup) and the write knotes for room made (sowwakeup). Within an epoll report (`reported`),
// asked once and shared by both knotes; otherwise asked afresh.
struct TcpCounts {
  uint64_t acked;
  uint64_t received;
};
TcpCounts tcp_counts(Kqueue& queue, const WatchedFd& record, bool reported);

// True when `fd` is a kqueue's descriptor (an epoll descriptor of this layer).
bool is_queue_descriptor(int fd);

// An eventfd's counter (FreeBSD's EVFILT_READ data on an eventfd; EVFILT_WRITE's is what may still be added).
uint64_t eventfd_counter(int fd);

// The socket's pending error for an event with epoll bits `hint`, or 0: read from the kernel on EPOLLERR (which
// clears it there, so the layer keeps it for the program: socket_errors.hpp), else the one kept since.
unsigned int socket_error(int fd, uint32_t hint);

}  // namespace kqcompat
