// Lesson 01: an echo server on kqueue.
//
// One thread serves every client. It asks the kernel, through one kqueue, "which of my sockets can I use now
// without blocking?", does exactly that work, and asks again. Read lessons/01-echo/README.md alongside: its
// numbered steps are the TODO(N) gaps of the exercise. The `// [snippet: NAME]` ... `// [end]` lines mark the code
// that README.md quotes (./kqlab docs --refresh copies it there): leave them where they are.
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <unordered_map>

#include "kevent_format.hpp"
#include "setup.hpp"

// [snippet: client-state]
// What the server remembers about one connection, between the events that concern it.
struct Client {
  std::uint64_t serial_ = 0;  // this connection's number, carried in the udata of its events (see client_for)
  std::string unsent_;        // bytes read from the client and not yet written back to it
  bool writing_ = false;      // is EVFILT_WRITE registered for it? Exactly while unsent_ is not empty.
  bool peer_done_ = false;    // the client has finished sending (EV_EOF) and we have read all it sent
};
// [end]

// udata is a pointer-sized value the kernel keeps with a registration and hands back, untouched, in each of its
// events. We keep a serial number there, not a pointer to the Client: a pointer can outlive what it points to.
static void* udata_of(std::uint64_t serial) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(serial)); }

class EchoServer {
 public:
  // Creates the queue and registers the listening socket with it.
  explicit EchoServer(int listener);

  // The event loop: waits for events and hands each to its handler, forever.
  [[noreturn]] void run();

 private:
  void watch(int fd, short filter, unsigned short flags, std::uint64_t serial);
  void dispatch(const struct kevent& event);
  void accept_clients(const struct kevent& event);
  Client& add_client(int fd);
  Client* client_for(const struct kevent& event);
  void on_readable(int fd, Client& client, const struct kevent& event);
  void flush(int fd, Client& client);
  void close_client(int fd);

  int kq_;
  int listener_;
  std::uint64_t next_serial_ = 1;  // 0 stays the listening socket's
  std::unordered_map<int, Client> clients_;
};

EchoServer::EchoServer(int listener) : kq_(kqueue()), listener_(listener) {
  if (kq_ == -1) kqlab::fail("kqueue");
  // Level-triggered (no EV_CLEAR): the event comes back on every wait while connections are waiting.
  watch(listener_, EVFILT_READ, EV_ADD, 0);
}

// Register mode: applies one change (`flags` for `filter` on `fd`, with `serial` as udata) to the queue, and stops
// the server with a message naming the change if the kernel refuses it.
void EchoServer::watch(int fd, short filter, unsigned short flags, std::uint64_t serial) {
  // EV_RECEIPT makes kevent() answer the change with an entry in the eventlist (flags & EV_ERROR set, data = 0 or
  // the errno) and return at once, without waiting and without taking pending events (kqueue(2), EV_RECEIPT).
  struct kevent change;
  EV_SET(&change, fd, filter, flags | EV_RECEIPT, 0, 0, udata_of(serial));
  struct kevent receipt;
  if (kevent(kq_, &change, 1, &receipt, 1, nullptr) == -1) kqlab::fail("kevent");
  // Test the bit, never `flags == EV_ERROR`: macOS returns the change's own flags with EV_ERROR added.
  if ((receipt.flags & EV_ERROR) && receipt.data != 0) {
    kqlab::fail("kevent(" + kqlab::describe(change) + ")", static_cast<int>(receipt.data));
  }
}

// [snippet: event-loop]
// Wait mode: no changes in (every change went through watch() and had its receipt read), up to 64 events out,
// and no timeout, so an idle server sleeps in here and uses no CPU at all.
void EchoServer::run() {
  struct kevent events[64];
  for (;;) {
    const int ready = kevent(kq_, nullptr, 0, events, static_cast<int>(std::size(events)), nullptr);
    if (ready == -1) {
      // A signal interrupted the wait (on Linux even SIGSTOP and SIGCONT do, see signal(7)): just wait again.
      if (errno == EINTR) continue;
      kqlab::fail("kevent");
    }
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
  }
}
// [end]

// [snippet: dispatch]
void EchoServer::dispatch(const struct kevent& event) {
  const int fd = static_cast<int>(event.ident);
  if (fd == listener_) {
    accept_clients(event);
  } else if (Client* client = client_for(event); client == nullptr) {
    // A stale event (see client_for): nothing to do.
  } else if (event.filter == EVFILT_READ) {
    on_readable(fd, *client, event);
  } else if (event.filter == EVFILT_WRITE) {
    flush(fd, *client);
  }
}
// [end]

