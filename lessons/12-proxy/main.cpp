// Lesson 12: the proxy's command line. The proxy itself is in proxy.cpp.
#include <csignal>
#include <cstddef>
#include <string>
#include <utility>

#include "proxy.hpp"
#include "setup.hpp"
#include "upstream_address.hpp"

int main(int argc, char** argv) {
  long long buffer = 64 * 1024;
  long long connect_timeout_ms = 5000;
  std::string upstream;
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A TCP proxy: each client is connected to --upstream, and bytes flow both ways.",
      {{"--buffer", "hold at most this many bytes per direction of each connection", 1024, 1 << 24, &buffer},
       {"--connect-timeout-ms", "give up on an upstream that has not answered in this many milliseconds", 1,
        3600000, &connect_timeout_ms}},
      {{"--upstream", "HOST:PORT", "where to connect each client (required)", &upstream}});
  kqlab::UpstreamAddress target = kqlab::resolve_upstream(upstream);
  // A peer that vanishes while we write to it must not take the proxy with it (lesson 05, step 2).
  std::signal(SIGPIPE, SIG_IGN);
  const int listener = kqlab::open_listener(address);
  Proxy proxy(listener, std::move(target), static_cast<std::size_t>(buffer), connect_timeout_ms);
  kqlab::announce_listening(listener);
  proxy.run();
  return 0;
}
