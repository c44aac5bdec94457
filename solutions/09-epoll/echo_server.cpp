// Lesson 09: one echo server, two kernel interfaces.
//
// This is lesson 02's server: edge-triggered, so each report means "something new happened" and the handler works
// until the socket says EAGAIN. It never names kqueue or epoll: it asks a Poller (poller.hpp), and the build links
// it once with kqueue/poller.cpp and once with epoll/poller.cpp. Read lessons/09-epoll/README.md alongside.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_map>

#include "poller.hpp"
#include "setup.hpp"

// Bytes owed to one client past which the server reads no more from it until it reads (lesson 05, step 5): a
// client that sends and never reads is made to wait by TCP, and the server's memory stays bounded.
constexpr std::size_t kMostPending = 1 << 20;

// What the server remembers about one connection, between the reports that concern it.
struct Client {
  std::uint64_t serial_ = 0;  // this connection's number, registered with its descriptor (see client_for)
  std::string unsent_;        // bytes read from the client and not yet written back to it
  bool writing_ = false;      // is the interest in writing on? Exactly while unsent_ is not empty.
  bool peer_done_ = false;    // the client has finished sending, and we have read all it sent
  bool held_ = false;         // reading stopped at kMostPending, before EAGAIN: input may wait unreported
};

class EchoServer {
 public:
  // Watches the listening socket.
  explicit EchoServer(int listener);

  // The event loop: waits for ready descriptors and hands each to its handler, forever.
  [[noreturn]] void run();

 private:
  void dispatch(const Ready& ready);
  void accept_clients();
  bool turn_away_one();
  Client& add_client(int fd);
  Client* client_for(const Ready& ready);
  void on_readable(int fd, Client& client);
  void flush(int fd, Client& client);
  void close_client(int fd);

  Poller poller_;
  int listener_;
  int spare_;  // a descriptor kept open to be given up at the descriptor limit (turn_away_one)
  std::uint64_t next_serial_ = 1;  // 0 stays the listening socket's
  std::unordered_map<int, Client> clients_;
};

EchoServer::EchoServer(int listener) : listener_(listener), spare_(open("/dev/null", O_RDONLY | O_CLOEXEC)) {
  if (spare_ == -1) kqlab::fail("open /dev/null");
  poller_.add(listener_, 0);
}

void EchoServer::run() {
  std::array<Ready, 256> ready;
  for (;;) {
    const int count = poller_.wait(ready);
    for (int i = 0; i < count; ++i) dispatch(ready[i]);
  }
}

void EchoServer::dispatch(const Ready& ready) {
  if (ready.fd == listener_) {
    accept_clients();
  } else if (Client* client = client_for(ready); client == nullptr) {
    // A stale report (see client_for): nothing to do.
  } else if (ready.error != 0) {
    close_client(ready.fd);  // a reset connection: nothing more can be read from it or delivered to it
  } else if (ready.readable) {
    on_readable(ready.fd, *client);  // reads, and writes back what it read
  } else if (ready.writable) {
    flush(ready.fd, *client);
  }
  // Edge-triggered, input left unread at the limit is not reported again: once the client has read enough of what
  // it is owed, read on here. Each round reads or writes something, and ends at EAGAIN or with the socket full.
  for (Client* held = client_for(ready); held != nullptr && held->held_ && held->unsent_.size() < kMostPending;
       held = client_for(ready)) {
    on_readable(ready.fd, *held);
  }
}

// The listening socket is readable: connections are waiting. Accepts them all and watches each new client; at the
// descriptor limit, turns away those it has no descriptor for.
void EchoServer::accept_clients() {
  // Edge-triggered: one report for however many connections arrived since the last one, and no other until a new
  // one arrives. Every connection left in the queue now would wait for that newcomer: accept until EAGAIN.
  for (;;) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1 && (errno == EMFILE || errno == ENFILE)) {
      // Lesson 05, step 4: no descriptor for it. Returning now would leave the queue full for good.
      if (turn_away_one()) continue;
      return;  // none was waiting (Linux says EMFILE before it looks at the queue): all taken
    }
    if (fd == -1) {
      if (errno == EINTR || errno == ECONNABORTED) continue;  // a client that gave up: take the next
      if (errno != EAGAIN && errno != EWOULDBLOCK) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);
    poller_.add(fd, add_client(fd).serial_);
  }
}

