// EVFILT_READ and EVFILT_WRITE on sockets, pipes and listeners: what `data`, EV_EOF and fflags report.
#include <fcntl.h>
#include <netinet/tcp.h>

#include <map>
#include <set>
#include <vector>

#include "support.hpp"

using namespace kqtest;

TEST_SUITE("read and write") {

TEST_CASE("EVFILT_READ data is the number of bytes readable (socketpair, pipe, TCP)") {
  auto kq = new_queue();
  auto pair = socket_pair();
  auto pipe = pipe_pair();
  auto listener = tcp_listener();
  auto client = tcp_connect(listener);
  Fd server(accept(listener, nullptr, nullptr));
  REQUIRE(server.get() >= 0);
  add(kq, pair.a, EVFILT_READ);
  add(kq, pipe.a, EVFILT_READ);
  add(kq, server, EVFILT_READ);
  write_bytes(pair.b, 7);
  write_bytes(pipe.b, 11);
  write_bytes(client, 13);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 7);
  CHECK(expect_event(kq, pipe.a, EVFILT_READ).data == 11);
  CHECK(expect_event(kq, server, EVFILT_READ).data == 13);
}

TEST_CASE("a listening socket's data is the number of connections waiting for accept()") {
  auto kq = new_queue();
  auto listener = tcp_listener();
  add(kq, listener, EVFILT_READ);
  expect_nothing(kq);
  auto first = tcp_connect(listener);
  auto second = tcp_connect(listener);
  auto third = tcp_connect(listener);
  CHECK(expect_event(kq, listener, EVFILT_READ).data == 3);
  Fd accepted(accept(listener, nullptr, nullptr));
  CHECK(expect_event(kq, listener, EVFILT_READ).data == 2);
}

TEST_CASE("EV_EOF comes when the peer shuts down writing, with the data still unread") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ);
  write_bytes(pair.b, 6);
  REQUIRE(shutdown(pair.b, SHUT_WR) == 0);
  const auto event = expect_event(kq, pair.a, EVFILT_READ);
  CHECK((event.flags & EV_EOF));
  CHECK(event.data == 6);
  CHECK(event.fflags == 0);
  read_bytes(pair.a, 6);
  const auto after = expect_event(kq, pair.a, EVFILT_READ);  // EOF stays, level-triggered, data now 0
  CHECK((after.flags & EV_EOF));
  CHECK(after.data == 0);
}

TEST_CASE("EV_EOF on a TCP connection closed by its peer") {
  auto kq = new_queue();
  auto listener = tcp_listener();
  auto client = tcp_connect(listener);
  Fd server(accept(listener, nullptr, nullptr));
  add(kq, server, EVFILT_READ);
  write_bytes(client, 2);
  client.reset();
  const auto event = expect_event(kq, server, EVFILT_READ);
  CHECK((event.flags & EV_EOF));
  CHECK(event.data == 2);
}

TEST_CASE("a reset connection reports EV_EOF with the error in fflags") {
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
}

TEST_CASE("a pipe reports EV_EOF when its last writer closes") {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  add(kq, pipe.a, EVFILT_READ);
  write_bytes(pipe.b, 3);
  pipe.b.reset();
  const auto event = expect_event(kq, pipe.a, EVFILT_READ);
  CHECK((event.flags & EV_EOF));
  CHECK(event.data == 3);
}

TEST_CASE("EVFILT_WRITE data is the free space in the buffer") {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  add(kq, pipe.b, EVFILT_WRITE);
  const int64_t empty = expect_event(kq, pipe.b, EVFILT_WRITE).data;
  CHECK(empty >= 512);
  write_bytes(pipe.b, 100);
  CHECK(expect_event(kq, pipe.b, EVFILT_WRITE).data == empty - 100);

  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_WRITE);
  CHECK(expect_event(kq, pair.a, EVFILT_WRITE).data > 0);
}

TEST_CASE("a pipe whose reader is gone reports EV_EOF on the write side") {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  add(kq, pipe.b, EVFILT_WRITE);
  pipe.a.reset();
  CHECK((expect_event(kq, pipe.b, EVFILT_WRITE).flags & EV_EOF));
}

TEST_CASE("a TCP socket that never connected is not writable (nor readable)") {
  auto kq = new_queue();
  Fd fresh(socket(AF_INET, SOCK_STREAM, 0));
  add(kq, fresh, EVFILT_WRITE);
  add(kq, fresh, EVFILT_READ);
  expect_nothing(kq, 100);
}

TEST_CASE("an unconnected UDP socket is writable at once") {
  auto kq = new_queue();
  Fd udp(socket(AF_INET, SOCK_DGRAM, 0));
  add(kq, udp, EVFILT_WRITE);
  CHECK(expect_event(kq, udp, EVFILT_WRITE).data > 0);
}

