#include "upstream_address.hpp"

#include <netdb.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kqlab {

[[noreturn]] static void refuse(const std::string& problem) {
  std::fprintf(stderr, "proxy: %s\n", problem.c_str());
  std::exit(2);
}

UpstreamAddress resolve_upstream(const std::string& text) {
  if (text.empty()) refuse("--upstream HOST:PORT is required: where to connect each client");
  const std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    refuse("--upstream wants HOST:PORT, not '" + text + "'");
  }
  std::string host = text.substr(0, colon);
  const std::string port = text.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 || std::stoi(port) < 1 ||
      std::stoi(port) > 65535) {
    refuse("--upstream wants a port from 1 to 65535, not '" + port + "'");
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int error = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); error != 0) {
    refuse("--upstream " + text + ": " + gai_strerror(error));
  }
  UpstreamAddress upstream;
  upstream.name = text;
  std::memcpy(&upstream.address, found->ai_addr, found->ai_addrlen);
  upstream.length = found->ai_addrlen;
  upstream.family = found->ai_family;
  freeaddrinfo(found);
  return upstream;
}

}  // namespace kqlab
