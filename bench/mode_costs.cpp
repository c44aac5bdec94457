// What a delivery costs in each of the layer's modes: the claims of compat/README.md's "Speed" section, measured.
//
//   mode_costs MODE ITERATIONS
//
// One loopback TCP connection; its accepted end is watched with EVFILT_READ in MODE, ITERATIONS events are
// delivered, and the CPU time per event is printed. `./kqlab bench` also runs it under `strace -c` with N and 2N
// iterations: the difference gives the system calls of one delivery, set-up left out. The modes:
//   level     EV_ADD, a byte waiting: the kernel re-reports it (a level-triggered epoll entry)
//   clear     EV_CLEAR: the peer writes a byte before each wait, a new edge each time, and the byte is read after
//             it (that write() and read() are counted too: unread, a thousand one-byte segments fill the socket's
//             receive buffer and TCP starts to wait for window updates)
//   dispatch  EV_DISPATCH, a byte waiting: each wait re-enables the knote (EV_ENABLE in the same kevent() call)
//   oneshot   EV_ONESHOT, a byte waiting: each wait adds the knote again (EV_ADD|EV_ONESHOT in the same call)
//   mixed     EVFILT_READ level and EVFILT_WRITE with EV_CLEAR on the same descriptor: the read knote sits on an
//             edge-triggered entry and is re-queued in user space after each delivery
//   reactor   EVFILT_READ and EVFILT_WRITE, both EV_CLEAR (lesson 10's reactor), bytes arriving as in `clear`:
//             each arrival is a read edge and no write edge (epoll reports EPOLLOUT with it; the layer asks
//             TCP_INFO whether room was made, and it was not)
// Each delivery is checked (the event, and data = the bytes waiting): a mode that stopped delivering fails.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "probe.hpp"

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "mode_costs: %s\n", what.c_str());
  std::exit(1);
}

struct Connection {
  int peer;     // the client's end: writes the bytes
  int watched;  // the accepted end: the one in the kqueue
};

Connection connect_loopback() {
  sockaddr_in address;
  const int listener = probe::listen_on_loopback(1, address);
  if (listener < 0) fail("cannot open a listening socket");
  Connection c{socket(AF_INET, SOCK_STREAM, 0), -1};
  if (c.peer < 0 || connect(c.peer, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) fail("cannot connect");
  c.watched = accept(listener, nullptr, nullptr);
  if (c.watched < 0) fail("cannot accept");
  // Each of the peer's one-byte writes goes out at once: Nagle would hold it until the (delayed) ACK of the
  // previous one, since the watched end never reads.
  const int on = 1;
  if (setsockopt(c.peer, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) != 0) fail("cannot set TCP_NODELAY");
  close(listener);
  return c;
}

void apply(int kq, int fd, short filter, unsigned short flags) {
  struct kevent change;
  EV_SET(&change, fd, filter, flags, 0, 0, nullptr);
  if (kevent(kq, &change, 1, nullptr, 0, nullptr) != 0) fail("kevent: cannot register");
}

// One delivery: applies `change` (if any) and waits (1 s at most) for the read event; checks it.
void deliver(int kq, const struct kevent* change, long expected_data, const char* mode) {
  const timespec limit{1, 0};
  struct kevent events[2];
  const int n = kevent(kq, change, change ? 1 : 0, events, 2, &limit);
  for (int i = 0; i < n; ++i) {
    if (events[i].filter != EVFILT_READ) continue;  // mixed, reactor: the write knote's one event, at the start
    if (events[i].data != expected_data)
      fail(std::string(mode) + ": data " + std::to_string(events[i].data) + ", expected " +
           std::to_string(expected_data));
    return;
  }
  fail(std::string(mode) + ": no EVFILT_READ event within 1 s");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::atol(argv[2]) <= 0) {
    std::fprintf(stderr, "usage: mode_costs level|clear|dispatch|oneshot|mixed|reactor ITERATIONS\n");
    return 2;
  }
  const std::string mode = argv[1];
  const long iterations = std::atol(argv[2]);
  const Connection c = connect_loopback();
  const int kq = kqueue();
  if (kq < 0) fail("kqueue failed");
  const bool clear = mode == "clear" || mode == "reactor";
  if (!clear && write(c.peer, "x", 1) != 1) fail("write failed");  // the byte that stays waiting

  struct kevent change;
  const struct kevent* each = nullptr;  // the change every wait carries, if any
  if (mode == "level") {
    apply(kq, c.watched, EVFILT_READ, EV_ADD);
  } else if (mode == "clear") {
    apply(kq, c.watched, EVFILT_READ, EV_ADD | EV_CLEAR);
  } else if (mode == "dispatch") {
    apply(kq, c.watched, EVFILT_READ, EV_ADD | EV_DISPATCH);
    EV_SET(&change, c.watched, EVFILT_READ, EV_ENABLE, 0, 0, nullptr);
    each = &change;
  } else if (mode == "oneshot") {
    EV_SET(&change, c.watched, EVFILT_READ, EV_ADD | EV_ONESHOT, 0, 0, nullptr);
    each = &change;
  } else if (mode == "reactor") {
    apply(kq, c.watched, EVFILT_READ, EV_ADD | EV_CLEAR);
    apply(kq, c.watched, EVFILT_WRITE, EV_ADD | EV_CLEAR);
  } else if (mode == "mixed") {
    apply(kq, c.watched, EVFILT_READ, EV_ADD);
    apply(kq, c.watched, EVFILT_WRITE, EV_ADD | EV_CLEAR);
  } else {
    fail("unknown mode '" + mode + "'");
  }

  const double start = probe::thread_cpu_ns();
  for (long i = 0; i < iterations; ++i) {
    if (clear && write(c.peer, "x", 1) != 1) fail("write failed");
    deliver(kq, each, 1, mode.c_str());
    char byte;
    if (clear && read(c.watched, &byte, 1) != 1) fail("read failed");
  }
  const double per_event = (probe::thread_cpu_ns() - start) / static_cast<double>(iterations);
  std::printf("{\"mode\": \"%s\", \"iterations\": %ld, \"cpu_ns_per_event\": %.1f}\n", mode.c_str(), iterations,
              per_event);
  return 0;
}