// At the descriptor limit (lesson 05, step 4): gives up the spare descriptor so that accept() can take the first
// connection waiting, closes that connection at once, and takes the spare back. Edge-triggered, the listener is not
// reported again for connections already waiting, so each one must leave the queue now, served or turned away.
// Returns false if none was waiting.
bool EchoServer::turn_away_one() {
  close(spare_);
  const int refused = accept(listener_, nullptr, nullptr);
  const int error = errno;
  if (refused != -1) close(refused);
  spare_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (spare_ == -1) kqlab::fail("open /dev/null");
  return refused != -1 || error == ECONNABORTED || error == EINTR;
}

Client& EchoServer::add_client(int fd) {
  Client& client = clients_[fd];
  client.serial_ = next_serial_++;
  return client;
}

// The connection a report is about, or nullptr if it is stale: reports come in batches, and a handler earlier in
// this batch may have closed the descriptor, and accept() given its number to a new connection. The serial tells
// the two apart.
Client* EchoServer::client_for(const Ready& ready) {
  const auto found = clients_.find(ready.fd);
  if (found == clients_.end() || found->second.serial_ != ready.serial) return nullptr;
  return &found->second;
}

// Something new arrived from the client: bytes, or the end of its stream. Reads it all, then echoes it.
void EchoServer::on_readable(int fd, Client& client) {
  // Edge-triggered: whatever is left unread now is not reported again until more arrives, which may be never.
  // Read until the socket says EAGAIN. The end of the stream is read() returning 0, after the last bytes.
  char buffer[16 * 1024];
  client.held_ = false;
  for (;;) {
    if (client.unsent_.size() >= kMostPending) {
      client.held_ = true;  // the rest waits in the kernel until the client reads (see dispatch)
      break;
    }
    const ssize_t got = read(fd, buffer, sizeof buffer);
    if (got > 0) {
      client.unsent_.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0) {
      client.peer_done_ = true;
      break;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else if (errno != EINTR) {
      close_client(fd);  // ECONNRESET and friends: the client is gone
      return;
    }
  }
  flush(fd, client);
}

// Writes back as much of client.unsent_ as the socket takes now, and keeps the rest for when it is writable again:
// the interest in writing is on exactly while something is left. Closes the client when it is done and all is
// sent, or when writing fails.
void EchoServer::flush(int fd, Client& client) {
  while (!client.unsent_.empty()) {
    const ssize_t sent = write(fd, client.unsent_.data(), client.unsent_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (sent == -1 && errno == EINTR) continue;
    if (sent == -1) {
      close_client(fd);  // EPIPE, ECONNRESET: the client went away
      return;
    }
    client.unsent_.erase(0, static_cast<std::size_t>(sent));
  }
  // Edge-triggered, an interest in writing left on would not spin, but it would still wake the loop whenever the
  // socket's buffer drains a little (on kqueue at every acknowledgement): on only while output waits.
  const bool pending = !client.unsent_.empty();
  if (pending != client.writing_) {
    poller_.want_write(fd, client.serial_, pending);
    client.writing_ = pending;
  }
  if (!pending && client.peer_done_) close_client(fd);
}

// Forgets the client and closes its connection.
void EchoServer::close_client(int fd) {
  poller_.forget(fd);
  clients_.erase(fd);
  close(fd);
}

int main(int argc, char** argv) {
  const std::string summary = std::string("An echo server on ") + Poller::name() + ": every client gets back what "
                              "it sends.";
  const kqlab::Address address = kqlab::parse_arguments(argc, argv, summary.c_str());
  std::signal(SIGPIPE, SIG_IGN);  // a write to a reset connection fails with EPIPE instead of killing the server
  const int listener = kqlab::open_listener(address);
  EchoServer server(listener);
  kqlab::announce_listening(listener);
  server.run();
}
