// Lesson 10: a chat server on the reactor. Every line a client sends reaches every other client, prefixed with the
// sender's name, its address as the server sees it ("127.0.0.1:52114: hello"). Each member reads lines and keeps an
// outbox of lines to deliver, written one at a time, in order.
#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <unordered_set>

#include "reactor.hpp"
#include "setup.hpp"

namespace {

using reactor::Reactor;

// Lesson 05's input limit: a "line" longer than this is not a line but an attack, and its sender is let go.
constexpr std::size_t kLongestLine = 4096;
// Lesson 03's output limit: a member this many bytes behind reads too slowly for the room, and is let go rather
// than buffered for without end.
constexpr std::size_t kMostBehind = 1 << 20;

class Member;
using Room = std::unordered_set<std::shared_ptr<Member>>;  // who is connected: the room keeps each member alive

class Member : public std::enable_shared_from_this<Member> {
 public:
  Member(Reactor& reactor, Room& room, int fd, std::string name)
      : reactor_(reactor), room_(room), fd_(fd), name_(std::move(name)) {}

  void read() {
    reactor_.async_read(fd_, buffer_, [self = shared_from_this()](int error, std::size_t bytes) {
      if (error != 0 || bytes == 0) return self->leave();
      self->take(bytes);
      if (self->fd_ != -1) self->read();  // take() may have let it go
    });
  }

  // Queues a line for this member. async_write never calls back from inside, so this is safe in the middle of a
  // broadcast: nothing else happens until the broadcast is over.
  void deliver(const std::string& line) {
    if (behind_ + line.size() > kMostBehind) {
      // Too slow for the room: let it go, later, from the loop (leaving changes the room, which is being walked).
      reactor_.post([self = shared_from_this()] { self->leave(); });
      return;
    }
    behind_ += line.size();
    outbox_.push_back(line);
    if (outbox_.size() == 1) write_next();
  }

 private:
  // Complete lines go to everyone else; a partial one waits for its end, up to kLongestLine bytes.
  void take(std::size_t bytes) {
    partial_.append(buffer_.data(), bytes);
    std::size_t end = 0;
    while ((end = partial_.find('\n')) != std::string::npos) {
      const std::string line = name_ + ": " + partial_.substr(0, end + 1);
      partial_.erase(0, end + 1);
      for (const auto& member : room_) {
        if (member.get() != this) member->deliver(line);
      }
    }
    if (partial_.size() > kLongestLine) leave();
  }

  // The outbox's first line is written while it stays first (a deque never moves its elements), then dropped.
  void write_next() {
    reactor_.async_write(fd_, outbox_.front(), [self = shared_from_this()](int error, std::size_t) {
      if (error != 0) return self->leave();
      self->behind_ -= self->outbox_.front().size();
      self->outbox_.pop_front();
      if (!self->outbox_.empty()) self->write_next();
    });
  }

  // Closing cancels the other pending operation, whose handler then comes here again: once is enough.
  void leave() {
    if (fd_ == -1) return;
    reactor_.close(std::exchange(fd_, -1));
    room_.erase(shared_from_this());
  }

  Reactor& reactor_;
  Room& room_;
  int fd_;
  const std::string name_;
  std::array<char, 4096> buffer_;
  std::string partial_;
  std::deque<std::string> outbox_;
  std::size_t behind_ = 0;  // the bytes in outbox_
};

// A connection's name: the client's address and port, as getnameinfo() spells them.
std::string peer_name(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  char host[NI_MAXHOST] = "?";
  char port[NI_MAXSERV] = "?";
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    getnameinfo(reinterpret_cast<sockaddr*>(&address), length, host, sizeof host, port, sizeof port,
                NI_NUMERICHOST | NI_NUMERICSERV);
  }
  return address.ss_family == AF_INET6 ? std::string("[") + host + "]:" + port : std::string(host) + ":" + port;
}

// A descriptor kept open to be given up at the descriptor limit (lesson 05, step 4); -1 while given up.
int spare = -1;

// Takes the spare descriptor back if it was given up. False: there is still no descriptor for it.
bool take_spare_back() {
  if (spare == -1) spare = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return spare != -1;
}

// Accepts as the echo server does (echo/echo_server.cpp): at the descriptor limit, the spare turns a connection
// away, so the queue empties and nobody waits in it for a descriptor.
void accept_members(Reactor& reactor, Room& room, int listener) {
  reactor.async_accept(listener, [&reactor, &room, listener](int error, int fd) {
    if (error == 0 && !take_spare_back()) {
      ::close(fd);  // it took the spare's place, and no descriptor was freed since: turned away
      take_spare_back();
      accept_members(reactor, room, listener);
    } else if (error == 0) {
      reactor.open(fd);
      auto member = std::make_shared<Member>(reactor, room, fd, peer_name(fd));
      room.insert(member);
      member->read();
      accept_members(reactor, room, listener);
    } else if ((error == EMFILE || error == ENFILE) && spare != -1) {
      ::close(spare);  // the next accept() takes the first connection waiting, to be turned away above
      spare = -1;
      accept_members(reactor, room, listener);
    } else {
      std::fprintf(stderr, "accept: %s\n", std::strerror(error));  // ENOMEM...: try again a little later
      reactor.after(std::chrono::milliseconds(100),
                    [&reactor, &room, listener](int) { accept_members(reactor, room, listener); });
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A chat server on a reactor: every line reaches every other client, after its sender's address.");
  std::signal(SIGPIPE, SIG_IGN);
  const int listener = kqlab::open_listener(address);
  if (!take_spare_back()) kqlab::fail("open /dev/null");
  Reactor reactor;
  Room room;
  reactor.open(listener);
  accept_members(reactor, room, listener);
  kqlab::announce_listening(listener);
  reactor.run();
}
