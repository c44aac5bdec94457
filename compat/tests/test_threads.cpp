// Several threads and one queue (kqueue(2): kevent() may be called from several threads at once), and close()
// from places a program may call it: another thread, a signal handler. Run under ThreadSanitizer too.
#include <signal.h>

#include <atomic>
#include <mutex>
#include <set>
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

TEST_CASE("a user event triggered by another thread wakes a thread blocked in kevent() with no timeout") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  std::atomic<int> returned{-2};
  struct kevent event {};
  std::thread waiter([&] { returned = kevent(kq, nullptr, 0, &event, 1, nullptr); });
  trigger(kq, 1, NOTE_FFNOP, 99);
  waiter.join();
  CHECK(returned == 1);
  CHECK(event.filter == EVFILT_USER);
  CHECK(event.data == 99);
}

TEST_CASE("a timer added by another thread wakes a thread blocked in kevent() with no timeout") {
  auto kq = new_queue();
  std::atomic<int> returned{-2};
  struct kevent event {};
  std::thread waiter([&] { returned = kevent(kq, nullptr, 0, &event, 1, nullptr); });
  add_timer(kq, 1, 10, 0, EV_ONESHOT);
  waiter.join();
  CHECK(returned == 1);
  CHECK(event.filter == EVFILT_TIMER);
}

TEST_CASE("deleting a timer from another thread: the waiter is not woken by it") {
  auto kq = new_queue();
  add_timer(kq, 1, 100, 0, EV_ONESHOT);
  std::atomic<int> returned{-2};
  std::thread waiter([&] {
    struct kevent event;
    const timespec limit{0, 300'000'000};
    returned = kevent(kq, nullptr, 0, &event, 1, &limit);
  });
  REQUIRE(apply(kq, {change(1, EVFILT_TIMER, EV_DELETE)}) == 0);
  waiter.join();
  CHECK(returned == 0);
}

TEST_CASE("a trigger on an inner queue wakes a thread blocked on the outer queue") {
  auto inner = new_queue();
  auto outer = new_queue();
  add(inner, 1, EVFILT_USER, EV_CLEAR);
  add(outer, inner, EVFILT_READ, EV_CLEAR);
  std::atomic<int> returned{-2};
  struct kevent event {};
  std::thread waiter([&] {
    const timespec limit{5, 0};
    returned = kevent(outer, nullptr, 0, &event, 1, &limit);
  });
  trigger(inner, 1);
  waiter.join();
  CHECK(returned == 1);
  CHECK(event.ident == static_cast<uintptr_t>(inner.get()));
  CHECK(event.data == 1);
}

TEST_CASE("several threads draining one queue: each EV_ONESHOT user event goes to exactly one of them") {
  auto kq = new_queue();
  constexpr uintptr_t kEvents = 64;
  for (uintptr_t ident = 0; ident < kEvents; ++ident) add(kq, ident, EVFILT_USER, EV_ONESHOT);
  std::mutex seen_lock;
  std::multiset<uintptr_t> seen;
  auto drain = [&] {
    for (;;) {
      struct kevent events[4];
      const timespec limit{0, 200'000'000};
      const int n = kevent(kq, nullptr, 0, events, 4, &limit);
      if (n <= 0) return;
      std::lock_guard guard(seen_lock);
      for (int i = 0; i < n; ++i) seen.insert(events[i].ident);
    }
  };
  std::thread first(drain), second(drain), third(drain);
  std::vector<struct kevent> triggers;
  for (uintptr_t ident = 0; ident < kEvents; ++ident) triggers.push_back(change(ident, EVFILT_USER, 0, NOTE_TRIGGER));
  REQUIRE(kqtest::apply(kq, triggers) == 0);  // qualified: std::apply is found too
  first.join();
  second.join();
  third.join();
  CHECK(seen.size() == kEvents);
  for (uintptr_t ident = 0; ident < kEvents; ++ident) CHECK(seen.count(ident) == 1);
}

TEST_CASE("an EV_DISPATCH timer belongs to one thread at a time, until it re-enables it") {
  auto kq = new_queue();
  add_timer(kq, 1, 2, 0, EV_DISPATCH);
  std::atomic<bool> owned{false};
  std::atomic<int> deliveries{0}, overlaps{0};
  const auto start = Clock::now();
  auto serve = [&] {
    while (ms_since(start) < 300) {
      struct kevent event;
      const timespec limit{0, 50'000'000};
      if (kevent(kq, nullptr, 0, &event, 1, &limit) != 1) continue;
      if (owned.exchange(true)) overlaps.fetch_add(1);
      deliveries.fetch_add(1);
      std::this_thread::yield();  // "handle" it: long enough for another thread to look
      owned = false;
      const struct kevent enable = change(1, EVFILT_TIMER, EV_ENABLE, 0, 2);
      kevent(kq, &enable, 1, nullptr, 0, nullptr);
    }
  };
  std::thread first(serve), second(serve), third(serve);
  first.join();
  second.join();
  third.join();
  INFO(deliveries << " deliveries");
  CHECK(deliveries >= 10);
  CHECK(overlaps == 0);
}

TEST_CASE("threads adding and deleting timers while others wait on the queue") {
  auto kq = new_queue();
  std::atomic<bool> done{false};
  std::atomic<int> fired{0};
  auto wait_loop = [&] {
    while (!done) {
      struct kevent events[16];
      const timespec limit{0, 20'000'000};
      const int n = kevent(kq, nullptr, 0, events, 16, &limit);
      if (n > 0) fired.fetch_add(n);
    }
  };
  std::thread first(wait_loop), second(wait_loop);
  for (int round = 0; round < 200; ++round) {
    for (uintptr_t ident = 0; ident < 20; ++ident) add_timer(kq, ident, 1 + (ident + round) % 5);
    for (uintptr_t ident = 0; ident < 20; ident += 2) REQUIRE(apply(kq, {change(ident, EVFILT_TIMER, EV_DELETE)}) == 0);
  }
  const auto start = Clock::now();
  while (fired == 0 && ms_since(start) < 2000) std::this_thread::yield();
  done = true;
  first.join();
  second.join();
  CHECK(fired > 0);
}

}  // TEST_SUITE
