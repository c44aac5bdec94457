// Lesson 05: when things go wrong.
//
// A line server that survives its clients. Each line it receives is a request: `GET n` asks for n bytes of a known
// pattern (a reply bigger than any buffer), and any other line comes straight back. Clients reset connections in
// the middle of a reply, half-close them, connect and vanish, flood the server with garbage, send lines that never
// end, and connect faster than the server has descriptors for; signals interrupt it. Through all of that it serves
// every other client, loses no byte it owes to one that reads, and leaks nothing. Read
// lessons/05-errors/README.md alongside: its numbered steps are the TODO(N) gaps of the exercise. The
// `// [snippet: NAME]` ... `// [end]` lines mark the code README.md quotes: leave them where they are.
#include <fcntl.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
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

constexpr std::int64_t kMaxGet = 1LL << 30;  // the largest GET: a gigabyte, never in memory at once
constexpr std::size_t kChunk = 64 * 1024;    // how much of a GET's pattern is made at a time, and read() size
constexpr char kFull[] = "error: server full, try again later\n";

// Set by the SIGUSR1 handler; the loop prints the statistics when it sees it (step 3).
volatile std::sig_atomic_t stats_wanted = 0;
extern "C" void ask_for_stats(int) { stats_wanted = 1; }

// What the server remembers about one connection. Its registrations carry a pointer to it in udata.
struct Connection {
  int fd_ = -1;
  std::string inbox_;              // bytes received and not served yet: lines waiting their turn, or part of one
  std::string unsent_;             // replies made and not written yet
  std::uint64_t get_offset_ = 0;   // a GET in progress: where the pattern continues,
  std::uint64_t get_left_ = 0;     // and how many of its bytes are still to be made
  bool reading_ = true;            // is its EVFILT_READ enabled?
  bool writing_ = false;           // is its EVFILT_WRITE registered?
  bool peer_done_ = false;         // the client has finished sending (an orderly EOF): close once all is sent
  bool closing_ = false;           // we have said our last word (a line too long): close once all is sent
  bool closed_ = false;            // closed; the object lives on until the end of the batch
};

class RobustServer {
 public:
  // Creates the queue, registers the listening socket, and sets a descriptor aside (step 4).
  RobustServer(int listener, std::int64_t max_line, std::int64_t max_pending);

  // The event loop: waits for events and hands each to its handler, forever.
  [[noreturn]] void run();

 private:
  int apply(const struct kevent& change);
  void must(const struct kevent& change);
  void dispatch(const struct kevent& event);
  void accept_connections(const struct kevent& event);
  void on_readable(Connection& conn, const struct kevent& event);
  void receive(Connection& conn);
  void on_eof(Connection& conn, int error);
  void advance(Connection& conn);
  void serve(Connection& conn);
  void on_line(Connection& conn, std::string_view line);
  void refuse_long_line(Connection& conn);
  void turn_away(int fd);
  bool write_out(Connection& conn);
  bool owes_nothing(const Connection& conn) const;
  void update_interest(Connection& conn);
  void close_connection(Connection& conn);
  void print_stats() const;

  int kq_;
  int listener_;
  int spare_;                  // a descriptor kept open to be given up at the descriptor limit (step 4)
  std::size_t max_line_;       // --max-line
  std::size_t max_pending_;    // --max-pending
  std::unordered_map<int, std::unique_ptr<Connection>> connections_;  // the open ones, by descriptor
  std::vector<std::unique_ptr<Connection>> closed_;  // closed during this batch, freed once it is handled
  struct {
    std::uint64_t accepted, refused, too_long, resets;
  } counts_{};
};

RobustServer::RobustServer(int listener, std::int64_t max_line, std::int64_t max_pending)
    : kq_(kqueue()),
      listener_(listener),
      spare_(open("/dev/null", O_RDONLY | O_CLOEXEC)),
      max_line_(static_cast<std::size_t>(max_line)),
      max_pending_(static_cast<std::size_t>(max_pending)) {
  if (kq_ == -1) kqlab::fail("kqueue");
  if (spare_ == -1) kqlab::fail("open /dev/null");
  struct kevent change;
  EV_SET(&change, listener_, EVFILT_READ, EV_ADD, 0, 0, nullptr);  // udata nullptr: the listening socket
  must(change);
}

