// kevent()'s call semantics (kqueue(2), "RETURN VALUES" and the description of kevent()): which descriptor,
// the order in which changes apply, error and receipt entries, timeouts and signals.
#include <poll.h>
#include <signal.h>
#include <sys/time.h>

#include <chrono>
#include <set>

#include "support.hpp"

using namespace kqtest;

TEST_SUITE("kevent call") {

TEST_CASE("kqueue() gives a descriptor that close() releases") {
  const int kq = kqueue();
  REQUIRE(kq >= 0);
  CHECK(fcntl(kq, F_GETFD) != -1);
  CHECK(close(kq) == 0);
  CHECK(fcntl(kq, F_GETFD) == -1);
}

TEST_CASE("a bad queue descriptor gives EBADF") {
  struct kevent event;
  CHECK(kevent(-1, nullptr, 0, &event, 1, nullptr) == -1);
  CHECK(errno == EBADF);
  const int kq = kqueue();
  close(kq);
  CHECK(kevent(kq, nullptr, 0, &event, 1, nullptr) == -1);
  CHECK(errno == EBADF);
}

TEST_CASE("a descriptor that is not a queue gives EINVAL (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS answers EBADF
  auto pipe = pipe_pair();
  struct kevent event;
  CHECK(kevent(pipe.a, nullptr, 0, &event, 1, nullptr) == -1);
  CHECK(errno == EINVAL);
}

TEST_CASE("an invalid timespec gives EINVAL") {
  auto kq = new_queue();
  struct kevent event;
  for (const timespec bad : {timespec{-1, 0}, timespec{0, -1}, timespec{0, 1'000'000'000}}) {
    CHECK(kevent(kq, nullptr, 0, &event, 1, &bad) == -1);
    CHECK(errno == EINVAL);
  }
}

TEST_CASE("{0,0} polls and returns 0 at once; a timeout returns 0 when it runs out") {
  auto kq = new_queue();
  struct kevent event;
  const timespec zero{0, 0};
  CHECK(kevent(kq, nullptr, 0, &event, 1, &zero) == 0);
  const auto start = std::chrono::steady_clock::now();
  const timespec short_wait{0, 30'000'000};
  CHECK(kevent(kq, nullptr, 0, &event, 1, &short_wait) == 0);
  const auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited >= std::chrono::milliseconds(29));
  CHECK(waited < std::chrono::seconds(2));
}

TEST_CASE("nevents == 0 never waits, even with a NULL timeout") {
  auto kq = new_queue();
  CHECK(kevent(kq, nullptr, 0, nullptr, 0, nullptr) == 0);
}

namespace {
void on_alarm(int) {}
}  // namespace

TEST_CASE("a caught signal interrupts the wait with EINTR, even with SA_RESTART") {
  auto kq = new_queue();
  struct sigaction action {};
  action.sa_handler = on_alarm;
  action.sa_flags = SA_RESTART;
  struct sigaction old;
  REQUIRE(sigaction(SIGALRM, &action, &old) == 0);
  itimerval timer{{0, 0}, {0, 20'000}};
  REQUIRE(setitimer(ITIMER_REAL, &timer, nullptr) == 0);
  struct kevent event;
  const timespec limit{5, 0};
  const int n = kevent(kq, nullptr, 0, &event, 1, &limit);
  const int error = errno;
  sigaction(SIGALRM, &old, nullptr);
  CHECK(n == -1);
  CHECK(error == EINTR);
}

TEST_CASE("changes apply in order; a failure is an EV_ERROR entry while there is room") {
  auto kq = new_queue();
  auto pair = socket_pair();
  int marker;
  std::vector<struct kevent> changes = {
      change(pair.a, EVFILT_READ, EV_ADD, 0, 0, &marker),
      change(pair.b, EVFILT_READ, EV_DELETE, 0, 0, &marker),  // never added: ENOENT
      change(pair.b, EVFILT_WRITE, EV_ADD),
  };
  std::vector<struct kevent> out(4);
  const int n = kevent(kq, changes.data(), 3, out.data(), 4, nullptr);
  REQUIRE(n == 1);
  CHECK(out[0].ident == static_cast<uintptr_t>(pair.b.get()));
  CHECK(out[0].filter == EVFILT_READ);
  CHECK((out[0].flags & EV_ERROR));
  CHECK(out[0].data == ENOENT);
  CHECK(out[0].udata == &marker);
  // Both good changes were applied: b is writable, a has nothing yet.
  const auto events = wait(kq);
  INFO(describe_all(events));
  REQUIRE(events.size() == 1);
  CHECK(events[0].filter == EVFILT_WRITE);
}

TEST_CASE("with no room left a failing change ends the call: -1, its errno, later changes not applied") {
  auto kq = new_queue();
  auto pair = socket_pair();
  std::vector<struct kevent> changes = {
      change(pair.a, EVFILT_WRITE, EV_ADD),
      change(pair.a, EVFILT_READ, EV_DELETE),  // ENOENT
      change(pair.b, EVFILT_WRITE, EV_ADD),    // never reached
  };
  CHECK(kevent(kq, changes.data(), 3, nullptr, 0, nullptr) == -1);
  CHECK(errno == ENOENT);
  const auto events = wait(kq);
  INFO(describe_all(events));
  REQUIRE(events.size() == 1);
  CHECK(events[0].ident == static_cast<uintptr_t>(pair.a.get()));
}

TEST_CASE("error entries written before running out of room stay, though the call returns -1") {
  auto kq = new_queue();
  auto pair = socket_pair();
  std::vector<struct kevent> changes = {
      change(pair.a, EVFILT_READ, EV_DELETE),
      change(pair.b, EVFILT_READ, EV_DELETE),
  };
  struct kevent out[1];
  CHECK(kevent(kq, changes.data(), 2, out, 1, nullptr) == -1);
  CHECK(errno == ENOENT);
  CHECK(out[0].ident == static_cast<uintptr_t>(pair.a.get()));
  CHECK((out[0].flags & EV_ERROR));
}

TEST_CASE("receipts and errors are returned without scanning or waiting, pending events or not") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_WRITE);  // pending from now on
  std::vector<struct kevent> changes = {change(pair.b, EVFILT_WRITE, EV_ADD | EV_RECEIPT)};
  std::vector<struct kevent> out(8);
  const int n = kevent(kq, changes.data(), 1, out.data(), 8, nullptr);  // NULL timeout: must not block
  REQUIRE(n == 1);
  CHECK(out[0].ident == static_cast<uintptr_t>(pair.b.get()));
  CHECK((out[0].flags & EV_ERROR));
  CHECK(out[0].data == 0);
}

TEST_CASE("one array may serve as changelist and eventlist") {
  auto kq = new_queue();
  auto pair = socket_pair();
  std::vector<struct kevent> list = {change(pair.a, EVFILT_WRITE, EV_ADD), change(pair.b, EVFILT_WRITE, EV_ADD)};
  const timespec limit{1, 0};
  const int n = kevent(kq, list.data(), 2, list.data(), 2, &limit);
  REQUIRE(n == 2);
  CHECK(list[0].filter == EVFILT_WRITE);
  CHECK(!(list[0].flags & EV_ERROR));
}

TEST_CASE("filter 0 is skipped silently (FreeBSD)" * doctest::skip(kMacOS)) {  // macOS: EINVAL
  auto kq = new_queue();
  CHECK(apply(kq, {change(0, 0, EV_ADD)}) == 0);
}

TEST_CASE("an unknown filter, or EV_ENABLE with EV_DISABLE, gives EINVAL") {
  auto kq = new_queue();
  auto pair = socket_pair();
  CHECK(apply(kq, {change(pair.a, -100, EV_ADD)}) == -1);
  CHECK(errno == EINVAL);
  add(kq, pair.a, EVFILT_READ);
  if (!kMacOS) {  // macOS lets EV_DISABLE win
    CHECK(apply(kq, {change(pair.a, EVFILT_READ, EV_ENABLE | EV_DISABLE)}) == -1);
    CHECK(errno == EINVAL);
  }
}

TEST_CASE("EV_DELETE or EV_ENABLE of an event never added gives ENOENT") {
  auto kq = new_queue();
  auto pair = socket_pair();
  for (const unsigned short flags : {EV_DELETE, EV_ENABLE, EV_DISABLE}) {
    CHECK(apply(kq, {change(pair.a, EVFILT_READ, flags)}) == -1);
    CHECK(errno == ENOENT);
  }
}

TEST_CASE("EV_ADD of a descriptor that is not open gives EBADF") {
  auto kq = new_queue();
  auto pair = socket_pair();
  const int closed = pair.a.release();
  close(closed);
  CHECK(apply(kq, {change(closed, EVFILT_READ, EV_ADD)}) == -1);
  CHECK(errno == EBADF);
}

TEST_CASE("the queue descriptor is readable while events are pending") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ);
  pollfd probe{kq, POLLIN, 0};
  CHECK(poll(&probe, 1, 0) == 0);
  write_bytes(pair.b, 3);
  CHECK(poll(&probe, 1, 1000) == 1);
  CHECK((probe.revents & POLLIN));
}

