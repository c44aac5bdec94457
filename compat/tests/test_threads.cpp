// Several threads and one queue (kqueue(2): kevent() may be called from several threads at once), and close()
// from places a program may call it: another thread, a signal handler. Run under ThreadSanitizer too.
#include <signal.h>

#include <atomic>
#include <thread>

#include "support.hpp"

using namespace kqtest;

TEST_SUITE("threads") {

TEST_CASE("a change made by another thread wakes a thread blocked in kevent() with no timeout") {
  auto kq = new_queue();
  auto pair = socket_pair();
  std::atomic<int> returned{-2};
  struct kevent event {};
  std::thread waiter([&] { returned = kevent(kq, nullptr, 0, &event, 1, nullptr); });
  add(kq, pair.a, EVFILT_WRITE);  // writable at once
  waiter.join();
  CHECK(returned == 1);
  CHECK(event.ident == static_cast<uintptr_t>(pair.a.get()));
}

TEST_CASE("EV_ENABLE from another thread wakes the waiter when the condition already holds") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ, EV_DISPATCH);
  write_bytes(pair.b, 1);
  expect_event(kq, pair.a, EVFILT_READ);  // now disabled, the byte still unread
  std::atomic<int> returned{-2};
  struct kevent event {};
  std::thread waiter([&] {
    const timespec limit{5, 0};
    returned = kevent(kq, nullptr, 0, &event, 1, &limit);
  });
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_ENABLE)}) == 0);
  waiter.join();
  CHECK(returned == 1);
}

TEST_CASE("closing a watched descriptor while another thread waits: no event for it afterwards") {
  auto kq = new_queue();
  auto pair = socket_pair();
  Fd keep(dup(pair.a));
  add(kq, pair.a, EVFILT_READ);
  std::atomic<int> returned{-2};
  std::thread waiter([&] {
    struct kevent event;
    const timespec limit{0, 200'000'000};
    returned = kevent(kq, nullptr, 0, &event, 1, &limit);
  });
  pair.a.reset();
  write_bytes(pair.b, 1);
  waiter.join();
  CHECK(returned == 0);
}

namespace {
std::atomic<int> fd_to_close{-1};
void close_in_handler(int) { close(fd_to_close.exchange(-1)); }
}  // namespace

TEST_CASE("close() from a signal handler removes the events too (async-signal-safe)") {
  auto kq = new_queue();
  auto pair = socket_pair();
  Fd keep(dup(pair.a));
  add(kq, pair.a, EVFILT_READ);
  fd_to_close = pair.a.release();
  struct sigaction action {};
  action.sa_handler = close_in_handler;
  struct sigaction old;
  REQUIRE(sigaction(SIGUSR1, &action, &old) == 0);
  REQUIRE(raise(SIGUSR1) == 0);
  sigaction(SIGUSR1, &old, nullptr);
  CHECK(fd_to_close == -1);
  write_bytes(pair.b, 1);
  expect_nothing(kq);
}

TEST_CASE("several threads draining one queue: each EV_DISPATCH event goes to exactly one of them") {
  auto kq = new_queue();
  constexpr int kPairs = 8;
  std::vector<Pair> pairs;
  for (int i = 0; i < kPairs; ++i) pairs.push_back(socket_pair());
  for (auto& pair : pairs) add(kq, pair.a, EVFILT_READ, EV_DISPATCH);
  for (auto& pair : pairs) write_bytes(pair.b, 1);
  std::atomic<int> delivered{0};
  auto drain = [&] {
    for (;;) {
      struct kevent event;
      const timespec limit{0, 100'000'000};
      const int n = kevent(kq, nullptr, 0, &event, 1, &limit);
      if (n <= 0) return;
      delivered.fetch_add(1);
    }
  };
  std::thread first(drain), second(drain), third(drain);
  first.join();
  second.join();
  third.join();
  CHECK(delivered == kPairs);
}

}  // TEST_SUITE
