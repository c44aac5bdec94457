// Lesson 02: registration. The echo server of lesson 01, registered the way busy servers register: every
// registration edge-triggered (EV_CLEAR), the changes of a loop turn collected and handed to the kevent() call that
// waits, and the one registration that must work before the server announces itself checked with EV_RECEIPT.
// Read lessons/02-registration/README.md alongside: its numbered steps are the TODO(N) gaps of the exercise. The
// `// [snippet: NAME]` ... `// [end]` lines mark the code README.md quotes: leave them where they are.
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "kevent_format.hpp"
#include "setup.hpp"

// What the server remembers about one connection, between the events that concern it.
struct Client {
  std::uint64_t serial_ = 0;  // this connection's number, carried in the udata of its events (see client_for)
  std::string unsent_;        // bytes read from the client and not yet written back to it
  bool peer_done_ = false;    // the client has finished sending (read() returned 0)
};

// udata carries a serial number, as in lesson 01: events of a batch can outlive the connection they are about.
static void* udata_of(std::uint64_t serial) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(serial)); }

class EchoServer {
 public:
  // Creates the queue and registers the listening socket with it, checked: it returns only once the kernel has
  // accepted the registration.
  explicit EchoServer(int listener);

  // The event loop: one kevent() call per turn, which hands over the turn's changes and waits; forever.
  [[noreturn]] void run();

 private:
  void register_now(std::vector<struct kevent> changes);
  void change(int fd, short filter, unsigned short flags, std::uint64_t serial);
  int wait(std::vector<struct kevent>& events);
  void dispatch(const struct kevent& event);
  void accept_clients();
  Client& add_client(int fd);
  Client* client_for(const struct kevent& event);
  void on_readable(int fd, Client& client);
  void flush(int fd, Client& client);
  void close_client(int fd);

  int kq_;
  int listener_;
  std::uint64_t next_serial_ = 1;  // 0 stays the listening socket's
  std::unordered_map<int, Client> clients_;
  std::vector<struct kevent> changes_;  // made during this loop turn, handed to the kernel by the next wait()
};

EchoServer::EchoServer(int listener) : kq_(kqueue()), listener_(listener) {
  if (kq_ == -1) kqlab::fail("kqueue");
  // Edge-triggered: one event when connections arrive, none again until more arrive. accept_clients() takes them
  // all. Registered now, not in the first wait: main() announces the server only once it is really listening.
  struct kevent listening;
  EV_SET(&listening, listener_, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, udata_of(0));
  register_now({listening});
}

// Applies `changes` at once and stops the server, naming the change, if the kernel refuses any of them.
void EchoServer::register_now(std::vector<struct kevent> changes) {
  // TODO(1): apply all the changes in one kevent() call that does not wait, and check the kernel's answer to each
  // one. Until this is done nothing is registered: the server starts, prints its address, and never hears of a
  // client. (README, step 1; stuck? ./kqlab hint 2)
  // Each gap's static_casts only keep the compiler quiet about what it does not use yet: delete them.
  static_cast<void>(changes);
}

// [snippet: change]
// Queues one change for the next wait(). EV_SET's fields in order: ident (the descriptor), filter (which kind of
// event), flags (what to do, and how the event behaves), fflags and data (filter-specific parameters: none for
// sockets), udata (handed back in every event of this registration).
void EchoServer::change(int fd, short filter, unsigned short flags, std::uint64_t serial) {
  struct kevent& change = changes_.emplace_back();
  EV_SET(&change, fd, filter, flags, 0, 0, udata_of(serial));
}
// [end]

// [snippet: event-loop]
// Each turn: one kevent() call (in wait()), then each event to its handler. The handlers' changes go to the next
// turn's call.
void EchoServer::run() {
  std::vector<struct kevent> events(64);
  for (;;) {
    const int ready = wait(events);
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
  }
}
// [end]

