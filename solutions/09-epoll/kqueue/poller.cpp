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
  Ready ready;
  ready.fd = static_cast<int>(event.ident);
  ready.serial = reinterpret_cast<std::uintptr_t>(event.udata);
  // An event is about one filter: reading and writing the same socket come back as two events, never one.
  ready.readable = event.filter == EVFILT_READ;
  ready.writable = event.filter == EVFILT_WRITE;
  // EV_EOF is not an error: the client has stopped sending (EVFILT_READ) or taking (EVFILT_WRITE), and bytes may
  // still be waiting, which read() returns before its 0. Only a connection that failed puts an errno in fflags.
  if (event.flags & EV_EOF) ready.error = static_cast<int>(event.fflags);
  return ready;
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
  State& state = *state_;
  if (state.handed == state.returned) {
    // Room for one entry per change (lesson 02): a change that fails comes back as an entry of the eventlist, and
    // with no room left for it, fails the whole call and stops the changes after it. So the eventlist is never
    // shorter than the changelist, whatever the caller's batch; what does not fit the caller's batch is handed out
    // by the next wait(), before the kernel is asked again.
    state.events.resize(std::max(ready.size(), state.changes.size()));
    // One call applies every change collected since the last wait, in order, then waits: the kernel applies the
    // changes first, so a registration made here already counts in this very wait.
    const int got = kevent(state.kq, state.changes.data(), static_cast<int>(state.changes.size()),
                           state.events.data(), static_cast<int>(state.events.size()), nullptr);
    // -1 is a broken queue, or a change that failed with no room left in the eventlist to say so (kqueue(2)).
    if (got == -1 && errno != EINTR) kqlab::fail("kevent");
    // Applied, even when a signal cut the wait short: kqueue(2) applies the whole changelist before waiting.
    state.changes.clear();
    state.handed = 0;
    state.returned = static_cast<std::size_t>(std::max(got, 0));
  }
  int count = 0;
  for (; state.handed < state.returned && static_cast<std::size_t>(count) < ready.size(); ++state.handed) {
    const struct kevent& event = state.events[state.handed];
    // Without EV_RECEIPT, a change that fails comes back as an entry of its own: EV_ERROR set, the errno in data.
    // Test the bit: macOS returns the change's flags with EV_ERROR added.
    if (event.flags & EV_ERROR) {
      kqlab::fail("kevent(" + kqlab::describe(event) + ")", static_cast<int>(event.data));
    }
    ready[count++] = ready_from(event);
  }
  return count;
}

const char* Poller::name() { return "kqueue"; }
