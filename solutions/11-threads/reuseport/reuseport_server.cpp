// Lesson 11, the alternative: one queue per thread.
//
// The same factoring server, built the other way round. Each thread has a listening socket of its own, all bound
// to the same port (SO_REUSEPORT), and a kqueue of its own: the kernel spreads new connections over the listening
// sockets, and each connection lives and dies on one thread. Nothing is shared, so nothing needs EV_DISPATCH, a
// lock or a reference count: each thread is lesson 05's single-threaded loop. The price: work is spread by
// connection, not by request. A thread busy with one slow request keeps every other connection it owns waiting,
// while the other threads may have nothing to do (README, "One queue per thread").
#include <netdb.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "connection.hpp"
#include "kevent_format.hpp"
#include "setup.hpp"

namespace {

constexpr std::uintptr_t kStop = 1;         // EVFILT_USER: this thread is to stop
constexpr std::uintptr_t kRetryAccept = 0;  // EVFILT_TIMER: accept again after running out of descriptors
constexpr std::int64_t kRetryAcceptMs = 100;

void* udata_of(std::uint64_t id) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(id)); }
std::uint64_t id_of(const struct kevent& event) { return reinterpret_cast<std::uintptr_t>(event.udata); }

// Applies `changes` in one kevent() call, every receipt checked (see workers/workers_server.cpp).
void apply(int kq, std::span<struct kevent> changes, int expected = 0) {
  struct kevent receipts[4];
  for (struct kevent& change : changes) change.flags |= EV_RECEIPT;
  const int got = kevent(kq, changes.data(), static_cast<int>(changes.size()), receipts,
                         static_cast<int>(changes.size()), nullptr);
  if (got == -1) kqlab::fail("kevent");
  for (int i = 0; i < got; ++i) {
    const int error = static_cast<int>(receipts[i].data);
    if ((receipts[i].flags & EV_ERROR) && error != 0 && error != expected) {
      kqlab::fail("kevent(" + kqlab::describe(receipts[i]) + ")", error);
    }
  }
}

// ---- Step 5: many listening sockets on one port ------------------------------------------------------------------

// Lets several sockets bind the same address and port, with the kernel spreading new connections over them.
// The one #ifdef of the lesson, for a documented platform difference: FreeBSD's SO_REUSEPORT lets sockets share a
// port but gives every connection to one of them; its SO_REUSEPORT_LB (FreeBSD 12 and later) balances. Linux's
// SO_REUSEPORT balances. macOS has only SO_REUSEPORT, which does not balance (README, "One queue per thread").
void share_port(int fd) {
  const int on = 1;
#ifdef SO_REUSEPORT_LB
  const int option = SO_REUSEPORT_LB;
#else
  const int option = SO_REUSEPORT;
#endif
  if (setsockopt(fd, SOL_SOCKET, option, &on, sizeof on) == -1) kqlab::fail("setsockopt(SO_REUSEPORT)");
}

// A non-blocking listening socket on `host` and `port`, sharing the port with the others (share_port).
int open_shared_listener(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int error = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); error != 0) {
    std::fprintf(stderr, "--host %s --port %s: %s\n", host.c_str(), port.c_str(), gai_strerror(error));
    std::exit(2);
  }
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (fd == -1) kqlab::fail("socket");
  const int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == -1) kqlab::fail("setsockopt(SO_REUSEADDR)");
  share_port(fd);
  if (bind(fd, found->ai_addr, found->ai_addrlen) == -1) kqlab::fail("bind " + host + ":" + port);
  freeaddrinfo(found);
  if (listen(fd, SOMAXCONN) == -1) kqlab::fail("listen");
  kqlab::set_nonblocking(fd);
  return fd;
}

// The port a listening socket got (the first one binds port 0; the others then bind that).
std::string port_of(int listener) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == -1) kqlab::fail("getsockname");
  char port[16];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&address), length, nullptr, 0, port, sizeof port, NI_NUMERICSERV) != 0) {
    kqlab::fail("getnameinfo", EINVAL);
  }
  return port;
}

// ---- One thread: a single-threaded server of its own -------------------------------------------------------------

class Worker {
 public:
  Worker(int listener, std::int64_t timeout_ms);
  ~Worker();

  void run();   // the loop, on this worker's own thread; returns once stop() is called
  void stop();  // from any thread

 private:
  void accept_clients();
  void on_connection(const struct kevent& event);
  void close_connection(std::uint64_t id);

  int kq_;
  int listener_;
  std::int64_t timeout_ms_;
  std::uint64_t next_id_ = 1;
  // Only this worker's thread touches its connections: no lock, and the map owns them outright. By number, as
  // in lesson 01: an event further down a batch may name a connection an earlier handler closed.
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections_;
};

Worker::Worker(int listener, std::int64_t timeout_ms) : kq_(kqueue()), listener_(listener), timeout_ms_(timeout_ms) {
  if (kq_ == -1) kqlab::fail("kqueue");
  struct kevent changes[3];
  EV_SET(&changes[0], listener_, EVFILT_READ, EV_ADD, 0, 0, nullptr);
  EV_SET(&changes[1], kStop, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);  // one thread waits here: clearing is fine
  // The retry timer, registered now and disabled: arming it at the descriptor limit (accept_clients) then only
  // changes a registration, and cannot fail for want of what a new one may need.
  EV_SET(&changes[2], kRetryAccept, EVFILT_TIMER, EV_ADD | EV_DISABLE | EV_ONESHOT, 0, kRetryAcceptMs, nullptr);
  apply(kq_, changes);
}

Worker::~Worker() {
  connections_.clear();
  close(kq_);
  close(listener_);
}