TEST_CASE("a connection in progress becomes writable once connected") {
  auto kq = new_queue();
  auto listener = tcp_listener();
  sockaddr_in address{};
  socklen_t size = sizeof address;
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size) == 0);
  Fd client(socket(AF_INET, SOCK_STREAM, 0));
  REQUIRE(fcntl(client, F_SETFL, O_NONBLOCK) == 0);
  const int result = connect(client, reinterpret_cast<sockaddr*>(&address), size);
  REQUIRE((result == 0 || errno == EINPROGRESS));
  add(kq, client, EVFILT_WRITE);
  const auto event = expect_event(kq, client, EVFILT_WRITE);
  CHECK(!(event.flags & EV_EOF));
}

TEST_CASE("read and write on one descriptor are two events with their own udata and mode") {
  auto kq = new_queue();
  auto pair = socket_pair();
  int reading, writing;
  add(kq, pair.a, EVFILT_READ, 0, &reading);
  add(kq, pair.a, EVFILT_WRITE, EV_CLEAR, &writing);
  write_bytes(pair.b, 1);
  const auto events = wait(kq, 1000);
  INFO(describe_all(events));
  REQUIRE(events.size() == 2);
  for (const auto& event : events) CHECK(event.udata == (event.filter == EVFILT_READ ? &reading : &writing));
  // The read side is level-triggered and comes again; the write side has EV_CLEAR and does not.
  const auto again = wait(kq, 50);
  INFO(describe_all(again));
  REQUIRE(again.size() == 1);
  CHECK(again[0].filter == EVFILT_READ);
  CHECK(again[0].udata == &reading);
}

TEST_CASE("deleting one filter leaves the other on the same descriptor alone") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ);
  add(kq, pair.a, EVFILT_WRITE);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_WRITE, EV_DELETE)}) == 0);
  write_bytes(pair.b, 1);
  const auto events = wait(kq, 1000);
  INFO(describe_all(events));
  REQUIRE(events.size() == 1);
  CHECK(events[0].filter == EVFILT_READ);
}

TEST_CASE("NOTE_LOWAT: EVFILT_READ fires only once `data` bytes are readable") {
  auto kq = new_queue();
  auto pair = socket_pair();
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_ADD, NOTE_LOWAT, 10)}) == 0);
  write_bytes(pair.b, 4);
  expect_nothing(kq);
  write_bytes(pair.b, 6);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 10);
}

TEST_CASE("two queues watching one descriptor each get their own event") {
  auto first = new_queue();
  auto second = new_queue();
  auto pair = socket_pair();
  add(first, pair.a, EVFILT_READ, EV_CLEAR);
  add(second, pair.a, EVFILT_READ, EV_CLEAR);
  write_bytes(pair.b, 1);
  expect_event(first, pair.a, EVFILT_READ);
  expect_event(second, pair.a, EVFILT_READ);
}


TEST_CASE("descriptors far apart, and many at once: every event names its own descriptor and udata") {
  auto kq = new_queue();
  // Numbers in different parts of the queue's table, and a hundred neighbours.
  std::vector<Pair> pairs;
  for (int i = 0; i < 100; ++i) pairs.push_back(socket_pair());
  Fd far(fcntl(pairs[0].a.get(), F_DUPFD_CLOEXEC, 300));
  Fd farther(fcntl(pairs[1].a.get(), F_DUPFD_CLOEXEC, 900));
  REQUIRE(far.get() >= 300);
  REQUIRE(farther.get() >= 900);
  std::vector<int> watched;
  for (size_t i = 2; i < pairs.size(); ++i) watched.push_back(pairs[i].a.get());
  watched.push_back(far.get());
  watched.push_back(farther.get());
  for (const int fd : watched)
    add(kq, static_cast<uintptr_t>(fd), EVFILT_READ, 0, reinterpret_cast<void*>(static_cast<uintptr_t>(fd) + 1));
  // Data for every other neighbour, and for the two far ones (through their duplicates' peers).
  std::set<int> expected{far.get(), farther.get()};
  for (size_t i = 2; i < pairs.size(); i += 2) {
    write_bytes(pairs[i].b.get(), i);
    expected.insert(pairs[i].a.get());
  }
  write_bytes(pairs[0].b.get(), 7);
  write_bytes(pairs[1].b.get(), 9);
  const auto events = wait(kq, 1000, 256);
  INFO(describe_all(events));
  std::set<int> got;
  for (const auto& event : events) {
    CHECK(event.filter == EVFILT_READ);
    CHECK(event.udata == reinterpret_cast<void*>(event.ident + 1));
    got.insert(static_cast<int>(event.ident));
  }
  CHECK(events.size() == expected.size());
  CHECK(got == expected);
  for (const auto& event : events) {
    if (static_cast<int>(event.ident) == far.get()) CHECK(event.data == 7);
    if (static_cast<int>(event.ident) == farther.get()) CHECK(event.data == 9);
  }
}

