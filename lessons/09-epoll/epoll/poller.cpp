// Lesson 09, the epoll side: poller.hpp on Linux's epoll(7). Read it beside ../kqueue/poller.cpp, which has the
// same functions in the same order.
//
// What is particular to epoll here: one registration per descriptor, whose event mask says everything we want from
// it, changed as a whole with EPOLL_CTL_MOD; every change is a system call of its own, made at once; an event has
// no descriptor field, only our 64-bit data; it reports every condition of the descriptor at once, as bits, and
// says that a socket failed (EPOLLERR) but not why (SO_ERROR does).
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "poller.hpp"
#include "setup.hpp"

struct Poller::State {
  int epfd = -1;
  std::vector<epoll_event> events;  // what the kernel hands back
};

namespace {

// Reading, edge-triggered, and told when the peer shuts down its side (EPOLLRDHUP: kqueue's EV_EOF on reading).
// EPOLLERR and EPOLLHUP need not be asked for: epoll always reports them.
constexpr std::uint32_t kReading = EPOLLIN | EPOLLRDHUP | EPOLLET;

// epoll_event has no descriptor field: its data is all it hands back. Both the serial and the descriptor travel in
// it, the serial in the high half (serials wrap after 2^32 connections; a stale report would have to survive that).
std::uint64_t data_of(int fd, std::uint64_t serial) { return serial << 32 | static_cast<std::uint32_t>(fd); }

// The socket's pending error: EPOLLERR says only that there is one.
int socket_error(int fd) {
  int error = 0;
  socklen_t length = sizeof error;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == -1) return errno;
  return error;
}

// What one epoll_event says, in the server's terms.
Ready ready_from(const epoll_event& event) {
  // TODO(5): say what the event says: which descriptor and serial (from the data), readable or writable, and the
  // error of a connection that failed. (README, step 5)
  static_cast<void>(event), static_cast<void>(&socket_error);
  return Ready{};
}

// One change, made at once: epoll_ctl() is a system call per change, and reports its own failure.
void control(int epfd, int operation, int fd, std::uint32_t events, std::uint64_t serial) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = data_of(fd, serial);
  if (epoll_ctl(epfd, operation, fd, &event) == -1) {
    const char* name = operation == EPOLL_CTL_ADD ? "EPOLL_CTL_ADD" : "EPOLL_CTL_MOD";
    kqlab::fail("epoll_ctl(" + std::string(name) + ", fd=" + std::to_string(fd) + ")");
  }
}

}  // namespace

Poller::Poller() : state_(std::make_unique<State>()) {
  // EPOLL_CLOEXEC: a program this server might exec must not inherit the queue. (A kqueue is not even inherited by
  // fork; an epoll instance is, shared with the child.)
  state_->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (state_->epfd == -1) kqlab::fail("epoll_create1");
}

Poller::~Poller() { close(state_->epfd); }

void Poller::add(int fd, std::uint64_t serial) {
  // TODO(3): register the descriptor for reading, edge-triggered, with the data that will bring back its number
  // and serial. Until this is done epoll_wait() never returns. (README, step 3)
  static_cast<void>(fd), static_cast<void>(serial), static_cast<void>(&control);
}

void Poller::want_write(int fd, std::uint64_t serial, bool on) {
  // TODO(4): change the descriptor's registration so that it says whether we want to write, keeping all the
  // rest. (README, step 4)
  static_cast<void>(fd), static_cast<void>(serial), static_cast<void>(on);
}

void Poller::forget(int fd) {
  // Nothing to do: no change waits here, each was made at once. And close() takes the socket out of the epoll set,
  // provided no other descriptor refers to the same socket (a dup(), or a child of fork() still holding it): the
  // registration belongs to the socket, not to the number, and would live on, reported under this number, unless
  // EPOLL_CTL_DEL removed it first. This server never duplicates its sockets.
  static_cast<void>(fd);
}

int Poller::wait(std::span<Ready> ready) {
  State& state = *state_;
  state.events.resize(ready.size());
  const int got = epoll_wait(state.epfd, state.events.data(), static_cast<int>(state.events.size()), -1);
  if (got == -1) {
    if (errno == EINTR) return 0;  // a signal interrupted the wait (on Linux, even SIGSTOP and SIGCONT do)
    kqlab::fail("epoll_wait");
  }
  for (int i = 0; i < got; ++i) ready[i] = ready_from(state.events[i]);
  return got;
}

const char* Poller::name() { return "epoll"; }