// One kevent() call: hands the kernel the changes made since the last call and waits for events. Returns how many
// it wrote into `events` (0 when a signal interrupted the wait).
int EchoServer::wait(std::vector<struct kevent>& events) {
  // TODO(2): hand the kernel the changes collected in changes_ in this same call, with room for what it may say
  // about them, and never hand the same change over twice. As it is, this call only waits: the changes never
  // reach the kernel. (README, step 2)
  const int ready = kevent(kq_, nullptr, 0, events.data(), static_cast<int>(events.size()), nullptr);
  if (ready == -1) {
    // A signal the program catches ended the wait: wait again. (Stopping and continuing the process, SIGSTOP and
    // SIGCONT, never interrupts kevent() on BSD; kqlab's layer hides it on Linux too.)
    if (errno == EINTR) return 0;
    kqlab::fail("kevent");
  }
  return ready;
}

// [snippet: dispatch]
void EchoServer::dispatch(const struct kevent& event) {
  const int fd = static_cast<int>(event.ident);
  if (event.flags & EV_ERROR) {
    // A change handed to the wait failed. The kernel reports it here, in the batch, with the errno in data; the
    // call then returns at once, without waiting. This server makes no change that may fail: a failure is a bug.
    kqlab::fail("kevent(" + kqlab::describe(event) + ")", static_cast<int>(event.data));
  }
  if (fd == listener_) {
    accept_clients();
  } else if (Client* client = client_for(event); client == nullptr) {
    // A stale event: its connection was closed earlier in this batch (see client_for).
  } else if (event.filter == EVFILT_READ) {
    on_readable(fd, *client);
  } else if (event.filter == EVFILT_WRITE) {
    flush(fd, *client);
  }
}
// [end]

// The listening socket had connections arrive. Accepts every one waiting, and registers each new client.
void EchoServer::accept_clients() {
  // TODO(3): accept the connections that are waiting, and have each new client registered for reading and for
  // writing, edge-triggered, in the next wait. (README, step 3)
}

Client& EchoServer::add_client(int fd) {
  Client& client = clients_[fd];
  client.serial_ = next_serial_++;
  return client;
}

// The connection an event is about, or nullptr if the event is stale: a handler earlier in this batch closed its
// descriptor, and accept() may even have handed the same number to a new connection. The serial in udata tells.
Client* EchoServer::client_for(const struct kevent& event) {
  const auto found = clients_.find(static_cast<int>(event.ident));
  if (found == clients_.end() || udata_of(found->second.serial_) != event.udata) return nullptr;
  return &found->second;
}

// Bytes arrived (and maybe the end of the stream). Reads everything there is, and echoes it.
void EchoServer::on_readable(int fd, Client& client) {
  // TODO(4): read what arrived, notice when the client has finished sending, and echo it. (README, step 4)
  static_cast<void>(fd), static_cast<void>(client);
}

// [snippet: flush]
// Writes back as much of client.unsent_ as the socket takes now. What it does not take waits for the next
// EVFILT_WRITE event, which comes when room appears. Closes the client when it is done and all is sent, or when
// writing fails.
void EchoServer::flush(int fd, Client& client) {
  while (!client.unsent_.empty()) {
    const ssize_t sent = write(fd, client.unsent_.data(), client.unsent_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // full: EVFILT_WRITE fires when not
    if (sent == -1 && errno == EINTR) continue;
    if (sent == -1) {
      close_client(fd);  // EPIPE, ECONNRESET: the client went away
      return;
    }
    client.unsent_.erase(0, static_cast<std::size_t>(sent));
  }
  if (client.peer_done_) close_client(fd);
}
// [end]

// Forgets the client and closes its connection. close() removes its registrations from the queue; events of the
// current batch were already handed out, and client_for() recognises them.
void EchoServer::close_client(int fd) {
  clients_.erase(fd);
  close(fd);
}

int main(int argc, char** argv) {
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "An echo server on kqueue, edge-triggered, registering in the call that waits.");
  std::signal(SIGPIPE, SIG_IGN);  // a write to a reset connection fails with EPIPE instead of killing us
  const int listener = kqlab::open_listener(address);
  EchoServer server(listener);
  kqlab::announce_listening(listener);
  server.run();
}
