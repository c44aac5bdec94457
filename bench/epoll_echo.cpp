// The benchmark's baseline: lesson 01's echo server (solutions/01-echo/echo_server.cpp) written on raw epoll.
//
// Same structure, function for function, so that the two differ only where kqueue and epoll differ:
//   - one thread, one epoll set, up to 64 events per wait, level-triggered everywhere;
//   - one read per readable event, echoed at once; EPOLLOUT asked for only while output is pending;
//   - a serial number per connection in the event's data, to recognise stale events in a batch;
//   - the client's end of input (read() returns 0) closes it once everything is echoed.
// What kqueue gives that epoll does not, and what this server therefore does differently:
//   - no `data` field: it reads up to 64 KiB, where the lesson reads exactly the `data` bytes waiting (the
//     layer's FIONREAD). Same number of reads.
//   - no count of waiting connections: it accepts until EAGAIN, one accept() more per burst of connections.
//   - read and write interest share one registration (EPOLL_CTL_MOD), where kqueue has two filters.
// It uses lessons/common's setup (arguments, listening socket, `listening on` line) but not the kqueue layer.
//
// With --fionread it asks the kernel how many bytes are waiting (ioctl FIONREAD) before each read and reads
// exactly those, as the lesson reads `data` bytes: the one query per event the layer makes to fill `data`. That
// variant differs from lesson 01 on the layer by the layer's own code only, which separates the two costs.
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <string_view>
#include <unordered_map>

#include "setup.hpp"

struct Client {
  std::uint32_t serial_ = 0;  // this connection's number, carried in its events' data (see client_for)
  std::string unsent_;        // bytes read from the client and not yet written back
  bool writing_ = false;      // is EPOLLOUT asked for? Exactly while unsent_ is not empty.
  bool peer_done_ = false;    // the client has finished sending and we have read all it sent
};

// epoll's data: the descriptor in the low half, the connection's serial number in the high half.
static std::uint64_t data_of(int fd, std::uint32_t serial) {
  return (std::uint64_t{serial} << 32) | static_cast<std::uint32_t>(fd);
}

class EchoServer {
 public:
  EchoServer(int listener, bool query_waiting);
  [[noreturn]] void run();

 private:
  void watch(int op, int fd, std::uint32_t events, std::uint32_t serial);
  void dispatch(const epoll_event& event);
  void accept_clients();
  Client& add_client(int fd);
  Client* client_for(const epoll_event& event);
  void on_readable(int fd, Client& client);
  void flush(int fd, Client& client);
  void close_client(int fd);

  int epoll_fd_;
  int listener_;
  bool query_waiting_;             // --fionread
  std::uint32_t next_serial_ = 1;  // 0 stays the listening socket's
  std::unordered_map<int, Client> clients_;
};

EchoServer::EchoServer(int listener, bool query_waiting)
    : epoll_fd_(epoll_create1(0)), listener_(listener), query_waiting_(query_waiting) {
  if (epoll_fd_ == -1) kqlab::fail("epoll_create1");
  watch(EPOLL_CTL_ADD, listener_, EPOLLIN, 0);
}

void EchoServer::watch(int op, int fd, std::uint32_t events, std::uint32_t serial) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = data_of(fd, serial);
  if (epoll_ctl(epoll_fd_, op, fd, &event) == -1) kqlab::fail("epoll_ctl");
}

void EchoServer::run() {
  epoll_event events[64];
  for (;;) {
    const int ready = epoll_wait(epoll_fd_, events, static_cast<int>(std::size(events)), -1);
    if (ready == -1) {
      if (errno == EINTR) continue;
      kqlab::fail("epoll_wait");
    }
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
  }
}

void EchoServer::dispatch(const epoll_event& event) {
  const int fd = static_cast<int>(event.data.u64 & 0xffffffff);
  if (fd == listener_) {
    accept_clients();
  } else if (Client* client = client_for(event); client == nullptr) {
    // A stale event: an earlier handler in this batch closed the connection.
  } else {
    // Readable (or hung up, or in error: read() tells which) first, then writable, as the lesson handles its
    // EVFILT_READ and EVFILT_WRITE events for one descriptor.
    if (event.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(fd, *client);
    if ((event.events & EPOLLOUT) && (client = client_for(event)) != nullptr) flush(fd, *client);
  }
}

void EchoServer::accept_clients() {
  for (;;) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);
    watch(EPOLL_CTL_ADD, fd, EPOLLIN, add_client(fd).serial_);
  }
}

Client& EchoServer::add_client(int fd) {
  Client& client = clients_[fd];
  client.serial_ = next_serial_++;
  return client;
}

Client* EchoServer::client_for(const epoll_event& event) {
  const auto found = clients_.find(static_cast<int>(event.data.u64 & 0xffffffff));
  if (found == clients_.end() || found->second.serial_ != static_cast<std::uint32_t>(event.data.u64 >> 32))
    return nullptr;
  return &found->second;
}

void EchoServer::on_readable(int fd, Client& client) {
  char buffer[64 * 1024];
  std::size_t want = sizeof buffer;
  if (query_waiting_) {
    int waiting = 0;
    if (ioctl(fd, FIONREAD, &waiting) == 0 && waiting > 0) want = std::min(static_cast<std::size_t>(waiting), want);
  }
  const ssize_t got = read(fd, buffer, want);
  if (got > 0) {
    client.unsent_.append(buffer, static_cast<std::size_t>(got));
    flush(fd, client);
  } else if (got == 0) {
    client.peer_done_ = true;
    if (client.unsent_.empty()) {
      close_client(fd);
    } else {
      watch(EPOLL_CTL_MOD, fd, EPOLLOUT, client.serial_);  // stop reading: the level-triggered EOF would spin
    }
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    close_client(fd);
  }
}

void EchoServer::flush(int fd, Client& client) {
  while (!client.unsent_.empty()) {
    const ssize_t sent = write(fd, client.unsent_.data(), client.unsent_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (sent == -1) {
      close_client(fd);
      return;
    }
    client.unsent_.erase(0, static_cast<std::size_t>(sent));
  }
  const bool pending = !client.unsent_.empty();
  if (pending != client.writing_) {
    std::uint32_t events = client.peer_done_ ? 0u : std::uint32_t{EPOLLIN};
    if (pending) events |= EPOLLOUT;
    watch(EPOLL_CTL_MOD, fd, events, client.serial_);
    client.writing_ = pending;
  }
  if (!pending && client.peer_done_) close_client(fd);
}

void EchoServer::close_client(int fd) {
  clients_.erase(fd);
  close(fd);  // also leaves the epoll set (no other descriptor refers to the socket)
}

int main(int argc, char** argv) {
  // --fionread is this program's own option; the rest are every lesson server's (setup.hpp).
  const auto last =
      std::remove_if(argv + 1, argv + argc, [](const char* a) { return std::string_view(a) == "--fionread"; });
  const bool query_waiting = last != argv + argc;
  const kqlab::Address address = kqlab::parse_arguments(
      static_cast<int>(last - argv), argv,
      "An echo server on raw epoll: the benchmark's baseline for lesson 01 (--fionread: query the bytes waiting "
      "before each read, as the kqueue layer does for `data`).");
  std::signal(SIGPIPE, SIG_IGN);
  const int listener = kqlab::open_listener(address);
  EchoServer server(listener, query_waiting);
  kqlab::announce_listening(listener);
  server.run();
}
