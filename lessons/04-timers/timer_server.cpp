// Lesson 04: timers inside the event loop.
//
// A line server that answers later without ever waiting: `AFTER ms text` replies `text` after ms milliseconds,
// `EVERY ms n` sends n ticks, one every ms, and any other line comes straight back. A connection that says nothing
// for --idle-ms is told goodbye and closed. Every delay is an EVFILT_TIMER in the same kqueue as the sockets, so
// one thread waits for all of them at once. Read lessons/04-timers/README.md alongside: its numbered steps are the
// TODO(N) gaps of the exercise. The `// [snippet: NAME]` ... `// [end]` lines mark the code README.md quotes:
// leave them where they are.
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kevent_format.hpp"
#include "setup.hpp"

using Clock = std::chrono::steady_clock;

constexpr std::int64_t kMaxDelayMs = 86'400'000;  // a day: the longest AFTER delay or EVERY period accepted
constexpr std::int64_t kMaxTicks = 1'000'000'000;

// [snippet: connection-state]
// Something a client asked for that a timer will finish: an AFTER's reply, or an EVERY's ticks.
struct Job {
  std::string reply;              // AFTER: the text to send when the timer fires
  std::int64_t ticks_sent = 0;    // EVERY: ticks sent so far...
  std::int64_t ticks_total = 0;   // ...out of this many (0 for an AFTER)
};

// What the server remembers about one connection. Every registration of the connection (its socket's read and
// write filters, and all its timers) carries a pointer to this object in udata.
struct Connection {
  int fd_ = -1;
  std::string inbox_;                            // bytes received that do not make a whole line yet
  std::string unsent_;                           // replies not yet written
  bool writing_ = false;                         // is EVFILT_WRITE registered? Exactly while unsent_ is not empty
  bool closed_ = false;                          // closed; the object lives on until the end of the batch
  std::unordered_map<std::uintptr_t, Job> jobs_;  // its AFTER and EVERY timers still pending, by timer ident
  std::uintptr_t idle_timer_ = 0;                // the ident of its idle timer
  Clock::time_point last_heard_;                 // when it last sent us something
};
// [end]

class TimerServer {
 public:
  // Creates the queue and registers the listening socket with it.
  TimerServer(int listener, std::int64_t idle_ms);

  // The event loop: waits for events and hands each to its handler, forever.
  [[noreturn]] void run();

 private:
  int apply(const struct kevent& change);
  void must(const struct kevent& change);
  void dispatch(const struct kevent& event);
  void accept_connections(const struct kevent& event);
  void on_readable(Connection& conn, const struct kevent& event);
  void on_line(Connection& conn, std::string_view line);
  void add_job(Connection& conn, std::int64_t ms, Job job);
  void start_timer(Connection& conn, std::uintptr_t ident, std::int64_t ms, bool repeat);
  void on_timer(Connection& conn, const struct kevent& event);
  void on_idle_timer(Connection& conn);
  void send(Connection& conn, const std::string& text);
  void flush(Connection& conn);
  void close_connection(Connection& conn);

  int kq_;
  int listener_;
  std::chrono::milliseconds idle_;
  std::uintptr_t next_timer_ = 1;  // timer idents are ours to choose: a counter never hands out one twice
  std::unordered_map<int, std::unique_ptr<Connection>> connections_;  // the open ones, by descriptor
  std::vector<std::unique_ptr<Connection>> closed_;  // closed during this batch, freed once it is handled
};

TimerServer::TimerServer(int listener, std::int64_t idle_ms)
    : kq_(kqueue()), listener_(listener), idle_(idle_ms) {
  if (kq_ == -1) kqlab::fail("kqueue");
  struct kevent change;
  EV_SET(&change, listener_, EVFILT_READ, EV_ADD, 0, 0, nullptr);  // udata nullptr: the listening socket
  must(change);
}

// Applies one change to the queue with EV_RECEIPT (lesson 02) and returns the kernel's answer: 0, or the errno
// the change failed with. The caller decides which errors it expects.
int TimerServer::apply(const struct kevent& change) {
  struct kevent with_receipt = change;
  with_receipt.flags |= EV_RECEIPT;
  struct kevent receipt;
  if (kevent(kq_, &with_receipt, 1, &receipt, 1, nullptr) == -1) kqlab::fail("kevent");
  return (receipt.flags & EV_ERROR) ? static_cast<int>(receipt.data) : 0;
}

