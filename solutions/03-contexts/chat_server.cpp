// Lesson 03: contexts. A chat server: each line a client sends goes to every other client, prefixed with the
// sender's name. Each connection is an object, and its address is the udata of its registrations, so an event
// leads straight to the connection it is about. Read lessons/03-contexts/README.md alongside: its numbered steps
// are the TODO(N) gaps of the exercise. The `// [snippet: NAME]` ... `// [end]` lines mark the code README.md
// quotes: leave them where they are.
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kevent_format.hpp"
#include "setup.hpp"

// [snippet: connection]
// One client's connection: everything the server knows about it. Its address is the udata of both its
// registrations, so each of its events leads straight here.
struct Connection {
  int fd_ = -1;
  std::string name_;       // the client's address, such as 127.0.0.1:50312: the prefix of its lines
  std::string input_;      // bytes received that do not make a whole line yet
  std::string output_;     // bytes owed to this client that its socket has not taken yet
  bool writing_ = false;   // is its EVFILT_WRITE enabled? Exactly while output_ is not empty.
  bool closed_ = false;    // closed during this batch: an event of the batch that still points here is stale
};
// [end]

class ChatServer {
 public:
  // Creates the queue and registers the listening socket. A client that falls more than `max_backlog` bytes
  // behind (bytes owed to it that its socket has not taken) is disconnected.
  ChatServer(int listener, std::size_t max_backlog);

  // The event loop, as in lesson 02: one kevent() call per turn, then each event to its handler; forever.
  [[noreturn]] void run();

 private:
  void register_now(std::vector<struct kevent> changes);
  void change(Connection& connection, short filter, unsigned short flags);
  int wait(std::vector<struct kevent>& events);
  void dispatch(const struct kevent& event);
  void accept_connections();
  void on_readable(Connection& connection);
  void broadcast(const Connection& sender, std::string_view line);
  void send_to(Connection& connection, std::string_view text);
  void flush(Connection& connection);
  void close_connection(Connection& connection);
  void free_closed();

  int kq_;
  int listener_;
  std::size_t max_backlog_;
  std::vector<std::unique_ptr<Connection>> connections_;  // owns them all; free_closed() frees the closed ones
  std::vector<struct kevent> changes_;  // made during this loop turn, handed to the kernel by the next wait()
};

ChatServer::ChatServer(int listener, std::size_t max_backlog)
    : kq_(kqueue()), listener_(listener), max_backlog_(max_backlog) {
  if (kq_ == -1) kqlab::fail("kqueue");
  struct kevent listening;
  EV_SET(&listening, listener_, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, nullptr);
  register_now({listening});
}

// As in lesson 02: applies `changes` at once, and stops the server if the kernel refuses any of them.
void ChatServer::register_now(std::vector<struct kevent> changes) {
  for (struct kevent& change : changes) change.flags |= EV_RECEIPT;
  std::vector<struct kevent> receipts(changes.size());
  const int count = static_cast<int>(changes.size());
  const int answered = kevent(kq_, changes.data(), count, receipts.data(), count, nullptr);
  if (answered == -1) kqlab::fail("kevent");
  for (int i = 0; i < answered; ++i) {
    if ((receipts[i].flags & EV_ERROR) && receipts[i].data != 0) {
      kqlab::fail("kevent(" + kqlab::describe(changes[i]) + ")", static_cast<int>(receipts[i].data));
    }
  }
}

// [snippet: change]
// Queues a change to one of `connection`'s registrations for the next wait(). Its udata is always the
// connection's address: every change but a delete replaces the udata the kernel keeps, EV_ENABLE and EV_DISABLE
// included, so a change that passed anything else would leave the next event pointing elsewhere.
void ChatServer::change(Connection& connection, short filter, unsigned short flags) {
  struct kevent& change = changes_.emplace_back();
  EV_SET(&change, connection.fd_, filter, flags, 0, 0, &connection);
}
// [end]

// [snippet: event-loop]
// Each turn: one kevent() call, each event to its handler, and only then, with no event of the batch left to
// point at them, the connections closed during the batch are freed.
void ChatServer::run() {
  std::vector<struct kevent> events(64);
  for (;;) {
    const int ready = wait(events);
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
    free_closed();
  }
}
// [end]

// As in lesson 02: hands the kernel the changes made since the last call, and waits for events.
int ChatServer::wait(std::vector<struct kevent>& events) {
  if (events.size() < changes_.size()) events.resize(changes_.size());
  const int ready = kevent(kq_, changes_.data(), static_cast<int>(changes_.size()), events.data(),
                           static_cast<int>(events.size()), nullptr);
  changes_.clear();  // applied, even when a signal interrupted the wait
  if (ready == -1) {
    if (errno == EINTR) return 0;
    kqlab::fail("kevent");
  }
  return ready;
}

void ChatServer::dispatch(const struct kevent& event) {
  if (event.flags & EV_ERROR) {
    kqlab::fail("kevent(" + kqlab::describe(event) + ")", static_cast<int>(event.data));
  }
  if (static_cast<int>(event.ident) == listener_) {
    accept_connections();
    return;
  }
  // udata is the connection itself: no lookup. It may have been closed by an earlier event of this batch (a
  // failed write while broadcasting, say); its memory stays valid until free_closed(), and closed_ says so.
  Connection& connection = *static_cast<Connection*>(event.udata);
  if (connection.closed_) return;  // a stale event
  if (event.filter == EVFILT_READ) {
    on_readable(connection);
  } else if (event.filter == EVFILT_WRITE) {
    flush(connection);
  }
}

