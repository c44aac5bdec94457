// Lesson 12: a proxy.
//
// A TCP proxy: each client that connects is joined to a connection of its own to the upstream server given by
// --upstream, and the bytes flow both ways between the two, at the speed of the slower side. The proxy connects
// without blocking (the answer comes as an event), tells a client why when the upstream cannot be reached, holds at
// most --buffer bytes per direction (the fast side waits while the slow side's buffer is full), passes a half-close
// on (a request-then-EOF protocol works through it), passes a reset on as a reset, and closes a pair only when both
// directions are finished. pair.hpp holds a pair's state, proxy.hpp declares the class, main.cpp reads the command
// line. Read lessons/12-proxy/README.md alongside: its numbered steps are the TODO(N) gaps of the exercise. The
// `// [snippet: NAME]` ... `// [end]` lines mark the code README.md quotes: leave them where they are.
#include <fcntl.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>

#include "kevent_format.hpp"
#include "proxy.hpp"
#include "setup.hpp"

constexpr std::size_t kChunk = 64 * 1024;  // the most one read() takes
constexpr std::int64_t kLowWater = 8 * 1024;  // NOTE_LOWAT for writing: wake when this much room is free (step 3)
constexpr std::int64_t kLingerMs = 5000;  // how long a finished pair waits for EVFILT_EMPTY

// [snippet: empty-filter]
// EVFILT_EMPTY: a socket whose send buffer holds nothing unacknowledged. FreeBSD has it; macOS's <sys/event.h> does
// not even name it, so it is chosen here, once, and the code below asks kEmptyFilter; Linux's layer names it and
// refuses it (EINVAL), which the first receipt tells. README, "Closing once everything is sent: EVFILT_EMPTY".
#ifdef EVFILT_EMPTY
constexpr short kEmptyFilter = EVFILT_EMPTY;
#else
constexpr short kEmptyFilter = 0;  // none: no filter has the number 0
#endif
// [end]

Proxy::Proxy(int listener, kqlab::UpstreamAddress upstream, std::size_t buffer_limit,
             std::int64_t connect_timeout_ms)
    : kq_(kqueue()),
      listener_(listener),
      spare_(open("/dev/null", O_RDONLY | O_CLOEXEC)),
      upstream_(std::move(upstream)),
      buffer_limit_(buffer_limit),
      connect_timeout_ms_(connect_timeout_ms),
      empty_filter_(kEmptyFilter != 0) {
  if (kq_ == -1) kqlab::fail("kqueue");
  if (spare_ == -1) kqlab::fail("open /dev/null");
  struct kevent change;
  EV_SET(&change, listener_, EVFILT_READ, EV_ADD, 0, 0, nullptr);  // udata nullptr: the listener, or a signal
  must(change);
  // SIGTERM becomes an event, and only that (lesson 06): ignored, so that the kernel does not end the process.
  std::signal(SIGTERM, SIG_IGN);
  EV_SET(&change, SIGTERM, EVFILT_SIGNAL, EV_ADD, 0, 0, nullptr);
  must(change);
}

// Applies one change with EV_RECEIPT; returns 0 or the errno it failed with (lesson 05).
int Proxy::apply(const struct kevent& change) {
  struct kevent with_receipt = change;
  with_receipt.flags |= EV_RECEIPT;
  struct kevent receipt;
  if (kevent(kq_, &with_receipt, 1, &receipt, 1, nullptr) == -1) kqlab::fail("kevent");
  return (receipt.flags & EV_ERROR) ? static_cast<int>(receipt.data) : 0;
}

// Applies a change that cannot fail in a working proxy: if it does, the proxy stops, naming it.
void Proxy::must(const struct kevent& change) {
  if (const int error = apply(change)) kqlab::fail("kevent(" + kqlab::describe(change) + ")", error);
}

void Proxy::run() {
  struct kevent events[64];
  while (!stopping_) {
    const int ready = kevent(kq_, nullptr, 0, events, static_cast<int>(std::size(events)), nullptr);
    if (ready == -1) {
      if (errno == EINTR) continue;  // Linux: a SIGSTOP and SIGCONT interrupt the wait (lesson 05, step 3)
      kqlab::fail("kevent");
    }
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
    closed_.clear();  // no event of this batch is left to point at the pairs closed while handling it
  }
}

