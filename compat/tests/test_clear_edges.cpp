// EV_CLEAR on a socket watched for both reading and writing: each filter fires for its own side's wake-ups only.
// FreeBSD activates a socket's read knotes when data arrives (sorwakeup) and its write knotes when room is made in
// the send buffer (sowwakeup, as acknowledged data leaves it); an EV_CLEAR knote, once returned, fires again only
// at its own side's next wake-up. kqlab's layer has one epoll entry for both (compat/README.md, deviation 28).
#include <fcntl.h>

#include <algorithm>
#include <string>

#include "support.hpp"

using namespace kqtest;

TEST_SUITE("EV_CLEAR edges of reading and writing") {

namespace {

// The events `kq` returns for `fd` and `filter` within `ms`.
size_t count_events(int kq, int fd, short filter, int ms) {
  size_t found = 0;
  for (const auto& event : wait(kq, ms))
    found += event.ident == static_cast<uintptr_t>(fd) && event.filter == filter;
  return found;
}

// Writes to the non-blocking `fd` until the send buffer is full; the bytes written.
size_t fill_send_buffer(int fd) {
  const std::string chunk(16384, 'x');
  size_t total = 0;
  for (int round = 0; round < 100'000; ++round) {
    const ssize_t n = write(fd, chunk.data(), chunk.size());
    if (n < 0) {
      REQUIRE((errno == EAGAIN || errno == EWOULDBLOCK));
      return total;
    }
    total += static_cast<size_t>(n);
  }
  FAIL("the send buffer never filled");
  return total;
}

// Reads `total` bytes from the blocking `fd`.
void read_all(int fd, size_t total) {
  std::string buffer(65536, '\0');
  for (size_t got = 0; got < total;) {
    const ssize_t n = read(fd, buffer.data(), buffer.size());
    REQUIRE(n > 0);
    got += static_cast<size_t>(n);
  }
}

// A connected TCP pair: `client` non-blocking and watched by `kq` for reading and writing, both EV_CLEAR, its
// first write event (writable from the start) taken; `server` blocking.
struct WatchedConnection {
  Fd kq = new_queue();
  Fd listener = tcp_listener();
  Fd client = tcp_connect(listener);
  Fd server{accept(listener, nullptr, nullptr)};

  WatchedConnection() {
    REQUIRE(server.get() >= 0);
    REQUIRE(fcntl(client, F_SETFL, O_NONBLOCK) == 0);
    add(kq, client, EVFILT_READ, EV_CLEAR);
    add(kq, client, EVFILT_WRITE, EV_CLEAR);
    CHECK(count_events(kq, client, EVFILT_WRITE, 1000) == 1);
  }
};

}  // namespace

TEST_CASE("EV_CLEAR EVFILT_WRITE fires when room is made, not when data arrives for EVFILT_READ") {
  WatchedConnection connection;
  const int client = connection.client;
  for (int round = 0; round < 5; ++round) {
    CAPTURE(round);
    write_bytes(connection.server, 100);
    const auto events = wait(connection.kq, 1000);
    INFO("returned:" << describe_all(events));
    REQUIRE(events.size() >= 1);
    for (const auto& event : events) CHECK(event.filter == EVFILT_READ);  // nothing was sent: no room made
    CHECK(read_bytes(client, 200) == 100);
  }
  // Output waits in a full buffer; the peer reads it all, acknowledging it: room is made.
  const size_t sent = fill_send_buffer(client);
  read_all(connection.server, sent);
  CHECK(count_events(connection.kq, client, EVFILT_WRITE, 1000) == 1);
}

TEST_CASE("EV_CLEAR EVFILT_WRITE on a Unix-domain socket stays quiet while data arrives" *
          doctest::skip(kLinuxLayer)) {  // Linux: no count of freed room for a Unix socket (compat/README.md)
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ, EV_CLEAR);
  add(kq, pair.a, EVFILT_WRITE, EV_CLEAR);
  CHECK(count_events(kq, pair.a, EVFILT_WRITE, 1000) == 1);
  for (int round = 0; round < 3; ++round) {
    write_bytes(pair.b, 100);
    const auto events = wait(kq, 1000);
    INFO("returned:" << describe_all(events));
    for (const auto& event : events) CHECK(event.filter == EVFILT_READ);
    CHECK(read_bytes(pair.a, 200) == 100);
  }
  write_bytes(pair.a, 100);
  CHECK(read_bytes(pair.b, 200) == 100);  // the peer takes it: room is made
  CHECK(count_events(kq, pair.a, EVFILT_WRITE, 1000) == 1);
}

TEST_CASE("EV_CLEAR EVFILT_READ fires when data arrives, not when room is made for EVFILT_WRITE") {
  WatchedConnection connection;
  const int client = connection.client;
  write_bytes(connection.server, 100);
  const struct kevent arrived = expect_event(connection.kq, client, EVFILT_READ);
  CHECK(arrived.data == 100);
  // The 100 bytes stay unread. Output waits in a full buffer; the peer reads it all: room is made, and only the
  // write knote is told.
  const size_t sent = fill_send_buffer(client);
  read_all(connection.server, sent);
  const auto events = wait(connection.kq, 1000);
  INFO("returned:" << describe_all(events));
  CHECK(std::count_if(events.begin(), events.end(), [](const struct kevent& e) { return e.filter == EVFILT_WRITE; }) == 1);
  CHECK(std::none_of(events.begin(), events.end(), [](const struct kevent& e) { return e.filter == EVFILT_READ; }));
  // New data is news again, with every byte unread in `data`.
  write_bytes(connection.server, 5);
  CHECK(expect_event(connection.kq, client, EVFILT_READ).data == 105);
}

}  // TEST_SUITE
