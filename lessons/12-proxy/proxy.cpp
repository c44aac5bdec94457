// Lesson 12: a TCP proxy.
//
// Each client that connects gets a connection of its own to the upstream given with --upstream HOST:PORT, and the
// proxy moves bytes both ways until both sides are done. Read lessons/12-proxy/README.md alongside: its numbered
// steps are the TODO(N) gaps of the exercise. What this file shows:
//   - connecting without blocking: connect() starts, EVFILT_WRITE says it ended, SO_ERROR says how, and an
//     EVFILT_TIMER gives up on an upstream that never answers (step 1);
//   - flow control: a bounded buffer per direction, and EV_DISABLE on the fast side's reading while the slow
//     side's buffer is full (step 2);
//   - half-close: one side's end of stream passed on with shutdown(SHUT_WR), the other direction still open
//     (step 3);
//   - closing what a session owns, both descriptors, whichever side ends it (step 4);
//   - closing only once the last bytes are sent: EVFILT_EMPTY where it exists (step 5).
#include <netdb.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>

#include "kevent_format.hpp"
#include "setup.hpp"

namespace {

constexpr std::int64_t kLingerMs = 2'000;   // how long a client may take to read the proxy's last words
constexpr std::size_t kLowWater = 16 * 1024;  // wake a blocked writer only when this much room opened (NOTE_LOWAT)

// Bytes flowing one way: read from `from`, written to `to`.
struct Direction {
  int from = -1;
  int to = -1;
  std::string buffer;   // read, not yet written: never more than the proxy's --buffer-bytes
  bool eof = false;     // `from` has sent everything
  bool shut = false;    // ...and `to` has been told so: shutdown(to, SHUT_WR)
  bool reading = true;  // is `from`'s EVFILT_READ enabled? (as registered once connected)
  bool writing = false; // is `to`'s EVFILT_WRITE enabled?
};

// One client, its upstream connection, and the two directions between them.
struct Session {
  std::uint64_t id = 0;
  int client = -1;
  int upstream = -1;
  bool connected = false;
  bool lingering = false;  // the proxy has said its last words to the client, and waits to close
  Direction up;            // client -> upstream
  Direction down;          // upstream -> client
};

void* udata_of(std::uint64_t id) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(id)); }
std::uint64_t id_of(const struct kevent& event) { return reinterpret_cast<std::uintptr_t>(event.udata); }

class Proxy {
 public:
  Proxy(int listener, addrinfo* upstream, std::string upstream_name, std::int64_t connect_timeout_ms,
        std::size_t buffer_bytes);
  [[noreturn]] void run();

 private:
  void change(std::uintptr_t ident, short filter, unsigned short flags, std::uint64_t id, unsigned fflags = 0,
              std::int64_t data = 0, int expected = 0);
  void accept_clients();
  void start_connect(int client);
  void on_connected(Session& session);
  void pump(Session& session, Direction& direction);
  void set_interest(Session& session, Direction& direction);
  void refuse(Session& session, const std::string& why);
  void finish(Session& session);
  void on_event(const struct kevent& event);

  int kq_;
  int listener_;
  addrinfo* upstream_;
  std::string upstream_name_;
  std::int64_t connect_timeout_ms_;
  std::size_t buffer_bytes_;
  std::uint64_t next_id_ = 1;  // 0 is the listening socket's
  std::unordered_map<std::uint64_t, std::unique_ptr<Session>> sessions_;
};

Proxy::Proxy(int listener, addrinfo* upstream, std::string upstream_name, std::int64_t connect_timeout_ms,
             std::size_t buffer_bytes)
    : kq_(kqueue()),
      listener_(listener),
      upstream_(upstream),
      upstream_name_(std::move(upstream_name)),
      connect_timeout_ms_(connect_timeout_ms),
      buffer_bytes_(buffer_bytes) {
  if (kq_ == -1) kqlab::fail("kqueue");
  change(listener_, EVFILT_READ, EV_ADD, 0);
}

// One change, applied at once, its receipt checked; `expected` is an error the caller knows can happen.
void Proxy::change(std::uintptr_t ident, short filter, unsigned short flags, std::uint64_t id, unsigned fflags,
                   std::int64_t data, int expected) {
  struct kevent change;
  EV_SET(&change, ident, filter, flags | EV_RECEIPT, fflags, data, udata_of(id));
  struct kevent receipt;
  if (kevent(kq_, &change, 1, &receipt, 1, nullptr) == -1) kqlab::fail("kevent");
  const int error = static_cast<int>(receipt.data);
  if ((receipt.flags & EV_ERROR) && error != 0 && error != expected) {
    kqlab::fail("kevent(" + kqlab::describe(change) + ")", error);
  }
}