void Proxy::dispatch(const struct kevent& event) {
  if (event.filter == EVFILT_SIGNAL) {
    stopping_ = true;
    return;
  }
  if (event.udata == nullptr) {
    accept_clients(event);
    return;
  }
  Endpoint& end = *static_cast<Endpoint*>(event.udata);
  Pair& pair = *end.pair_;
  if (pair.closed_) return;  // closed by an earlier event of this batch: this one is stale
  if (event.filter == EVFILT_TIMER) {
    on_timer(pair);
  } else if (kEmptyFilter != 0 && event.filter == kEmptyFilter) {
    on_empty(end);
  } else if (event.filter == EVFILT_WRITE && &end == &pair.upstream_ && !pair.connected_) {
    on_connect_done(pair, event);
  } else if (event.filter == EVFILT_WRITE) {
    advance(pair);  // room to write (or, with EV_EOF, a write that will fail and abort the pair)
  } else if (event.filter == EVFILT_READ) {
    on_readable(end, event);
  }
}

// The listening socket is readable: event.data clients are waiting. Each gets a pair; at the descriptor limit the
// spare descriptor turns one away instead of leaving it in the queue (lesson 05, step 4).
void Proxy::accept_clients(const struct kevent& event) {
  for (std::int64_t waiting = event.data; waiting > 0; --waiting) {
    const int client = accept(listener_, nullptr, nullptr);
    if (client == -1 && (errno == EMFILE || errno == ENFILE)) {
      close(spare_);
      if (const int refused = accept(listener_, nullptr, nullptr); refused != -1) turn_away(refused);
      spare_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (spare_ == -1) kqlab::fail("open /dev/null");
      continue;
    }
    if (client == -1) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) std::perror("accept");
      return;
    }
    start_pair(client);
  }
}

// Tells a client the proxy has no descriptor for it, and closes it. A fresh socket's send buffer is empty, so the
// line fits; but the client may be gone already: then there is nobody to tell.
void Proxy::turn_away(int client) {
  static constexpr char kFull[] = "proxy: out of descriptors, try again later\n";
  if (write(client, kFull, sizeof kFull - 1) == -1) {
    // Nothing to do: the close below is all that is left.
  }
  close(client);
}

// [snippet: start-pair]
// A new client: its pair, and a connect() to the upstream that does not wait for the answer.
void Proxy::start_pair(int client) {
  kqlab::set_nonblocking(client);
  const std::uint64_t id = next_id_++;
  Pair& pair = *(pairs_[id] = std::make_unique<Pair>(id));
  pair.client_.fd_ = client;
  register_endpoint(pair.client_, true, false);  // the client may send its request before the upstream answers
  const int upstream = socket(upstream_.family, SOCK_STREAM, 0);
  if (upstream == -1) {
    refuse(pair, std::strerror(errno));  // EMFILE: out of descriptors, for this client only
    return;
  }
  pair.upstream_.fd_ = upstream;
  kqlab::set_nonblocking(upstream);
  if (connect(upstream, reinterpret_cast<const sockaddr*>(&upstream_.address), upstream_.length) == 0) {
    pair.connected_ = true;  // at once: it happens, on loopback
    register_endpoint(pair.upstream_, true, false);
    advance(pair);
    return;
  }
  if (errno != EINPROGRESS) {
    refuse(pair, std::strerror(errno));  // refused or unreachable, known at once
    return;
  }
  // Under way. The socket becomes writable when the handshake ends, either way: EVFILT_WRITE is the answer.
  register_endpoint(pair.upstream_, false, true);
  arm_timer(pair, connect_timeout_ms_);
}
// [end]

// Registers both filters of a socket once; from then on they are only enabled and disabled.
void Proxy::register_endpoint(Endpoint& end, bool read, bool write) {
  struct kevent change;
  EV_SET(&change, end.fd_, EVFILT_READ, EV_ADD | (read ? 0 : EV_DISABLE), 0, 0, &end);
  must(change);
  EV_SET(&change, end.fd_, EVFILT_WRITE, EV_ADD | (write ? 0 : EV_DISABLE), NOTE_LOWAT, kLowWater, &end);
  must(change);
  end.reading_ = read;
  end.writing_ = write;
}

// Turns one filter of a socket on or off. EV_DISABLE keeps the registration and stops its events; EV_ENABLE
// brings them back, including a condition that arose meanwhile. The write filter's NOTE_LOWAT goes with every
// change: FreeBSD and macOS replace a knote's fflags, data and udata with those of each change to it (kern_event.c,
// kqueue_register()), EV_ENABLE and EV_DISABLE included.
void Proxy::set_filter(Endpoint& end, short filter, bool on) {
  struct kevent change;
  const unsigned int fflags = filter == EVFILT_WRITE ? NOTE_LOWAT : 0;
  const std::int64_t data = filter == EVFILT_WRITE ? kLowWater : 0;
  EV_SET(&change, end.fd_, filter, on ? EV_ENABLE : EV_DISABLE, fflags, data, &end);
  must(change);
  (filter == EVFILT_READ ? end.reading_ : end.writing_) = on;
}

