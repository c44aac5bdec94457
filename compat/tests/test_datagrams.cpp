// EVFILT_READ on a datagram socket: FreeBSD's filt_soread reports the receive buffer's contents, every byte of
// every datagram queued, not only the next one. A program that reads under EV_CLEAR until it has used up `data`
// (a DNS resolver waiting for several answers) relies on it: with only the first datagram's size it would stop
// with the second one unread, and no new edge would come for it.
#include <netinet/in.h>

#include <string>
#include <vector>

#include "support.hpp"

using namespace kqtest;

namespace {

// A UDP socket bound to loopback, and another connected to it.
struct UdpPair {
  Fd receiver, sender;
};

UdpPair udp_pair() {
  UdpPair pair{Fd(socket(AF_INET, SOCK_DGRAM, 0)), Fd(socket(AF_INET, SOCK_DGRAM, 0))};
  REQUIRE(pair.receiver.get() >= 0);
  REQUIRE(pair.sender.get() >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(pair.receiver, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t size = sizeof address;
  REQUIRE(getsockname(pair.receiver, reinterpret_cast<sockaddr*>(&address), &size) == 0);
  REQUIRE(connect(pair.sender, reinterpret_cast<sockaddr*>(&address), size) == 0);
  return pair;
}

void send_datagram(int fd, size_t size) {
  const std::string text(size, 'd');
  REQUIRE(send(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(size));
}

}  // namespace

TEST_SUITE("datagrams") {

TEST_CASE("one datagram queued: data is at least its size") {
  auto kq = new_queue();
  auto udp = udp_pair();
  add(kq, udp.receiver, EVFILT_READ);
  send_datagram(udp.sender, 100);
  CHECK(expect_event(kq, udp.receiver, EVFILT_READ).data >= 100);
}

TEST_CASE("two datagrams queued: data counts both, not only the next one") {
  auto kq = new_queue();
  auto udp = udp_pair();
  send_datagram(udp.sender, 100);
  send_datagram(udp.sender, 200);
  add(kq, udp.receiver, EVFILT_READ);
  CHECK(expect_event(kq, udp.receiver, EVFILT_READ).data >= 300);
}

TEST_CASE("an EV_CLEAR reader that reads until it has used up data gets both datagrams from one event") {
  auto kq = new_queue();
  auto udp = udp_pair();
  add(kq, udp.receiver, EVFILT_READ, EV_CLEAR);
  send_datagram(udp.sender, 100);
  send_datagram(udp.sender, 200);
  const auto event = expect_event(kq, udp.receiver, EVFILT_READ);
  // The resolver's loop: read while `data` is not used up; a non-blocking read that finds nothing ends it.
  int64_t used = 0;
  int datagrams = 0;
  char buffer[512];
  for (int reads = 0; used < event.data && reads < 16; ++reads) {
    const ssize_t got = recv(udp.receiver, buffer, sizeof buffer, MSG_DONTWAIT);
    if (got < 0) break;
    used += got;
    ++datagrams;
  }
  CHECK(datagrams == 2);
  CHECK(used == 300);
  expect_nothing(kq);  // nothing left, and EV_CLEAR: no event until the next datagram
  send_datagram(udp.sender, 50);
  CHECK(expect_event(kq, udp.receiver, EVFILT_READ).data >= 50);
}

TEST_CASE("many datagram sockets ready in one call: each one's data counts all its datagrams") {
  // On Linux, 8 or more readable sockets in one batch have their byte counts asked in one io_uring submission.
  auto kq = new_queue();
  std::vector<UdpPair> sockets;
  for (int i = 0; i < 12; ++i) {
    sockets.push_back(udp_pair());
    add(kq, sockets.back().receiver, EVFILT_READ);
    send_datagram(sockets.back().sender, 10 + static_cast<size_t>(i));
    send_datagram(sockets.back().sender, 100);
  }
  const auto events = wait(kq, 1000, 64);
  INFO("returned:" << describe_all(events));
  REQUIRE(events.size() == sockets.size());
  for (const auto& event : events) {
    size_t i = 0;
    while (sockets[i].receiver.get() != static_cast<int>(event.ident)) ++i;
    CHECK(event.data >= static_cast<int64_t>(110 + i));
  }
}

// Linux charges a Unix-domain datagram to its sender's buffer, so nothing bounds what waits at the receiver:
// the layer reports the next datagram's size (compat/README.md, deviation 4).
TEST_CASE("two Unix-domain datagrams queued: data counts both" * doctest::skip(kLinuxLayer)) {
  auto kq = new_queue();
  auto pair = socket_pair(SOCK_DGRAM);
  send_datagram(pair.b, 100);
  send_datagram(pair.b, 200);
  add(kq, pair.a, EVFILT_READ);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data >= 300);
}

}  // TEST_SUITE
