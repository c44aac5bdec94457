// A socket's error after kevent() reported it: kqueue(2) puts it in `fflags` with EV_EOF, and FreeBSD leaves it
// in the socket (so_error) for the program. getsockopt(SO_ERROR) returns it once, which is how every client
// checks a non-blocking connect(); otherwise the next read() or write() fails with it.
#include <signal.h>

#include "support.hpp"

using namespace kqtest;

namespace {

// A loopback address where nothing listens: a listener's, closed again (the port stays free for a while).
sockaddr_in refused_address() {
  auto listener = tcp_listener();
  sockaddr_in address{};
  socklen_t size = sizeof address;
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size) == 0);
  return address;
}

// A non-blocking connect() to `address`, in progress or failed.
Fd connect_without_waiting(const sockaddr_in& address) {
  Fd client(socket(AF_INET, SOCK_STREAM, 0));
  REQUIRE(client.get() >= 0);
  REQUIRE(fcntl(client, F_SETFL, O_NONBLOCK) == 0);
  const int result = connect(client, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  REQUIRE_MESSAGE((result == 0 || errno == EINPROGRESS || errno == ECONNREFUSED), std::strerror(errno));
  return client;
}

int pending_error(int fd) {
  int error = -1;
  socklen_t size = sizeof error;
  REQUIRE(getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0);
  return error;
}

// A refused connect's write event: EV_EOF with ECONNREFUSED.
Fd refused_and_reported(int kq) {
  Fd client = connect_without_waiting(refused_address());
  add(kq, client, EVFILT_WRITE);
  const auto event = expect_event(kq, client, EVFILT_WRITE);
  CHECK((event.flags & EV_EOF));
  CHECK(event.fflags == ECONNREFUSED);
  return client;
}

}  // namespace

TEST_SUITE("socket errors") {

TEST_CASE("a refused connect: EV_EOF with ECONNREFUSED, then getsockopt(SO_ERROR) still says so, once") {
  auto kq = new_queue();
  Fd client = refused_and_reported(kq);
  // Level-triggered: reported again, with the error still in fflags, as long as the program has not taken it.
  const auto again = expect_event(kq, client, EVFILT_WRITE);
  CHECK(again.fflags == ECONNREFUSED);
  CHECK(pending_error(client) == ECONNREFUSED);
  CHECK(pending_error(client) == 0);  // getsockopt clears it
}

// sosend() checks SBS_CANTSENDMORE before so_error: the connection is down, so EPIPE (with SIGPIPE), and the error
// stays for getsockopt().
TEST_CASE("a refused connect: write() fails with EPIPE and leaves the error in place") {
  KeepDisposition keep(SIGPIPE);
  signal(SIGPIPE, SIG_IGN);
  auto kq = new_queue();
  Fd client = refused_and_reported(kq);
  errno = 0;
  CHECK(write(client, "x", 1) == -1);
  CHECK(errno == EPIPE);
  CHECK(pending_error(client) == ECONNREFUSED);
}

TEST_CASE("a refused connect: the next read() fails with ECONNREFUSED, then reads end of file") {
  auto kq = new_queue();
  Fd client = refused_and_reported(kq);
  char byte;
  errno = 0;
  CHECK(read(client, &byte, 1) == -1);
  CHECK(errno == ECONNREFUSED);
  CHECK(read(client, &byte, 1) == 0);
  CHECK(pending_error(client) == 0);
}

TEST_CASE("a reset connection: after EV_EOF with ECONNRESET, read() fails with ECONNRESET") {
  auto kq = new_queue();
  auto listener = tcp_listener();
  auto client = tcp_connect(listener);
  Fd server(accept(listener, nullptr, nullptr));
  add(kq, server, EVFILT_READ);
  const linger abort_on_close{1, 0};
  REQUIRE(setsockopt(client, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close) == 0);
  client.reset();  // sends RST
  const auto event = expect_event(kq, server, EVFILT_READ);
  CHECK((event.flags & EV_EOF));
  CHECK(event.fflags == ECONNRESET);
  char byte;
  errno = 0;
  CHECK(recv(server, &byte, 1, MSG_PEEK) == -1);  // a peek leaves the error in place
  CHECK(errno == ECONNRESET);
  errno = 0;
  CHECK(recv(server, &byte, 1, 0) == -1);
  CHECK(errno == ECONNRESET);
  CHECK(pending_error(server) == 0);
}

TEST_CASE("a connected UDP socket told its peer's port is closed: the read event, then send() fails with it") {
  auto kq = new_queue();
  const sockaddr_in closed = refused_address();
  Fd udp(socket(AF_INET, SOCK_DGRAM, 0));
  REQUIRE(connect(udp, reinterpret_cast<const sockaddr*>(&closed), sizeof closed) == 0);
  add(kq, udp, EVFILT_READ);
  REQUIRE(send(udp, "?", 1, 0) == 1);  // answered by ICMP port unreachable
  expect_event(kq, udp, EVFILT_READ);  // readable for its error (soreadable: so_error)
  errno = 0;
  CHECK(send(udp, "?", 1, 0) == -1);  // the socket can still send: sosend returns so_error, once
  CHECK(errno == ECONNREFUSED);
  CHECK(pending_error(udp) == 0);
}

TEST_CASE("the error goes with the descriptor: a new socket on the same number has none") {
  auto kq = new_queue();
  Fd client = refused_and_reported(kq);
  const int number = client.get();
  client.reset();
  Fd fresh(socket(AF_INET, SOCK_STREAM, 0));
  REQUIRE(fresh.get() == number);  // the lowest free number: the one just closed
  CHECK(pending_error(fresh) == 0);
  char byte;
  CHECK(recv(fresh, &byte, 1, MSG_DONTWAIT) == -1);
  CHECK(errno != ECONNREFUSED);
}

}  // TEST_SUITE