// [snippet: connect-done]
// EVFILT_WRITE on an upstream socket still connecting: the handshake has ended, one way or the other. Writable
// does not mean connected: a refused connection is "writable" too (a write would fail at once).
void Proxy::on_connect_done(Pair& pair, const struct kevent& event) {
  // TODO(1): writable does not mean connected. Find the kernel's answer to connect(): 0, or the errno it failed
  // with. (README, step 1; stuck? ./kqlab hint 12)
  // Each gap's static_casts only keep the compiler quiet about what it does not use yet: delete them.
  int error = 0;
  static_cast<void>(event);
  if (error != 0) {
    refuse(pair, std::strerror(error));
    return;
  }
  pair.connected_ = true;
  disarm_timer(pair);
  advance(pair);  // what the client sent meanwhile goes out now; the upstream's read filter comes on
}
// [end]

// [snippet: timer]
// One timer per pair, a one-shot in milliseconds: the connect timeout (step 1), or the wait for EVFILT_EMPTY.
void Proxy::arm_timer(Pair& pair, std::int64_t milliseconds) {
  // TODO(2): one timer for the pair, firing once, `milliseconds` from now, its event leading back to the pair;
  // and remember that it is armed. (README, step 2)
  static_cast<void>(pair), static_cast<void>(milliseconds);
}
// [end]

void Proxy::disarm_timer(Pair& pair) {
  if (!pair.timer_armed_) return;
  struct kevent change;
  EV_SET(&change, pair.id_, EVFILT_TIMER, EV_DELETE, 0, 0, nullptr);
  // ENOENT is expected: the one-shot timer may have fired in this very batch, its event not handled yet (and
  // skipped, once the pair is connected or closed).
  if (const int error = apply(change); error != 0 && error != ENOENT) {
    kqlab::fail("kevent(" + kqlab::describe(change) + ")", error);
  }
  pair.timer_armed_ = false;
}

// The pair's one-shot timer fired (and is gone): the upstream has not answered in time, or, once both directions
// are finished, the peers have not acknowledged everything in time. Or neither: the connect timeout fired in the
// very batch that brought the answer, and this event is stale (disarm_timer() met ENOENT).
void Proxy::on_timer(Pair& pair) {
  if (!pair.connected_) {
    pair.timer_armed_ = false;
    refuse(pair, "no answer within " + std::to_string(connect_timeout_ms_) + " ms");
  } else if (pair.up_.shut_ && pair.down_.shut_) {
    pair.timer_armed_ = false;
    close_pair(pair);  // the kernel still sends what is left, after close(), as it can
  }
}

// EVFILT_READ on either socket of a connected pair (or on the client while the upstream connects).
void Proxy::on_readable(Endpoint& end, const struct kevent& event) {
  Pair& pair = *end.pair_;
  if ((event.flags & EV_EOF) && event.fflags != 0) {
    abort(pair);  // a reset, or a failed connection: nothing more will come, and nothing sent will arrive
    return;
  }
  Direction& direction = *end.from_here_;
  const std::size_t room = buffer_limit_ - std::min(buffer_limit_, direction.buffer_.size());
  if (room > 0 && !direction.source_done_) {
    char chunk[kChunk];
    const ssize_t got = read(end.fd_, chunk, std::min(room, sizeof chunk));
    if (got > 0) {
      direction.buffer_.append(chunk, static_cast<std::size_t>(got));
    } else if (got == 0) {
      direction.source_done_ = true;  // an orderly end of this direction only: the other may still be flowing
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      abort(pair);  // ECONNRESET, ETIMEDOUT: the connection failed
      return;
    }
  }
  advance(pair);
}

// [snippet: advance]
// Does everything that can be done for the pair now: moves each direction's bytes on, passes an end on, sets
// every filter to what is left, and closes the pair once both directions are finished. Every handler ends here.
void Proxy::advance(Pair& pair) {
  if (pair.connected_ && !flush(pair.up_, pair.upstream_)) return;  // the pair was aborted
  if (!flush(pair.down_, pair.client_)) return;
  if (pair.up_.shut_ && pair.down_.shut_) {
    finish(pair);
    return;
  }
  update_interest(pair.client_);
  update_interest(pair.upstream_);
}
// [end]

// [snippet: update-interest]
// Sets a socket's filters to what the pair needs from it now. Reading, while its direction has room and its
// source has not ended: a full buffer stops reading, and TCP then stops the fast side (flow control). Writing,
// while bytes wait for it, or, on an upstream socket still connecting, for the answer to connect().
void Proxy::update_interest(Endpoint& end) {
  const bool connecting = &end == &end.pair_->upstream_ && !end.pair_->connected_;
  // TODO(3): read while the socket's direction has room, and only then: what must stop the fast side? (README,
  // step 3)
  const bool read = !connecting && !end.from_here_->source_done_;
  const bool write = connecting || !end.to_here_->buffer_.empty();
  if (read != end.reading_) set_filter(end, EVFILT_READ, read);
  if (write != end.writing_) set_filter(end, EVFILT_WRITE, write);
}
// [end]