void Proxy::run() {
  struct kevent events[64];
  for (;;) {
    const int ready = kevent(kq_, nullptr, 0, events, 64, nullptr);
    if (ready == -1) {
      if (errno == EINTR) continue;
      kqlab::fail("kevent");
    }
    for (int i = 0; i < ready; ++i) on_event(events[i]);
  }
}

void Proxy::accept_clients() {
  for (;;) {
    const int client = accept(listener_, nullptr, nullptr);
    if (client == -1) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      std::perror("accept");  // EMFILE and the like: the client waits in the listen queue for a later event
      return;
    }
    kqlab::set_nonblocking(client);
    start_connect(client);
  }
}

// ---- Step 1: connecting without blocking -------------------------------------------------------------------------

// Starts the connection to the upstream for a new client: connect() on a non-blocking socket returns at once, and
// EVFILT_WRITE reports when the attempt has ended, well or badly. Nothing is read from the client until then.
void Proxy::start_connect(int client) {
  auto owned = std::make_unique<Session>();
  Session& session = *owned;
  session.id = next_id_++;
  session.client = client;
  session.upstream = socket(upstream_->ai_family, SOCK_STREAM, 0);
  if (session.upstream == -1) kqlab::fail("socket");
  kqlab::set_nonblocking(session.upstream);
  session.up.from = session.down.to = client;
  session.up.to = session.down.from = session.upstream;
  sessions_.emplace(session.id, std::move(owned));
  if (connect(session.upstream, upstream_->ai_addr, upstream_->ai_addrlen) == -1 && errno != EINPROGRESS) {
    refuse(session, std::strerror(errno));  // refused at once (some systems do so on loopback)
    return;
  }
  change(session.upstream, EVFILT_WRITE, EV_ADD | EV_ONESHOT, session.id);
  change(session.id, EVFILT_TIMER, EV_ADD | EV_ONESHOT, session.id, 0, connect_timeout_ms_);
}

// The upstream's socket became writable: the connection attempt has ended. How, SO_ERROR says.
void Proxy::on_connected(Session& session) {
  // TODO(1): did the connection succeed? Ask the socket for the attempt's error, and if there is one, tell the
  // client why (refuse) instead of going on. Until this is done a refused upstream looks like a connected one.
  // (README, step 1; stuck? ./kqlab hint 12)
  session.connected = true;
  change(session.id, EVFILT_TIMER, EV_DELETE, session.id, 0, 0, ENOENT);  // ENOENT: it fired in this batch
  for (const int fd : {session.client, session.upstream}) {
    change(fd, EVFILT_READ, EV_ADD, session.id);
    change(fd, EVFILT_WRITE, EV_ADD | EV_DISABLE, session.id);
  }
}

// ---- Steps 2 and 3: moving bytes, at the pace of the slower side --------------------------------------------------

// Moves what it can one way: writes what is buffered while `to` takes it, reads while there is room. Then sets
// the two registrations this direction owns: `from`'s reading on only while there is room, `to`'s writing on only
// while bytes wait.
void Proxy::pump(Session& session, Direction& direction) {
  char chunk[64 * 1024];
  for (;;) {
    while (!direction.buffer.empty()) {
      const ssize_t sent = write(direction.to, direction.buffer.data(), direction.buffer.size());
      if (sent > 0) {
        direction.buffer.erase(0, static_cast<std::size_t>(sent));
      } else if (sent == -1 && errno == EINTR) {
        continue;
      } else if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        finish(session);  // the receiving side is gone: nothing more can be delivered either way
        return;
      }
    }
    const std::size_t room = buffer_bytes_ - std::min(buffer_bytes_, direction.buffer.size());
    if (direction.eof || room == 0) break;
    const ssize_t got = read(direction.from, chunk, std::min(room, sizeof chunk));
    if (got > 0) {
      direction.buffer.append(chunk, static_cast<std::size_t>(got));
      continue;
    }
    if (got == 0) {
      direction.eof = true;
      continue;  // write out what is left, then pass the end on
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    finish(session);  // ECONNRESET: the sending side vanished
    return;
  }
  // TODO(3): once `from` has ended and everything it sent is written, pass the end on to `to`, and remember it.
  // Until this is done no end of stream ever crosses the proxy. (README, step 3)
  if (session.up.shut && session.down.shut) {
    finish(session);
    return;
  }
  set_interest(session, direction);
}

// The two registrations a direction owns: `from`'s reading, on only while the buffer has room (off, the fast
// side waits in its own socket buffer, and TCP slows it down); `to`'s writing, on only while bytes wait. A change
// only when one is to change: each costs a system call.
void Proxy::set_interest(Session& session, Direction& direction) {
  // TODO(2): reading from `from` on only while the buffer has room, writing to `to` on only while bytes wait.
  // Until this is done reading stays on and writing off: a full buffer spins, a blocked write stalls. (README,
  // step 2)
  static_cast<void>(session);
  static_cast<void>(direction);
}