TEST_CASE("a read knote deleted and added again, many times over, comes back fresh each time") {
  auto kq = new_queue();
  auto pair = socket_pair();
  write_bytes(pair.b, 3);
  int marks[2];
  for (int round = 0; round < 500; ++round) {
    void* const mark = &marks[round % 2];
    add(kq, pair.a, EVFILT_READ, round % 3 == 0 ? EV_CLEAR : 0, mark);
    const auto events = wait(kq, 1000);
    REQUIRE_MESSAGE(events.size() == 1, "round " << round << ": " << describe_all(events));
    REQUIRE(events[0].udata == mark);
    REQUIRE(events[0].data == 3);
    REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_DELETE)}) == 0);
    expect_nothing(kq, 0);
  }
}

TEST_CASE("many readable sockets in one call: each event's data is its own byte count") {
  // A batch this large is where the layer asks for all the counts at once (compat/src/readable_queries.hpp);
  // Unix-domain sockets in the same batch are answered another way. BSD reads each count off its socket.
  auto kq = new_queue();
  auto listener = tcp_listener(64);
  std::vector<Fd> clients, accepted;
  std::vector<Pair> local;
  for (int i = 0; i < 40; ++i) {
    clients.push_back(tcp_connect(listener));
    accepted.emplace_back(accept(listener, nullptr, nullptr));
    REQUIRE(accepted.back().get() >= 0);
  }
  for (int i = 0; i < 10; ++i) local.push_back(socket_pair());
  std::map<int, size_t> sent;
  for (size_t i = 0; i < accepted.size(); ++i) {
    add(kq, static_cast<uintptr_t>(accepted[i].get()), EVFILT_READ);
    write_bytes(clients[i].get(), 100 + i);
    sent[accepted[i].get()] = 100 + i;
  }
  for (size_t i = 0; i < local.size(); ++i) {
    add(kq, static_cast<uintptr_t>(local[i].a.get()), EVFILT_READ);
    write_bytes(local[i].b.get(), 7 + i);
    sent[local[i].a.get()] = 7 + i;
  }
  // Loopback TCP delivers in the writer's time, but give the last bytes a moment anyway.
  std::vector<struct kevent> events;
  for (int attempt = 0; attempt < 50; ++attempt) {
    events = wait(kq, 100, 128);
    bool all_there = events.size() == sent.size();
    for (const auto& event : events)
      all_there = all_there && event.data == static_cast<int64_t>(sent[static_cast<int>(event.ident)]);
    if (all_there) break;
  }
  INFO(describe_all(events));
  REQUIRE(events.size() == sent.size());
  for (const auto& event : events) {
    CHECK(event.filter == EVFILT_READ);
    CHECK(event.data == static_cast<int64_t>(sent[static_cast<int>(event.ident)]));
  }
  // Read some of each: the next call's counts are what is left.
  for (size_t i = 0; i < accepted.size(); ++i) REQUIRE(read_bytes(accepted[i].get(), 50) == 50);
  for (const auto& event : wait(kq, 1000, 128)) {
    const auto fd = static_cast<int>(event.ident);
    const bool tcp = sent[fd] >= 100;
    CHECK(event.data == static_cast<int64_t>(tcp ? sent[fd] - 50 : sent[fd]));
  }
}

TEST_CASE("a program that closes every descriptor it did not open keeps getting its counts") {
  // Daemons close every number they do not know, the layer's own among them. On Linux that includes the ring
  // through which the layer asks for many byte counts at once (compat/src/readable_queries.hpp); on BSD there is
  // no such descriptor and this closes nothing.
  auto kq = new_queue();
  auto listener = tcp_listener(64);
  std::vector<Fd> clients, accepted;
  for (int i = 0; i < 16; ++i) {
    clients.push_back(tcp_connect(listener));
    accepted.emplace_back(accept(listener, nullptr, nullptr));
    add(kq, static_cast<uintptr_t>(accepted.back().get()), EVFILT_READ);
    write_bytes(clients.back().get(), 10 + static_cast<size_t>(i));
  }
  const auto counts_right = [&](size_t extra) {
    std::vector<struct kevent> events;
    for (int attempt = 0; attempt < 50 && events.size() != accepted.size(); ++attempt) events = wait(kq, 100, 64);
    INFO(describe_all(events));
    REQUIRE(events.size() == accepted.size());
    for (const auto& event : events) {
      size_t i = 0;
      while (accepted[i].get() != static_cast<int>(event.ident)) ++i;
      CHECK(event.data == static_cast<int64_t>(10 + i + extra));
    }
  };
  counts_right(0);
  for (const int fd : descriptors_named("anon_inode:[io_uring]")) REQUIRE(close(fd) == 0);
  for (auto& client : clients) write_bytes(client.get(), 1);
  counts_right(1);
}

}  // TEST_SUITE