// As in lesson 02, accepts until EAGAIN; each new connection becomes an object, whose address goes in udata.
void ChatServer::accept_connections() {
  for (;;) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);
    Connection& connection = *connections_.emplace_back(std::make_unique<Connection>());
    connection.fd_ = fd;
    connection.name_ = kqlab::peer_address(fd);
    if (connection.name_.empty()) connection.name_ = "a client already gone";
    // Reading: edge-triggered, as in lesson 02. Writing: level-triggered but disabled; flush() enables it while
    // output is pending, and disables it once all is written.
    change(connection, EVFILT_READ, EV_ADD | EV_CLEAR);
    change(connection, EVFILT_WRITE, EV_ADD | EV_DISABLE);
  }
}

// Reads until EAGAIN, as in lesson 02, and hands each whole line to broadcast(). A client that has finished
// sending has left the chat: it is closed, and what it was still owed is dropped.
void ChatServer::on_readable(Connection& connection) {
  for (;;) {
    char buffer[16 * 1024];
    const ssize_t got = read(connection.fd_, buffer, sizeof buffer);
    if (got > 0) {
      connection.input_.append(buffer, static_cast<std::size_t>(got));
      std::size_t start = 0;
      for (std::size_t end; (end = connection.input_.find('\n', start)) != std::string::npos; start = end + 1) {
        broadcast(connection, std::string_view(connection.input_).substr(start, end + 1 - start));
      }
      connection.input_.erase(0, start);
    } else if (got == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else if (got == 0 || errno != EINTR) {
      close_connection(connection);  // the end of its stream, or ECONNRESET and friends
      return;
    }
  }
}

// Sends `line`, prefixed with the sender's name, to every other connection still open.
void ChatServer::broadcast(const Connection& sender, std::string_view line) {
  std::string text = sender.name_;
  text += ": ";
  text += line;
  // send_to() may close the connection it sends to. Closing only marks it, so connections_ keeps its size and its
  // order until the batch is done; an index, unlike an iterator, stays meaningful even if it did not.
  for (std::size_t i = 0; i < connections_.size(); ++i) {
    Connection& other = *connections_[i];
    if (&other != &sender && !other.closed_) send_to(other, text);
  }
}

// Queues `text` for `connection` and writes it if the socket takes it; disconnects a client that has fallen more
// than max_backlog_ bytes behind.
void ChatServer::send_to(Connection& connection, std::string_view text) {
  if (connection.output_.size() + text.size() > max_backlog_) {
    // It reads too slowly for this chat: keeping all it is owed would let one client take the server's memory.
    std::fprintf(stderr, "disconnected %s: more than %zu bytes waiting for it (--max-backlog %zu)\n",
                 connection.name_.c_str(), max_backlog_, max_backlog_);
    close_connection(connection);
    return;
  }
  const bool was_idle = connection.output_.empty();
  connection.output_ += text;
  // Output already pending means the socket was full when last tried and EVFILT_WRITE is enabled: it will say
  // when there is room. Only an idle connection is worth a write now.
  if (was_idle) flush(connection);
}

// Writes as much of the connection's output as its socket takes now, and has EVFILT_WRITE enabled exactly while
// something is left. Closes the connection when writing fails.
void ChatServer::flush(Connection& connection) {
  while (!connection.output_.empty()) {
    const ssize_t sent = write(connection.fd_, connection.output_.data(), connection.output_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (sent == -1 && errno == EINTR) continue;
    if (sent == -1) {
      close_connection(connection);  // EPIPE, ECONNRESET: the client went away
      return;
    }
    connection.output_.erase(0, static_cast<std::size_t>(sent));
  }
  // Level-triggered and enabled, EVFILT_WRITE fires on every wait while the socket has room: that is what we
  // want while output waits, and a spinning loop once none does. So it follows the output, on and off.
  const bool pending = !connection.output_.empty();
  if (pending != connection.writing_) {
    change(connection, EVFILT_WRITE, pending ? EV_ENABLE : EV_DISABLE);
    connection.writing_ = pending;
  }
}

// Closes the connection now, and leaves its memory for free_closed(), after the batch.
void ChatServer::close_connection(Connection& connection) {
  close(connection.fd_);  // removes both its registrations from the queue
  // Changes queued for it and not yet handed over would reach a closed descriptor (EBADF), or a new connection
  // that accept() gives the same number: drop them.
  std::erase_if(changes_, [&connection](const struct kevent& change) { return change.udata == &connection; });
  // Events of this batch may still point at it. dispatch() skips them, seeing closed_; so the memory must live
  // until the batch is done.
  connection.closed_ = true;
}

// [snippet: free-closed]
// Frees the connections closed during the batch just handled. No event of it is left to point at them, and the
// next wait() returns none: their registrations went with close().
void ChatServer::free_closed() {
  std::erase_if(connections_, [](const std::unique_ptr<Connection>& connection) { return connection->closed_; });
}
// [end]

int main(int argc, char** argv) {
  long long max_backlog = 1 << 20;
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A chat server on kqueue: each line a client sends goes to all the others.",
      {{"--max-backlog", "disconnect a client when more than this many bytes wait to be sent to it", 1, 1LL << 40,
        &max_backlog}});
  std::signal(SIGPIPE, SIG_IGN);  // a write to a reset connection fails with EPIPE instead of killing us
  const int listener = kqlab::open_listener(address);
  ChatServer server(listener, static_cast<std::size_t>(max_backlog));
  kqlab::announce_listening(listener);
  server.run();
}