TEST_CASE("the same condition is not returned twice in one call") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ);
  write_bytes(pair.b, 1);
  const auto events = wait(kq, 1000, 8);
  INFO(describe_all(events));
  CHECK(events.size() == 1);
}

TEST_CASE("more events than room: the rest come with the next calls, none lost") {
  auto kq = new_queue();
  std::vector<Pair> pairs;
  for (int i = 0; i < 10; ++i) pairs.push_back(socket_pair());
  for (auto& pair : pairs) add(kq, pair.a, EVFILT_READ, EV_CLEAR);  // edge: a missed one would not come back
  for (auto& pair : pairs) write_bytes(pair.b, 1);
  std::vector<uintptr_t> seen;
  for (int call = 0; call < 10 && seen.size() < 10; ++call) {
    for (const auto& event : wait(kq, 1000, 3)) seen.push_back(event.ident);
  }
  CHECK(seen.size() == 10);
}

TEST_CASE("a full event list: 200 ready events come back in one call when there is room for them") {
  constexpr int kReady = 200;
  for (const unsigned short mode : {0, EV_CLEAR}) {  // level entries come back from epoll; edge ones do not
    INFO((mode ? "EV_CLEAR" : "level"));
    auto kq = new_queue();
    std::vector<Pair> pairs;
    for (int i = 0; i < kReady; ++i) pairs.push_back(socket_pair());
    for (auto& pair : pairs) add(kq, pair.a, EVFILT_READ, mode);
    for (auto& pair : pairs) write_bytes(pair.b, 1);
    const auto events = wait(kq, 1000, kReady + 50);
    CHECK(events.size() == static_cast<size_t>(kReady));
    std::set<uintptr_t> distinct;
    for (const auto& event : events) distinct.insert(event.ident);
    CHECK(distinct.size() == static_cast<size_t>(kReady));
  }
}

TEST_CASE("a full event list: exactly nevents come back when more are ready, of any filter") {
  auto kq = new_queue();
  constexpr uintptr_t kUser = 150;
  for (uintptr_t ident = 0; ident < kUser; ++ident) add(kq, ident, EVFILT_USER, EV_CLEAR);
  std::vector<Pair> pairs;
  for (int i = 0; i < 100; ++i) pairs.push_back(socket_pair());
  for (auto& pair : pairs) add(kq, pair.a, EVFILT_READ, EV_CLEAR);
  for (auto& pair : pairs) write_bytes(pair.b, 1);
  std::vector<struct kevent> triggers;
  for (uintptr_t ident = 0; ident < kUser; ++ident) triggers.push_back(change(ident, EVFILT_USER, 0, NOTE_TRIGGER));
  REQUIRE(kqtest::apply(kq, triggers) == 0);
  CHECK(wait(kq, 1000, 200).size() == 200u);
  CHECK(wait(kq, 1000, 200).size() == 50u);  // the rest, none lost
}

}  // TEST_SUITE
