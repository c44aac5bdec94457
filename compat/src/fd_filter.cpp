#include "fd_filter.hpp"

#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "fd_table.hpp"
#include "file_watch.hpp"
#include "socket_errors.hpp"

namespace kqcompat {
namespace {

bool is_eventfd(int fd) {
  char path[32], target[32];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  const ssize_t length = readlink(path, target, sizeof target);
  return length == 20 && std::memcmp(target, "anon_inode:[eventfd]", 20) == 0;
}

// What the descriptor is decides how `data` is computed; learnt once, when its record is made.
void learn_kind(WatchedFd& record) {
  record.kind_ = WatchedFd::Kind::other;
  if (is_queue_descriptor(record.fd())) {
    record.kind_ = WatchedFd::Kind::queue;
    return;
  }
  struct stat info;
  if (fstat(record.fd(), &info) != 0) return;
  if (S_ISREG(info.st_mode)) {
    record.kind_ = WatchedFd::Kind::file;
    record.watch_ = -1;
    return;
  }
  if (S_ISFIFO(info.st_mode)) {
    record.kind_ = WatchedFd::Kind::pipe;
    record.capacity_ = fcntl(record.fd(), F_GETPIPE_SZ);
    // FreeBSD's pipe_kqfilter accepts the filter of the other direction "but also [doesn't] ever generate an
    // event"; Linux's epoll would report the far end's close to it.
    const int access = fcntl(record.fd(), F_GETFL) & O_ACCMODE;
    record.read_only_ = access == O_RDONLY;
    record.write_only_ = access == O_WRONLY;
    return;
  }
  if (!S_ISSOCK(info.st_mode)) {
    if (is_eventfd(record.fd())) record.kind_ = WatchedFd::Kind::eventfd;
    return;
  }
  int type = 0, listening = 0;
  socklen_t size = sizeof type;
  getsockopt(record.fd(), SOL_SOCKET, SO_TYPE, &type, &size);
  size = sizeof listening;
  getsockopt(record.fd(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &size);
  if (listening)
    record.kind_ = WatchedFd::Kind::listener;
  else
    record.kind_ = type == SOCK_DGRAM ? WatchedFd::Kind::datagram : WatchedFd::Kind::stream;
}

// FreeBSD refuses EVFILT_WRITE on a pipe whose reader is gone (EPIPE, pipe_kqfilter). A FIFO is not refused: a
// new reader may open it. Linux reports a pipe with no reader as POLLERR; its link names it "pipe:[inode]".
bool pipe_reader_gone(const WatchedFd& record) {
  pollfd probe{record.fd(), POLLOUT, 0};
  if (poll(&probe, 1, 0) != 1 || !(probe.revents & POLLERR)) return false;
  char path[32], target[8];
  snprintf(path, sizeof path, "/proc/self/fd/%d", record.fd());
  return readlink(path, target, sizeof target) >= 5 && std::memcmp(target, "pipe:", 5) == 0;
}

}  // namespace

// An eventfd's counter, which Linux shows only in /proc/self/fdinfo ("eventfd-count: <hex>"); 0 if unreadable.
uint64_t eventfd_counter(int fd) {
  char path[40], text[512];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  const int info = open(path, O_RDONLY | O_CLOEXEC);
  if (info < 0) return 0;
  const ssize_t length = read(info, text, sizeof text - 1);
  ::close(info);
  if (length <= 0) return 0;
  text[length] = '\0';
  const char* field = std::strstr(text, "eventfd-count:");
  return field ? std::strtoull(field + 14, nullptr, 16) : 0;
}

int fd_attach(Kqueue& queue, Knote& knote) {
  WatchedFd& record = record_of(knote);
  if (record.kind_ == WatchedFd::Kind::unknown) learn_kind(record);
  if (knote.filter_ == EVFILT_WRITE && record.kind_ == WatchedFd::Kind::pipe && !record.inert(EVFILT_WRITE) &&
      pipe_reader_gone(record))
    return EPIPE;
  record.set_hung(knote.filter_, true);
  const bool file = record.kind_ == WatchedFd::Kind::file;
  bool touched = false;
  if (const int error = file ? file_attach(queue, knote) : epoll_sync(queue, record, &touched)) {
    record.set_hung(knote.filter_, false);
    return error;
  }
  // BSD evaluates a new knote at once (kqueue_register calls f_event), and so does epoll whenever an entry is
  // added or changed. But an edge-triggered entry that epoll already holds unchanged, left by a one-shot or
  // dispatch delivery until it is trimmed, reports nothing until a new edge: look at the knote at the next scan,
  // or a one-shot re-added while its condition holds would never fire.
  if (!file && !touched && (record.registered_ & EPOLLET) && !knote.disabled_) queue.queue_pending(knote);
  return 0;
}

void fd_detach(Kqueue& queue, Knote& knote) {
  WatchedFd& record = record_of(knote);
  record.set_hung(knote.filter_, false);
  if (record.kind_ == WatchedFd::Kind::file) file_detach(queue, record);
}

bool fd_enable_changed(Kqueue& queue, Knote& knote) {
  bool touched = false;
  epoll_sync(queue, record_of(knote), &touched);
  return touched;  // a new or modified epoll entry is checked for readiness by epoll itself
}

int fd_modify(Kqueue&, Knote& knote, const struct kevent& change) {
  // FreeBSD replaces a descriptor knote's parameters (NOTE_LOWAT and its threshold) on every change.
  knote.sfflags_ = change.fflags;
  knote.sdata_ = change.data;
  return 0;
}

uint32_t fd_probe(Knote& knote, short events) {
  pollfd probe{record_of(knote).fd(), static_cast<short>(events | POLLRDHUP), 0};
  if (poll(&probe, 1, 0) != 1) return 0;
  if (probe.revents & POLLNVAL) {
    record_of(knote).lost_ = true;
    return 0;
  }
  return static_cast<uint32_t>(probe.revents);
}

bool fd_unconnected_stream_look(Kqueue& queue, Knote& knote, uint32_t hint) {
  WatchedFd& record = record_of(knote);
  bool unconnected = false;
  if (record.kind_ == WatchedFd::Kind::stream && (hint & EPOLLHUP) && !(hint & (EPOLLERR | EPOLLRDHUP))) {
    // A connection that ended has its read side shut (POLLRDHUP); one that never began does not. epoll only
    // reports EPOLLRDHUP when the read knote asked for it, so look afresh when it did not.
    unconnected = (record.registered_ & EPOLLRDHUP) || !(fd_probe(knote, 0) & POLLRDHUP);
  }
  if (unconnected != record.never_connected_) {
    record.never_connected_ = unconnected;
    epoll_sync(queue, record);
  }
  return unconnected;
}

TcpCounts tcp_counts(Kqueue& queue, const WatchedFd& record, bool reported) {
  if (reported && queue.counted_ == &record) return {queue.counted_acked_, queue.counted_received_};
  tcp_info info{};
  socklen_t size = sizeof info;
  constexpr socklen_t kNeeded = offsetof(tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received;
  TcpCounts counts{WriteKnote::kUncountable, WriteKnote::kUncountable};
  if (getsockopt(record.fd(), IPPROTO_TCP, TCP_INFO, &info, &size) == 0 && size >= kNeeded)
    counts = {info.tcpi_bytes_acked, info.tcpi_bytes_received};
  if (reported) {
    queue.counted_ = &record;
    queue.counted_acked_ = counts.acked;
    queue.counted_received_ = counts.received;
  }
  return counts;
}

bool is_queue_descriptor(int fd) {
  return queue_of(fd) != nullptr;
}

unsigned int socket_error(int fd, uint32_t hint) {
  // Only EPOLLERR says the kernel has a new error (reading it costs a system call); after it, FreeBSD goes on
  // reporting so_error until the program takes it, which the kept copy stands in for.
  return (hint & EPOLLERR) ? socket_error_for_event(fd) : static_cast<unsigned int>(kept_socket_error(fd));
}

}  // namespace kqcompat
