// What EVFILT_READ and EVFILT_WRITE share: both hang a knote on the descriptor's one epoll entry (WatchedFd).
#pragma once

#include <sys/epoll.h>

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

// True when `fd` is a kqueue's descriptor (an epoll descriptor of this layer).
bool is_queue_descriptor(int fd);

// An eventfd's counter (FreeBSD's EVFILT_READ data on an eventfd; EVFILT_WRITE's is what may still be added).
uint64_t eventfd_counter(int fd);

// The socket's pending error for an event with epoll bits `hint`, or 0: read from the kernel on EPOLLERR (which
// clears it there, so the layer keeps it for the program: socket_errors.hpp), else the one kept since.
unsigned int socket_error(int fd, uint32_t hint);

}  // namespace kqcompat
