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
  // TODO(1): register the change, and check the kernel's answer. Until this is done nothing is registered: the
  // server starts, prints its address, and never hears of a client. (README, step 1; stuck? ./kqlab hint 1)
  // Each gap's static_casts only keep the compiler quiet about parameters it does not use yet: delete them.
  static_cast<void>(fd), static_cast<void>(filter), static_cast<void>(flags), static_cast<void>(serial);
}

// [snippet: event-loop]
// Wait mode: no changes in (every change went through watch() and had its receipt read), up to 64 events out,
// and no timeout, so an idle server sleeps in here and uses no CPU at all.
void EchoServer::run() {
  struct kevent events[64];
  for (;;) {
    const int ready = kevent(kq_, nullptr, 0, events, static_cast<int>(std::size(events)), nullptr);
    if (ready == -1) {
      // A signal the program catches interrupted the wait: just wait again. (Stopping and continuing the process
      // never does on BSD; on Linux, kqlab's layer hides the EINTR that epoll_wait() gets then.)
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
  // TODO(2): accept the waiting connections, and register each new client for reading. (README, step 2)
  static_cast<void>(event);
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
  // TODO(3): read what arrived and echo it; notice when the client is done. Mind EV_EOF: it can come while data
  // is still waiting to be read. (README, step 3)
  static_cast<void>(fd), static_cast<void>(client), static_cast<void>(event);
}

// Writes back as much of client.unsent_ as the socket takes now and keeps the rest for the next EVFILT_WRITE
// event, which is registered exactly while something is left. Closes the client when it is done and all is sent,
// or when writing fails.
void EchoServer::flush(int fd, Client& client) {
  // TODO(4): write back what the socket takes now and keep the rest for later; have EVFILT_WRITE registered
  // exactly while something is left. (README, step 4)
  static_cast<void>(fd), static_cast<void>(client);
}

// Forgets the client and closes its connection.
void EchoServer::close_client(int fd) {
  // TODO(5): forget the client and close its connection. Does the queue need telling first? (README, step 5)
  static_cast<void>(fd);
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
