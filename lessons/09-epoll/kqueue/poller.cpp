// Lesson 09, the kqueue side: poller.hpp on kqueue(2). Read it beside ../epoll/poller.cpp, which has the same
// functions in the same order.
//
// What is particular to kqueue here: a registration per (descriptor, filter), so reading and writing are two;
// changes are collected and handed to the kernel with the next wait, in the same kevent() call; each event is about
// one filter, with EV_EOF and the socket's error in its flags and fflags.
#include <sys/event.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "kevent_format.hpp"
#include "poller.hpp"
#include "setup.hpp"

struct Poller::State {
  int kq = -1;
  std::vector<struct kevent> changes;  // made since the last wait: the next wait hands them to the kernel
  std::vector<struct kevent> events;   // what the kernel hands back
  std::size_t handed = 0;              // events[handed, returned) are still to be handed to the caller
  std::size_t returned = 0;
};

namespace {

// udata is pointer-sized and the kernel hands it back untouched: the serial travels in it.
void* udata_of(std::uint64_t serial) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(serial)); }

// What one kevent says, in the server's terms.
Ready ready_from(const struct kevent& event) {
  // TODO(2): say what the event says: which descriptor, its serial, readable or writable, and an error only if
  // the connection failed. Mind EV_EOF. (README, step 2; stuck? ./kqlab hint 9)
  // Each gap's static_casts only keep the compiler quiet about parameters it does not use yet: delete them.
  static_cast<void>(event);
  return Ready{};
}

// One change, collected, not applied: it costs no system call of its own, it rides with the next wait (see wait()).
void collect(std::vector<struct kevent>& changes, int fd, short filter, unsigned short flags, std::uint64_t serial) {
  struct kevent change;
  EV_SET(&change, fd, filter, flags, 0, 0, udata_of(serial));
  changes.push_back(change);
}

}  // namespace

Poller::Poller() : state_(std::make_unique<State>()) {
  state_->kq = kqueue();
  if (state_->kq == -1) kqlab::fail("kqueue");
}

Poller::~Poller() { close(state_->kq); }

void Poller::add(int fd, std::uint64_t serial) {
  // EV_CLEAR: edge-triggered. After each report the condition is reset, and only new data reports again.
  collect(state_->changes, fd, EVFILT_READ, EV_ADD | EV_CLEAR, serial);
}

void Poller::want_write(int fd, std::uint64_t serial, bool on) {
  // Writing is a registration of its own, (fd, EVFILT_WRITE), added and deleted beside the reading one, which it
  // leaves alone. Filters are numbers, not bits: there is no "EVFILT_READ | EVFILT_WRITE".
  collect(state_->changes, fd, EVFILT_WRITE, on ? EV_ADD | EV_CLEAR : EV_DELETE, serial);
}

void Poller::forget(int fd) {
  // close() removes the descriptor's registrations from the queue (kqueue(2)), but not our changes for it still
  // waiting for the next wait: applied then, they would hit a closed descriptor (EBADF) or, worse, the new
  // connection that accept() gave the same number.
  std::erase_if(state_->changes, [fd](const struct kevent& change) { return change.ident == std::uintptr_t(fd); });
}

int Poller::wait(std::span<Ready> ready) {
  // TODO(1): hand the collected changes to the kernel and wait, in one kevent() call; check what comes back, and
  // describe each event in `ready`. Leave room in the eventlist for one entry per change (lesson 02): more changes
  // than `ready` holds? Keep what does not fit in `state` for the next wait(). Until this is done nothing is ever
  // registered, and the loop spins: wait() returns at once, with nothing. (README, step 1)
  static_cast<void>(ready), static_cast<void>(&ready_from);
  return 0;
}

const char* Poller::name() { return "kqueue"; }
