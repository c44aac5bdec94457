// The one part of lesson 09's echo server that depends on the kernel's interface: asking which sockets are ready.
//
// Two files implement this header, with the same functions in the same order, to be read side by side:
// kqueue/poller.cpp and epoll/poller.cpp (as redis does with ae_kqueue.c and ae_epoll.c). The server,
// echo_server.cpp, is written once against it; CMake links it with each, into two programs.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

// A descriptor that is ready, in the server's terms, whichever interface reported it.
struct Ready {
  int fd = -1;
  std::uint64_t serial = 0;  // what the descriptor was registered with: tells a connection from an earlier one
  bool readable = false;     // read() or accept() will not block: bytes or connections, end of stream, or an error
  bool writable = false;     // write() will take some bytes
  int error = 0;             // the connection failed, with this errno (ECONNRESET...): nothing more will work on it
};

class Poller {
 public:
  // Creates the kernel's queue (a kqueue, or an epoll instance), or stops the program with a message.
  Poller();
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  // Starts watching `fd` for reading, edge-triggered: one report each time something new arrives, not one on every
  // wait while something is there. Every Ready for `fd` carries `serial`.
  void add(int fd, std::uint64_t serial);

  // Turns the interest in writing to `fd` on or off (it starts off), keeping the interest in reading.
  void want_write(int fd, std::uint64_t serial, bool on);

  // Called just before the server closes `fd`: whatever the poller still holds about it must go.
  void forget(int fd);

  // Waits, as long as it takes, until something is ready, and describes it in `ready`; returns how many entries it
  // filled (0 when a signal interrupted the wait).
  int wait(std::span<Ready> ready);

  // "kqueue" or "epoll".
  static const char* name();

 private:
  struct State;  // each interface's own: the queue's descriptor, and buffers
  std::unique_ptr<State> state_;
};