// [snippet: apply]
// Applies one change with EV_RECEIPT and returns the kernel's answer for it: 0, or the errno it failed with.
int RobustServer::apply(const struct kevent& change) {
  struct kevent with_receipt = change;
  with_receipt.flags |= EV_RECEIPT;
  struct kevent receipt;
  // Room for the receipt: a change that fails with no room in the eventlist makes kevent() itself fail instead.
  if (kevent(kq_, &with_receipt, 1, &receipt, 1, nullptr) == -1) kqlab::fail("kevent");
  // The EV_ERROR bit, never `flags == EV_ERROR`: macOS returns the change's own flags with EV_ERROR added.
  return (receipt.flags & EV_ERROR) ? static_cast<int>(receipt.data) : 0;
}

// Applies a change that cannot fail in a working server: if it does, the server stops, naming it.
void RobustServer::must(const struct kevent& change) {
  if (const int error = apply(change)) kqlab::fail("kevent(" + kqlab::describe(change) + ")", error);
}
// [end]

void RobustServer::run() {
  struct kevent events[64];
  for (;;) {
    const int ready = kevent(kq_, nullptr, 0, events, static_cast<int>(std::size(events)), nullptr);
    // TODO(3): did the wait end early, or fail? And has someone asked for the statistics? (README, step 3)
    if (ready == -1) continue;
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
    closed_.clear();  // no event of this batch is left to point at the connections closed while handling it
  }
}

void RobustServer::dispatch(const struct kevent& event) {
  if (event.udata == nullptr) {
    accept_connections(event);
    return;
  }
  Connection& conn = *static_cast<Connection*>(event.udata);
  if (conn.closed_) return;  // closed by an earlier event of this batch: this one is stale
  if (event.filter == EVFILT_READ) {
    on_readable(conn, event);
  } else if (event.filter == EVFILT_WRITE) {
    advance(conn);  // room to write (or, with EV_EOF, a write that will fail and close the connection)
  }
}

// The listening socket is readable: event.data connections are waiting. Accepts them all, and at the descriptor
// limit turns away those that do not fit, so that the waiting queue empties either way.
void RobustServer::accept_connections(const struct kevent& event) {
  for (std::int64_t waiting = event.data; waiting > 0; --waiting) {
    const int fd = accept(listener_, nullptr, nullptr);
    // TODO(4): at the descriptor limit, accept() fails with EMFILE (or ENFILE) and the connection stays in the
    // queue. Returning, as below, makes the server spin; turn it away instead. (README, step 4)
    if (fd == -1) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);
    auto owned = std::make_unique<Connection>();
    Connection& conn = *owned;
    conn.fd_ = fd;
    connections_[fd] = std::move(owned);
    ++counts_.accepted;
    struct kevent change;
    EV_SET(&change, fd, EVFILT_READ, EV_ADD, 0, 0, &conn);
    must(change);
  }
}

// [snippet: on-readable]
// EVFILT_READ on a client. EV_EOF says the client's sending side has ended, and fflags why: 0 for an orderly end
// (the client shut down its sending side or closed), or the socket's error, ECONNRESET when it reset.
void RobustServer::on_readable(Connection& conn, const struct kevent& event) {
  if ((event.flags & EV_EOF) && event.fflags != 0) {
    // A reset: what is left to read is moot, and nothing we send can arrive. (The error stays in the socket too,
    // as getsockopt(SO_ERROR) would show: a read() now would fail with it, once.)
    on_eof(conn, static_cast<int>(event.fflags));
  } else if (event.data > 0) {
    receive(conn);  // bytes first: an orderly EOF can come with data still waiting (lesson 01)
  } else if (event.flags & EV_EOF) {
    on_eof(conn, 0);
  }
}
// [end]

// Reads what has arrived, one buffer at a time (a client that floods the server waits for the next event, and the
// others get their turn meanwhile), and serves it.
void RobustServer::receive(Connection& conn) {
  char buffer[kChunk];
  const ssize_t got = read(conn.fd_, buffer, sizeof buffer);
  if (got > 0) {
    conn.inbox_.append(buffer, static_cast<std::size_t>(got));
    advance(conn);
  } else if (got == 0) {
    on_eof(conn, 0);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    on_eof(conn, errno);  // ECONNRESET, ETIMEDOUT: the connection failed
  }
}