// The listening socket is readable: event.data connections are waiting. Accepts them, and registers each new
// client for reading.
void EchoServer::accept_clients(const struct kevent& event) {
  // Take all that are waiting now: each one left behind costs another trip through kevent().
  for (std::int64_t waiting = event.data; waiting > 0; --waiting) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1) {
      // EAGAIN: a client gave up between the event and now. Anything else (EMFILE...) is worth a line on
      // stderr. Returning at EMFILE is no recovery, though: the connection stays queued, the level-triggered event
      // comes straight back, and the loop spins for as long as the limit lasts. Lesson 05 turns it away instead.
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);  // Linux does not inherit O_NONBLOCK from the listener, BSD does: say it anyway
    watch(fd, EVFILT_READ, EV_ADD, add_client(fd).serial_);
  }
}

Client& EchoServer::add_client(int fd) {
  Client& client = clients_[fd];
  client.serial_ = next_serial_++;
  return client;
}

// [snippet: client-for]
// The connection an event is about, or nullptr if the event is stale. Events come in batches, and a batch is a
// snapshot: a handler earlier in this batch may have closed the event's descriptor, and accept() may even have
// handed the same number to a new connection. Its serial number, in udata, tells the two apart.
Client* EchoServer::client_for(const struct kevent& event) {
  const auto found = clients_.find(static_cast<int>(event.ident));
  if (found == clients_.end() || udata_of(found->second.serial_) != event.udata) return nullptr;
  return &found->second;
}
// [end]

// EVFILT_READ on a client: event.data bytes can be read without blocking, and EV_EOF in event.flags says the
// client has shut down its sending side. Echoes what arrived; closes the client once it is done and all is sent.
void EchoServer::on_readable(int fd, Client& client, const struct kevent& event) {
  // EV_EOF can come with data still waiting (the client sent its last bytes, then shut down): read first. Only
  // EV_EOF with nothing left to read means the client is done. One read per event is enough: while data is
  // waiting, this level-triggered event comes back on the next wait.
  if (event.data > 0) {
    char buffer[64 * 1024];
    const auto want = static_cast<std::size_t>(std::min<std::int64_t>(event.data, sizeof buffer));
    const ssize_t got = read(fd, buffer, want);
    if (got > 0) {
      client.unsent_.append(buffer, static_cast<std::size_t>(got));
      flush(fd, client);
    } else if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
      close_client(fd);  // ECONNRESET and friends: the client is gone
    }
  } else if (event.flags & EV_EOF) {
    client.peer_done_ = true;
    if (client.unsent_.empty()) {
      close_client(fd);
    } else {
      // Still echoing. Stop reading, or this level-triggered EOF would fire on every wait; flush() closes
      // when the last byte is out.
      watch(fd, EVFILT_READ, EV_DELETE, client.serial_);
    }
  }
}

// Writes back as much of client.unsent_ as the socket takes now and keeps the rest for the next EVFILT_WRITE
// event, which is registered exactly while something is left. Closes the client when it is done and all is sent,
// or when writing fails.
void EchoServer::flush(int fd, Client& client) {
  // When the client reads slowly, its receive buffer and our send buffer fill up, and write() takes part of what
  // we offer, or nothing (EAGAIN). EVFILT_WRITE fires when there is room again.
  while (!client.unsent_.empty()) {
    const ssize_t sent = write(fd, client.unsent_.data(), client.unsent_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (sent == -1) {
      close_client(fd);  // EPIPE, ECONNRESET: the client went away
      return;
    }
    client.unsent_.erase(0, static_cast<std::size_t>(sent));
  }
  // A socket with room in its buffer is writable, so a level-triggered EVFILT_WRITE left registered with nothing
  // to write would wake the loop on every wait: 100% CPU for nothing. Register it only while output is pending.
  const bool pending = !client.unsent_.empty();
  if (pending != client.writing_) {
    watch(fd, EVFILT_WRITE, pending ? EV_ADD : EV_DELETE, client.serial_);
    client.writing_ = pending;
  }
  if (!pending && client.peer_done_) close_client(fd);
}

// Forgets the client and closes its connection.
void EchoServer::close_client(int fd) {
  // close() also removes the descriptor's events from the queue, so no EV_DELETE is needed first (kqueue(2):
  // "calling close() on a file descriptor will remove any kevents that reference the descriptor"). Events of the
  // current batch were already handed out: client_for() recognises them.
  clients_.erase(fd);
  close(fd);
}

int main(int argc, char** argv) {
  const kqlab::Address address =
      kqlab::parse_arguments(argc, argv, "An echo server on kqueue: every client gets back what it sends.");
  // Writing to a connection the client has reset raises SIGPIPE, and its default action kills the whole server.
  // Ignored, the write fails with EPIPE instead and we close just that client. (SO_NOSIGPIPE on BSD and
  // MSG_NOSIGNAL on Linux do the same per socket or per call; ignoring the signal works everywhere.)
  std::signal(SIGPIPE, SIG_IGN);
  const int listener = kqlab::open_listener(address);
  EchoServer server(listener);
  kqlab::announce_listening(listener);
  server.run();
}