// ---- Steps 4 and 5: ending a session ----------------------------------------------------------------------------

// The upstream cannot be reached: the client is told why, in one line, and the connection closed once that line
// has left (step 5).
void Proxy::refuse(Session& session, const std::string& why) {
  close(session.upstream);
  session.upstream = -1;
  const std::string line = "proxy: cannot reach upstream " + upstream_name_ + ": " + why + "\n";
  const ssize_t sent = write(session.client, line.data(), line.size());  // a fresh socket: room for one line
  static_cast<void>(sent);
  shutdown(session.client, SHUT_WR);
  session.lingering = true;
  // EVFILT_EMPTY (FreeBSD 12 and later) reports when the send buffer is empty: every byte sent and acknowledged.
  // Elsewhere (macOS; kqlab's Linux layer, which defines it but refuses it with EINVAL) wait instead for the
  // client's end of stream, discarding what it sends, for at most kLingerMs.
#ifdef EVFILT_EMPTY
  struct kevent empty;
  EV_SET(&empty, session.client, EVFILT_EMPTY, EV_ADD | EV_ONESHOT | EV_RECEIPT, 0, 0, udata_of(session.id));
  struct kevent receipt;
  if (kevent(kq_, &empty, 1, &receipt, 1, nullptr) == 1 && receipt.data == 0) return;
#endif
  change(session.client, EVFILT_READ, EV_ADD, session.id);
  change(session.id, EVFILT_TIMER, EV_ADD | EV_ONESHOT, session.id, 0, kLingerMs);
}

// Ends a session: both descriptors closed (which removes their registrations), its timer deleted.
void Proxy::finish(Session& session) {
  // TODO(4): close the session's descriptors. Until this is done every session leaks them. (README, step 4)
  change(session.id, EVFILT_TIMER, EV_DELETE, session.id, 0, 0, ENOENT);  // ENOENT: none, or fired already
  sessions_.erase(session.id);  // last: `session` dies here
}

void Proxy::on_event(const struct kevent& event) {
  if (event.filter == EVFILT_READ && event.ident == static_cast<std::uintptr_t>(listener_)) {
    accept_clients();
    return;
  }
  const auto found = sessions_.find(id_of(event));
  if (found == sessions_.end()) return;  // its session ended earlier in this batch
  Session& session = *found->second;
  const int fd = static_cast<int>(event.ident);
  if (event.filter == EVFILT_TIMER) {
    if (session.lingering) {
      finish(session);
    } else {
      refuse(session, "no answer within " + std::to_string(connect_timeout_ms_) + " ms");
    }
  } else if (session.lingering) {
    char discard[4096];
#ifdef EVFILT_EMPTY
    if (event.filter == EVFILT_EMPTY) {
      finish(session);
      return;
    }
#endif
    if (read(session.client, discard, sizeof discard) <= 0) finish(session);  // its end of stream, or an error
  } else if (!session.connected) {
    on_connected(session);
  } else if (event.filter == EVFILT_READ) {
    pump(session, fd == session.client ? session.up : session.down);
  } else {
    pump(session, fd == session.upstream ? session.up : session.down);
  }
}

// "HOST:PORT" resolved once, at start-up; a bad one ends the program with status 2, as a bad --port does.
addrinfo* resolve_upstream(const std::string& text) {
  const std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    std::fprintf(stderr, "--upstream wants HOST:PORT, not '%s'\n", text.c_str());
    std::exit(2);
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int error = getaddrinfo(host.c_str(), text.c_str() + colon + 1, &hints, &found); error != 0) {
    std::fprintf(stderr, "--upstream %s: %s\n", text.c_str(), gai_strerror(error));
    std::exit(2);
  }
  return found;
}

}  // namespace

int main(int argc, char** argv) {
  std::string upstream;
  long long connect_timeout_ms = 3'000;
  long long buffer_bytes = 64 * 1024;
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A TCP proxy: each client gets a connection to the upstream, and bytes flow both ways.",
      {{"--connect-timeout-ms", "give up on an upstream that has not answered in this many ms", 1, 600'000,
        &connect_timeout_ms},
       {"--buffer-bytes", "bytes buffered per direction, at most, while the receiving side is slow", 1,
        64 * 1024 * 1024, &buffer_bytes}},
      {{"--upstream", "HOST:PORT", "where to connect each client to (required)", &upstream}});
  if (upstream.empty()) {
    std::fprintf(stderr, "--upstream HOST:PORT is required: where should the proxy connect its clients to?\n");
    return 2;
  }
  addrinfo* resolved = resolve_upstream(upstream);
  std::signal(SIGPIPE, SIG_IGN);
  const int listener = kqlab::open_listener(address);
  Proxy proxy(listener, resolved, upstream, connect_timeout_ms, static_cast<std::size_t>(buffer_bytes));
  kqlab::announce_listening(listener);
  proxy.run();
}
