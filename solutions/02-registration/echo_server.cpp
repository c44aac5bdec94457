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
  // EV_RECEIPT: every change gets an entry in the eventlist (EV_ERROR set, data 0 or the errno), and kevent()
  // returns them at once, without waiting and without taking pending events (kqueue(2), EV_RECEIPT). One entry of
  // room per change: FreeBSD stops applying changes when a receipt finds no room.
  for (struct kevent& change : changes) change.flags |= EV_RECEIPT;
  std::vector<struct kevent> receipts(changes.size());
  const int count = static_cast<int>(changes.size());
  const int answered = kevent(kq_, changes.data(), count, receipts.data(), count, nullptr);
  if (answered == -1) kqlab::fail("kevent");
  // Receipts come back in the order of the changes. Test the bit: macOS adds EV_ERROR to the change's own flags.
  for (int i = 0; i < answered; ++i) {
    if ((receipts[i].flags & EV_ERROR) && receipts[i].data != 0) {
      kqlab::fail("kevent(" + kqlab::describe(changes[i]) + ")", static_cast<int>(receipts[i].data));
    }
  }
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
  // A change that fails comes back as an EV_ERROR entry in `events`, and with no room left for it, fails the
  // whole call and stops the changes after it. Room for one entry per change makes the first case the only one.
  if (events.size() < changes_.size()) events.resize(changes_.size());
  const int ready = kevent(kq_, changes_.data(), static_cast<int>(changes_.size()), events.data(),
                           static_cast<int>(events.size()), nullptr);
  // Applied, all of them, even when a signal then interrupted the wait (kqueue(2), EINTR): never hand them twice.
  changes_.clear();
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
  // Edge-triggered: this event will not come again for the connections waiting now, only when new ones arrive.
  // So take them all, until accept() says there are none left (EAGAIN). Whatever is left behind waits forever.
  for (;;) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1) {
      if (errno == EINTR || errno == ECONNABORTED) continue;  // a client that gave up: the next one may be there
      // EAGAIN: all taken. Anything else (EMFILE...) is worth a line; lesson 05 handles it properly.
      if (errno != EAGAIN && errno != EWOULDBLOCK) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);  // Linux does not inherit O_NONBLOCK from the listener, BSD does: say it anyway
    const std::uint64_t serial = add_client(fd).serial_;
    // Both edge-triggered, and for good: EVFILT_READ fires when bytes arrive, EVFILT_WRITE whenever room grows in
    // the send buffer (each time the peer acknowledges data). With EV_CLEAR neither fires again for a condition
    // that merely goes on, so an idle connection costs nothing. They ride in the next wait, which also reports
    // what is already there.
    change(fd, EVFILT_READ, EV_ADD | EV_CLEAR, serial);
    change(fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, serial);
  }
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
  // Edge-triggered: this event will not come again for bytes that are already here, only when more arrive. So
  // read until read() says there is nothing left (EAGAIN); bytes left behind would wait forever. The end of the
  // stream shows up the same way, as read() returning 0, however the events reported it.
  for (;;) {
    char buffer[16 * 1024];  // any size works, since the loop reads until EAGAIN
    const ssize_t got = read(fd, buffer, sizeof buffer);
    if (got > 0) {
      client.unsent_.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0) {
      client.peer_done_ = true;  // the client will send nothing more; flush() closes once all is echoed
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