// Applies a change that cannot fail in a working server: if it does, the server stops, naming it.
void TimerServer::must(const struct kevent& change) {
  if (const int error = apply(change)) kqlab::fail("kevent(" + kqlab::describe(change) + ")", error);
}

// [snippet: event-loop]
void TimerServer::run() {
  struct kevent events[64];
  for (;;) {
    const int ready = kevent(kq_, nullptr, 0, events, static_cast<int>(std::size(events)), nullptr);
    if (ready == -1) {
      if (errno == EINTR) continue;  // a signal the program catches ended the wait (SIGSTOP/SIGCONT never do)
      kqlab::fail("kevent");
    }
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
    // No event of this batch is left to point at the connections closed while handling it: free them now.
    closed_.clear();
  }
}
// [end]

// [snippet: dispatch]
void TimerServer::dispatch(const struct kevent& event) {
  if (event.udata == nullptr) {
    accept_connections(event);
    return;
  }
  Connection& conn = *static_cast<Connection*>(event.udata);
  // A connection closed by an earlier event of this batch: its object is still there (freed after the batch),
  // but it is done with. This event is stale.
  if (conn.closed_) return;
  switch (event.filter) {
    case EVFILT_READ:
      on_readable(conn, event);
      break;
    case EVFILT_WRITE:
      flush(conn);
      break;
    case EVFILT_TIMER:
      on_timer(conn, event);
      break;
    default:
      break;
  }
}
// [end]

void TimerServer::accept_connections(const struct kevent& event) {
  for (std::int64_t waiting = event.data; waiting > 0; --waiting) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);
    auto owned = std::make_unique<Connection>();
    Connection& conn = *owned;
    conn.fd_ = fd;
    conn.last_heard_ = Clock::now();
    conn.idle_timer_ = next_timer_++;
    connections_[fd] = std::move(owned);
    struct kevent change;
    EV_SET(&change, fd, EVFILT_READ, EV_ADD, 0, 0, &conn);
    must(change);
    start_timer(conn, conn.idle_timer_, idle_.count(), false);
  }
}