void Worker::stop() {
  struct kevent trigger;
  EV_SET(&trigger, kStop, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
  apply(kq_, std::span(&trigger, 1));
}

void Worker::run() {
  struct kevent events[64];  // one thread per queue: a batch is fine, and cheaper
  for (;;) {
    const int ready = kevent(kq_, nullptr, 0, events, 64, nullptr);
    if (ready == -1) {
      if (errno == EINTR) continue;
      kqlab::fail("kevent");
    }
    for (int i = 0; i < ready; ++i) {
      const struct kevent& event = events[i];
      if (event.filter == EVFILT_USER) return;
      if (event.filter == EVFILT_TIMER && event.ident == kRetryAccept) {
        struct kevent enable;
        EV_SET(&enable, listener_, EVFILT_READ, EV_ENABLE, 0, 0, nullptr);
        apply(kq_, std::span(&enable, 1));
      } else if (event.filter == EVFILT_TIMER) {
        connections_.erase(id_of(event));  // timed out; EV_ONESHOT: the timer is gone already
      } else if (event.ident == static_cast<std::uintptr_t>(listener_)) {
        accept_clients();
      } else {
        on_connection(event);
      }
    }
  }
}

void Worker::accept_clients() {
  for (;;) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        std::perror("accept (trying again in 100 ms)");
        struct kevent changes[2];
        EV_SET(&changes[0], listener_, EVFILT_READ, EV_DISABLE, 0, 0, nullptr);
        EV_SET(&changes[1], kRetryAccept, EVFILT_TIMER, EV_ADD | EV_ENABLE | EV_ONESHOT, 0, kRetryAcceptMs, nullptr);
        apply(kq_, changes);
        return;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) kqlab::fail("accept");
      return;
    }
    kqlab::set_nonblocking(fd);
    const std::uint64_t id = next_id_++;
    connections_.emplace(id, std::make_unique<Connection>(fd));
    struct kevent changes[3];
    EV_SET(&changes[0], fd, EVFILT_READ, EV_ADD, 0, 0, udata_of(id));
    EV_SET(&changes[1], fd, EVFILT_WRITE, EV_ADD | EV_DISABLE, 0, 0, udata_of(id));
    EV_SET(&changes[2], id, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, timeout_ms_, udata_of(id));
    apply(kq_, changes);
  }
}

void Worker::on_connection(const struct kevent& event) {
  const std::uint64_t id = id_of(event);
  const auto found = connections_.find(id);
  if (found == connections_.end()) return;  // closed earlier in this batch
  Connection& connection = *found->second;
  const Connection::Outcome outcome = event.filter == EVFILT_READ ? connection.serve() : connection.flush();
  if (outcome == Connection::Outcome::kEnded) {
    close_connection(id);
    return;
  }
  // Read or write, never both: while answers wait for room, the client's requests wait in its socket.
  const bool reading = outcome == Connection::Outcome::kInput;
  struct kevent changes[3];
  EV_SET(&changes[0], connection.fd(), EVFILT_READ, reading ? EV_ENABLE : EV_DISABLE, 0, 0, udata_of(id));
  EV_SET(&changes[1], connection.fd(), EVFILT_WRITE, reading ? EV_DISABLE : EV_ENABLE, 0, 0, udata_of(id));
  EV_SET(&changes[2], id, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, timeout_ms_, udata_of(id));
  apply(kq_, changes);
}

void Worker::close_connection(std::uint64_t id) {
  connections_.erase(id);  // closes the descriptor, which removes its registrations
  struct kevent change;
  EV_SET(&change, id, EVFILT_TIMER, EV_DELETE, 0, 0, nullptr);
  apply(kq_, std::span(&change, 1), ENOENT);  // ENOENT: it fired earlier in this batch
}

// SIGTERM and SIGINT as events of the main thread's own queue (lesson 06).
int watch_stop_signals() {
  const int signals = kqueue();
  if (signals == -1) kqlab::fail("kqueue");
  struct kevent changes[2];
  int count = 0;
  for (const int number : {SIGTERM, SIGINT}) {
    std::signal(number, SIG_IGN);
    EV_SET(&changes[count++], number, EVFILT_SIGNAL, EV_ADD, 0, 0, nullptr);
  }
  apply(signals, changes);
  return signals;
}

}  // namespace

int main(int argc, char** argv) {
  long long threads = 4;
  long long timeout_ms = 30'000;
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A factoring server: one kqueue and one listening socket per thread. Send a number per line.",
      {{"--threads", "threads, each with its own queue and listening socket", 1, 64, &threads},
       {"--timeout-ms", "close a connection this long after the server last finished with it", 1, 86'400'000,
        &timeout_ms}});
  std::signal(SIGPIPE, SIG_IGN);
  const int signals = watch_stop_signals();

  // The first socket binds the port asked for (0: any); the others bind the port it got.
  std::vector<std::unique_ptr<Worker>> workers;
  const int first = open_shared_listener(address.host, address.port);
  const std::string port = port_of(first);
  workers.push_back(std::make_unique<Worker>(first, timeout_ms));
  for (long long i = 1; i < threads; ++i) {
    workers.push_back(std::make_unique<Worker>(open_shared_listener(address.host, port), timeout_ms));
  }
  std::vector<std::thread> running;
  for (auto& worker : workers) running.emplace_back(&Worker::run, worker.get());
  kqlab::announce_listening(first);

  struct kevent event;
  while (kevent(signals, nullptr, 0, &event, 1, nullptr) != 1) {
    if (errno != EINTR) kqlab::fail("kevent");
  }
  for (auto& worker : workers) worker->stop();
  for (std::thread& thread : running) thread.join();
  workers.clear();
  close(signals);
  return 0;
}
