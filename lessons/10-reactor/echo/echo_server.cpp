// Lesson 10: the echo server again, on the reactor. Lesson 01's server in a few dozen lines, and not one kevent():
// each connection reads some bytes, writes them all back, and reads again, one handler starting the next.
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>

#include "reactor.hpp"
#include "setup.hpp"

namespace {

using reactor::Reactor;

// One client. It lives as long as one of its operations is pending: each handler holds it (self).
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Reactor& reactor, int fd) : reactor_(reactor), fd_(fd) {}

  void read() {
    reactor_.async_read(fd_, buffer_, [self = shared_from_this()](int error, std::size_t bytes) {
      // The end of the stream (0 bytes), or a reset: all that came before is echoed already.
      if (error != 0 || bytes == 0) return self->reactor_.close(self->fd_);
      self->write(bytes);
    });
  }

 private:
  // Reading waits until the write is done: a client that does not read its echo is not read from either.
  void write(std::size_t bytes) {
    reactor_.async_write(fd_, std::span(buffer_.data(), bytes), [self = shared_from_this()](int error, std::size_t) {
      if (error != 0) return self->reactor_.close(self->fd_);
      self->read();
    });
  }

  Reactor& reactor_;
  int fd_;
  std::array<char, 16 * 1024> buffer_;
};

// A descriptor kept open to be given up at the descriptor limit (lesson 05, step 4); -1 while given up.
int spare = -1;

// Takes the spare descriptor back if it was given up. False: there is still no descriptor for it.
bool take_spare_back() {
  if (spare == -1) spare = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return spare != -1;
}

void accept_clients(Reactor& reactor, int listener) {
  reactor.async_accept(listener, [&reactor, listener](int error, int fd) {
    if (error == 0 && !take_spare_back()) {
      // A connection that took the spare's place (below), with no descriptor freed since: turn it away (closed at
      // once), and take the spare back.
      ::close(fd);
      take_spare_back();
      accept_clients(reactor, listener);
    } else if (error == 0) {
      reactor.open(fd);
      std::make_shared<Connection>(reactor, fd)->read();
      accept_clients(reactor, listener);
    } else if ((error == EMFILE || error == ENFILE) && spare != -1) {
      // At the descriptor limit. Waiting for a free descriptor would leave every client in the queue waiting with
      // it, and under EV_CLEAR the queue is not reported again for those already there. Give up the spare: the
      // next accept() takes the first connection waiting, to be turned away above; with none waiting, it waits for
      // the next one, with room for it.
      ::close(spare);
      spare = -1;
      accept_clients(reactor, listener);
    } else {
      // Out of memory for the connection (ENOBUFS, ENOMEM), or out of descriptors with the spare given up already:
      // accepting again at once would fail again at once, in a loop. Try again a little later.
      std::fprintf(stderr, "accept: %s\n", std::strerror(error));
      reactor.after(std::chrono::milliseconds(100), [&reactor, listener](int) { accept_clients(reactor, listener); });
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  const kqlab::Address address =
      kqlab::parse_arguments(argc, argv, "An echo server on a reactor: every client gets back what it sends.");
  std::signal(SIGPIPE, SIG_IGN);  // a write to a reset connection fails with EPIPE instead of killing the server
  const int listener = kqlab::open_listener(address);
  if (!take_spare_back()) kqlab::fail("open /dev/null");
  Reactor reactor;
  reactor.open(listener);
  accept_clients(reactor, listener);
  kqlab::announce_listening(listener);
  reactor.run();
}