// EVFILT_READ: reads what arrived and handles each whole line. A client that has hung up (EOF with nothing left
// to read, or an error) is closed at once, and what it asked for is cancelled with it.
void TimerServer::on_readable(Connection& conn, const struct kevent& event) {
  if (event.data == 0 && (event.flags & EV_EOF)) {
    close_connection(conn);
    return;
  }
  char buffer[64 * 1024];
  const ssize_t got = read(conn.fd_, buffer, sizeof buffer);
  if (got == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (got <= 0) {
    close_connection(conn);
    return;
  }
  conn.last_heard_ = Clock::now();  // what the idle timer looks at (step 3)
  conn.inbox_.append(buffer, static_cast<std::size_t>(got));
  std::size_t start = 0;
  for (std::size_t end = conn.inbox_.find('\n'); end != std::string::npos; end = conn.inbox_.find('\n', start)) {
    on_line(conn, std::string_view(conn.inbox_).substr(start, end - start));
    start = end + 1;
    if (conn.closed_) return;  // a reply could not be written: the client is gone, and its other lines with it
  }
  conn.inbox_.erase(0, start);  // keep the start of a line still coming
}

// Reading a command: each take_* consumes what it recognises from the front of `text` and says whether it did.
// A whole number from min to max:
static bool take_number(std::string_view& text, std::int64_t min, std::int64_t max, std::int64_t* value) {
  const auto [stop, error] = std::from_chars(text.data(), text.data() + text.size(), *value);
  if (error != std::errc() || *value < min || *value > max) return false;
  text.remove_prefix(static_cast<std::size_t>(stop - text.data()));
  return true;
}

// One space:
static bool take_space(std::string_view& text) {
  if (!text.starts_with(' ')) return false;
  text.remove_prefix(1);
  return true;
}

void TimerServer::on_line(Connection& conn, std::string_view line) {
  std::int64_t ms = 0;
  std::int64_t count = 0;
  if (line.starts_with("AFTER ")) {
    std::string_view rest = line.substr(6);
    if (!take_number(rest, 0, kMaxDelayMs, &ms) || !take_space(rest)) {
      send(conn, "error: AFTER wants a delay in ms (0 to 86400000), a space and a text\n");
      return;
    }
    add_job(conn, ms, Job{std::string(rest) + "\n", 0, 0});
  } else if (line.starts_with("EVERY ")) {
    std::string_view rest = line.substr(6);
    if (!take_number(rest, 1, kMaxDelayMs, &ms) || !take_space(rest) || !take_number(rest, 1, kMaxTicks, &count) ||
        !rest.empty()) {
      send(conn, "error: EVERY wants a period in ms (1 to 86400000) and a count (1 to 1000000000)\n");
      return;
    }
    add_job(conn, ms, Job{"", 0, count});
  } else {
    send(conn, std::string(line) + "\n");  // anything else comes straight back: it is still an echo server
  }
}

// [snippet: add-job]
// Gives the job a timer of its own: a fresh ident, so that it never replaces another timer (step 1).
void TimerServer::add_job(Connection& conn, std::int64_t ms, Job job) {
  const std::uintptr_t ident = next_timer_++;
  const bool repeat = job.ticks_total > 0;
  conn.jobs_.emplace(ident, std::move(job));
  start_timer(conn, ident, ms, repeat);
}
// [end]

// Arms the timer `ident` of `conn`: it fires `ms` milliseconds from now, then, if `repeat`, every `ms`
// milliseconds until deleted. Adding an ident that exists already restarts that timer with the new values.
void TimerServer::start_timer(Connection& conn, std::uintptr_t ident, std::int64_t ms, bool repeat) {
  // TODO(1): register the timer: which flags, which unit, which udata? Until this is done no timer exists: AFTER
  // and EVERY never answer and nobody is ever closed for being idle. (README, step 1; stuck? ./kqlab hint 4)
  // Each gap's static_casts only keep the compiler quiet about parameters it does not use yet: delete them.
  static_cast<void>(conn), static_cast<void>(ident), static_cast<void>(ms), static_cast<void>(repeat);
}

// EVFILT_TIMER: one of the connection's timers fired. Sends what its job owes now, and forgets a job that is done.
void TimerServer::on_timer(Connection& conn, const struct kevent& event) {
  if (event.ident == conn.idle_timer_) {
    on_idle_timer(conn);
    return;
  }
  // TODO(2): send what this timer's job owes now (an AFTER's reply, an EVERY's ticks: how many?), and forget the
  // job once it is done. Is the timer gone by then? (README, step 2)
}

// The idle timer fired. If the client has sent nothing for --idle-ms, says goodbye and closes the connection;
// otherwise makes the timer fire again when the client will have been silent that long, if it stays silent.
void TimerServer::on_idle_timer(Connection& conn) {
  // TODO(3): goodbye and close if the client has been silent for --idle-ms; if it has spoken since, arm the timer
  // again for what is left. (README, step 3)
  static_cast<void>(conn);
}

// Queues `text` for the client and writes what the socket takes now.
void TimerServer::send(Connection& conn, const std::string& text) {
  conn.unsent_ += text;
  flush(conn);
}

// Writes what the socket takes now; EVFILT_WRITE is registered exactly while something is left (lesson 01).
void TimerServer::flush(Connection& conn) {
  while (!conn.unsent_.empty()) {
    const ssize_t sent = write(conn.fd_, conn.unsent_.data(), conn.unsent_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (sent == -1) {
      close_connection(conn);  // EPIPE, ECONNRESET: the client went away
      return;
    }
    conn.unsent_.erase(0, static_cast<std::size_t>(sent));
  }
  const bool pending = !conn.unsent_.empty();
  if (pending != conn.writing_) {
    struct kevent change;
    EV_SET(&change, conn.fd_, EVFILT_WRITE, pending ? EV_ADD : EV_DELETE, 0, 0, &conn);
    must(change);
    conn.writing_ = pending;
  }
}

// Closes the connection and ends everything it had going. Events about it may still be waiting further on in the
// batch being handled: dispatch() skips those whose connection is marked closed.
void TimerServer::close_connection(Connection& conn) {
  // TODO(4): close the connection and end everything it had going; keep its object alive until the batch is done.
  // Does closing the socket end its timers? (README, step 4)
  static_cast<void>(conn);
}

int main(int argc, char** argv) {
  long long idle_ms = 60'000;
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A line server with timers: AFTER ms text, EVERY ms n; other lines are echoed.",
      {{"--idle-ms", "close a connection that has sent nothing for this many milliseconds", 1, kMaxDelayMs,
        &idle_ms}});
  std::signal(SIGPIPE, SIG_IGN);  // a write to a vanished client fails with EPIPE instead of killing us
  const int listener = kqlab::open_listener(address);
  TimerServer server(listener, idle_ms);
  kqlab::announce_listening(listener);
  server.run();
}
