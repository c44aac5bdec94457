// What the layer's probes (event_cost, mode_costs) share: the clock they read, and the loopback listener their
// connections come from.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <ctime>

namespace probe {

// CPU time of the calling thread, in nanoseconds: what a probe's loop costs, whatever else the machine does.
inline double thread_cpu_ns() {
  timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e9 + static_cast<double>(now.tv_nsec);
}

// A TCP socket listening on 127.0.0.1 at a free port, its address in `address`; -1 when it cannot be made.
inline int listen_on_loopback(int backlog, sockaddr_in& address) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  address = sockaddr_in{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (listener >= 0 && bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      listen(listener, backlog) == 0 && getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0)
    return listener;
  return -1;
}

}  // namespace probe