// The client will send nothing more: `error` is 0 for an orderly end, or what broke the connection (ECONNRESET).
void RobustServer::on_eof(Connection& conn, int error) {
  // TODO(1): the client will send nothing more. A reset and an orderly end call for different things: what does
  // each owe the client? (README, step 1; stuck? ./kqlab hint 5)
  // Each gap's static_casts only keep the compiler quiet about parameters it does not use yet: delete them.
  static_cast<void>(conn), static_cast<void>(error);
}

// Does everything that can be done for the connection now: serves the requests waiting in inbox_, writes what the
// socket takes, and sets the connection's interests to match what is left. Every handler ends here.
void RobustServer::advance(Connection& conn) {
  // Round again while a GET that has just been written out lets the requests queued behind it be served now.
  do {
    serve(conn);
    if (!write_out(conn)) return;  // the client is gone, and the connection closed
  } while (!conn.closing_ && conn.get_left_ == 0 && conn.unsent_.size() < max_pending_ &&
           conn.inbox_.find('\n') != std::string::npos);
  if (owes_nothing(conn) && (conn.peer_done_ || conn.closing_)) {
    close_connection(conn);
    return;
  }
  update_interest(conn);
}

// Serves the whole lines waiting in inbox_, in order, while the connection may be given more: no GET in progress,
// and less than --max-pending bytes made and not written. Refuses a line longer than --max-line.
void RobustServer::serve(Connection& conn) {
  // TODO(5): serve the whole lines waiting in conn.inbox_ with on_line(), in order, while the connection may be given
  // more; refuse a line longer than max_line_. (README, step 5)
  static_cast<void>(conn);
}

// One request. Garbage is a request too: any line that is not a well-formed GET comes back as it is, bytes and
// all, and a malformed GET gets an error line. Nothing a client sends can make the parsing throw or overflow.
void RobustServer::on_line(Connection& conn, std::string_view line) {
  if (!line.starts_with("GET ")) {
    conn.unsent_.append(line);
    conn.unsent_ += '\n';
    return;
  }
  const std::string_view number = line.substr(4);
  std::int64_t count = 0;
  const auto [stop, error] = std::from_chars(number.data(), number.data() + number.size(), count);
  if (error != std::errc() || stop != number.data() + number.size() || count < 0 || count > kMaxGet) {
    conn.unsent_ += "error: GET wants a byte count from 0 to " + std::to_string(kMaxGet) + "\n";
    return;
  }
  conn.get_offset_ = 0;
  conn.get_left_ = static_cast<std::uint64_t>(count);
}

// Tells the client that its line is too long, after everything owed before it, and marks the connection to be
// closed once that is sent (advance() closes it). What is left of its input is dropped.
void RobustServer::refuse_long_line(Connection& conn) {
  conn.unsent_ += "error: line longer than " + std::to_string(max_line_) + " bytes\n";
  conn.closing_ = true;
  conn.inbox_.clear();
  ++counts_.too_long;
}

// Tells a connection the server has no room for it, and closes it. A fresh socket's send buffer is empty, so the
// line fits; but the client may be gone already (EPIPE, ECONNRESET): then there is nobody to tell.
void RobustServer::turn_away(int fd) {
  if (write(fd, kFull, sizeof kFull - 1) == -1) {
    // Nothing to do: the close below is all that is left.
  }
  close(fd);
  ++counts_.refused;
}

// The pattern a GET sends: the byte at offset o is byte o % 8 of the 64-bit big-endian number o - o % 8. A byte
// lost, repeated or out of order shows.
static void append_pattern(std::string& out, std::uint64_t offset, std::size_t count) {
  const std::size_t start = out.size();
  out.resize(start + count);
  for (std::size_t i = 0; i < count; ++i, ++offset) {
    out[start + i] = static_cast<char>((offset - offset % 8) >> (8 * (7 - offset % 8)) & 0xff);
  }
}

