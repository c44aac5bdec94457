// Where the proxy connects: `--upstream HOST:PORT`, resolved once, at start-up. Kept apart from proxy.cpp, which is
// about events only.
#pragma once

#include <sys/socket.h>

#include <string>

namespace kqlab {

struct UpstreamAddress {
  std::string name;                // as given, "127.0.0.1:8080", for messages
  sockaddr_storage address{};      // the first address HOST:PORT resolves to
  socklen_t length = 0;
  int family = AF_UNSPEC;
};

// Resolves `HOST:PORT` (`[::1]:8080` for an IPv6 address). A missing or bad value, or a host that does not
// resolve, prints what is wrong on stderr and exits with status 2, as a bad option does. Blocking (getaddrinfo()),
// so called before the event loop starts, never inside it.
UpstreamAddress resolve_upstream(const std::string& text);

}  // namespace kqlab