// [snippet: flush]
// Writes what the destination takes now, and once the source has ended and every byte is out, tells the
// destination: shutdown(SHUT_WR) sends it an EOF, and leaves the other direction open. Returns false if the pair
// was aborted (the destination is gone).
bool Proxy::flush(Direction& direction, Endpoint& to) {
  while (!direction.buffer_.empty()) {
    const ssize_t sent = write(to.fd_, direction.buffer_.data(), direction.buffer_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;  // full: EVFILT_WRITE says when not
    if (sent == -1) {
      abort(*to.pair_);  // EPIPE, ECONNRESET: the destination is gone, and the pair with it
      return false;
    }
    direction.buffer_.erase(0, static_cast<std::size_t>(sent));
  }
  if (direction.buffer_.empty() && direction.source_done_ && !direction.shut_) {
    // TODO(4): the source has ended and every byte is out: pass the end on, and the direction is finished.
    // (README, step 4)
  }
  return true;
}
// [end]

// [snippet: finish]
// Both directions are finished: every byte is written and both peers have been told. Where the kqueue has
// EVFILT_EMPTY (FreeBSD), wait until each peer has acknowledged every byte before closing; where it has not (macOS,
// and Linux's layer, which refuses it with EINVAL), close now: the kernel sends the rest after close().
void Proxy::finish(Pair& pair) {
  update_interest(pair.client_);  // nothing left to read or write: both filters off
  update_interest(pair.upstream_);
  for (Endpoint* end : {&pair.client_, &pair.upstream_}) {
    if (!empty_filter_) break;
    struct kevent change;
    EV_SET(&change, end->fd_, kEmptyFilter, EV_ADD | EV_ONESHOT, 0, 0, end);
    const int error = apply(change);
    if (error == EINVAL) empty_filter_ = false;  // this kqueue has no such filter: never ask again
    if (error != 0 && error != EINVAL) kqlab::fail("kevent(" + kqlab::describe(change) + ")", error);
    end->emptying_ = error == 0;
  }
  if (pair.client_.emptying_ || pair.upstream_.emptying_) {
    arm_timer(pair, kLingerMs);  // a peer that never acknowledges must not hold the pair for ever
    return;
  }
  close_pair(pair);
}
// [end]

// EVFILT_EMPTY: everything written to this socket has been acknowledged (or the connection is gone).
void Proxy::on_empty(Endpoint& end) {
  end.emptying_ = false;
  Pair& pair = *end.pair_;
  if (!pair.client_.emptying_ && !pair.upstream_.emptying_) close_pair(pair);
}

// [snippet: refuse]
// The upstream cannot be reached: tell the client why, in one line, and close. What the client sent is read and
// dropped first: closing a socket with unread input resets the connection, and a reset can destroy the line in
// flight before the client reads it.
void Proxy::refuse(Pair& pair, const std::string& why) {
  const std::string line = "proxy: cannot connect to upstream " + upstream_.name + ": " + why + "\n";
  std::fprintf(stderr, "%s", line.c_str());
  char sink[kChunk];
  for (int i = 0; i < 16 && read(pair.client_.fd_, sink, sizeof sink) > 0; ++i) {
  }
  if (write(pair.client_.fd_, line.data(), line.size()) == -1) {
    // The client is gone already: nobody to tell. The close below is all that is left.
  }
  close_pair(pair);
}
// [end]

// [snippet: abort]
// One side reset, or failed: the pair is over. The other side learns it the same way, with a reset (SO_LINGER 0
// makes close() send one): an orderly EOF would tell it that a cut-off reply was complete. And both sockets are
// closed, whichever side went first.
void Proxy::abort(Pair& pair) {
  // TODO(5): the pair is over. Tell the other side the way it would have heard it, and let go of both sockets.
  // (README, step 5)
  static_cast<void>(pair);
}
// [end]

// Closes both sockets (close() removes their filters) and the pair's timer. Events of this batch about the pair
// are skipped by dispatch(), and the object is freed after the batch (lesson 04).
void Proxy::close_pair(Pair& pair) {
  disarm_timer(pair);
  for (Endpoint* end : {&pair.client_, &pair.upstream_}) {
    if (end->fd_ != -1) close(end->fd_);
    end->fd_ = -1;
  }
  pair.closed_ = true;
  const auto found = pairs_.find(pair.id_);
  closed_.push_back(std::move(found->second));
  pairs_.erase(found);
}