// [snippet: write-out]
// Writes what the socket takes now: unsent_, and then the rest of a GET, made a chunk at a time as the socket
// takes it. Returns false if the client is gone (and the connection closed).
bool RobustServer::write_out(Connection& conn) {
  for (;;) {
    if (conn.unsent_.empty() && conn.get_left_ > 0) {
      const std::size_t size = static_cast<std::size_t>(std::min<std::uint64_t>(conn.get_left_, kChunk));
      append_pattern(conn.unsent_, conn.get_offset_, size);
      conn.get_offset_ += size;
      conn.get_left_ -= size;
    }
    if (conn.unsent_.empty()) return true;
    const ssize_t sent = write(conn.fd_, conn.unsent_.data(), conn.unsent_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;  // full: EVFILT_WRITE says when not
    if (sent == -1) {
      // EPIPE (the client closed, or reset and we were told) or ECONNRESET: it is gone. That is this client's
      // problem only: close it, and go on serving the others (step 2).
      if (errno == ECONNRESET) ++counts_.resets;
      close_connection(conn);
      return false;
    }
    conn.unsent_.erase(0, static_cast<std::size_t>(sent));
  }
}
// [end]

bool RobustServer::owes_nothing(const Connection& conn) const {
  return conn.unsent_.empty() && conn.get_left_ == 0;
}

// [snippet: update-interest]
// Registers exactly the interests the connection needs now. Reading, while the server may take more from it: not
// once it has finished sending or been refused, not while it owes it --max-pending bytes or more (the client
// must read before it may send more: TCP then makes a flooding client wait, and the server's memory stays
// bounded), and not while a GET runs with the next request already waiting. Writing, while something is owed.
void RobustServer::update_interest(Connection& conn) {
  const bool read = !conn.peer_done_ && !conn.closing_ && conn.unsent_.size() < max_pending_ &&
                    (conn.get_left_ == 0 || conn.inbox_.empty());
  const bool write = !owes_nothing(conn);
  struct kevent change;
  if (read != conn.reading_) {
    // EV_DISABLE keeps the registration and stops its events; EV_ENABLE brings them back, including a condition
    // that arose meanwhile (data that came, an EOF).
    EV_SET(&change, conn.fd_, EVFILT_READ, read ? EV_ENABLE : EV_DISABLE, 0, 0, &conn);
    must(change);
    conn.reading_ = read;
  }
  if (write != conn.writing_) {
    EV_SET(&change, conn.fd_, EVFILT_WRITE, write ? EV_ADD : EV_DELETE, 0, 0, &conn);
    must(change);
    conn.writing_ = write;
  }
}
// [end]

// Closes the connection. close() removes its registrations; events of this batch that are about it are skipped
// by dispatch(), and its object is freed after the batch (lesson 04).
void RobustServer::close_connection(Connection& conn) {
  close(conn.fd_);
  conn.closed_ = true;
  const auto found = connections_.find(conn.fd_);
  closed_.push_back(std::move(found->second));
  connections_.erase(found);
}

void RobustServer::print_stats() const {
  std::fprintf(stderr,
               "stats: %zu open, %llu accepted, %llu refused at the descriptor limit, %llu lines too long, "
               "%llu resets\n",
               connections_.size(), static_cast<unsigned long long>(counts_.accepted),
               static_cast<unsigned long long>(counts_.refused), static_cast<unsigned long long>(counts_.too_long),
               static_cast<unsigned long long>(counts_.resets));
}

int main(int argc, char** argv) {
  long long max_line = 4096;
  long long max_pending = 1 << 20;
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A line server that survives its clients: GET n sends n bytes; other lines are echoed.",
      {{"--max-line", "refuse, and close, a connection whose line grows longer than this many bytes", 16, 1 << 20,
        &max_line},
       {"--max-pending", "stop reading from a client owed this many bytes until it reads them", 4096, 1 << 30,
        &max_pending}});
  // TODO(2): a client that vanishes while we write to it must not take the server with it. (README, step 2)
  // SIGUSR1 asks for the statistics on stderr. The handler only sets a flag: the loop does the work (step 3).
  struct sigaction action{};
  action.sa_handler = ask_for_stats;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGUSR1, &action, nullptr) == -1) kqlab::fail("sigaction");
  const int listener = kqlab::open_listener(address);
  RobustServer server(listener, max_line, max_pending);
  kqlab::announce_listening(listener);
  server.run();
}
