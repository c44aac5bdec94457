// Several threads blocked in kevent() on one queue (kqueue(2): the queue may be used from several threads at
// once; FreeBSD's kqueue_scan sleeps on the queue and every activation wakes the sleepers). What a program built
// on a thread pool relies on: an event that becomes pending while threads sleep on the queue wakes one of them at
// once, whatever its source; a knote that delivers once (EV_ONESHOT, EV_DISPATCH, EV_CLEAR for one trigger) goes
// to exactly one thread; and threads that wait burn no CPU. Every wait here is bounded; run under
// ThreadSanitizer too (`threads` label).
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace kqtest;

namespace {

// There is no portable way to know that a thread is asleep inside kevent(); this gives them time to get there.
// A thread that is late only makes the test easier to pass, never a false failure.
void let_threads_block() { std::this_thread::sleep_for(std::chrono::milliseconds(50)); }

// CPU time (user + system) the whole process has used, in milliseconds.
int64_t process_cpu_ms() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto ms = [](const timeval& t) { return static_cast<int64_t>(t.tv_sec) * 1000 + t.tv_usec / 1000; };
  return ms(usage.ru_utime) + ms(usage.ru_stime);
}

// What `threads` threads draining `kq` got, one event per call, until `expected` events have come and then
// `settle_ms` more (to catch a second delivery), or 3 s at most. Counted by (ident, filter).
std::map<std::pair<uintptr_t, short>, int> drain_with_threads(int kq, int threads, int expected, int settle_ms = 60) {
  std::mutex lock;
  std::map<std::pair<uintptr_t, short>, int> seen;
  std::atomic<int> total{0};
  const auto start = Clock::now();
  auto drain = [&] {
    while (total < expected && ms_since(start) < 3000) {
      struct kevent event;
      const timespec limit{0, 20'000'000};
      if (kevent(kq, nullptr, 0, &event, 1, &limit) != 1) continue;
      std::lock_guard guard(lock);
      ++seen[{event.ident, event.filter}];
      ++total;
    }
    // One more look each: a knote that delivered twice would show here.
    struct kevent event;
    const timespec settle{0, settle_ms * 1'000'000L};
    if (kevent(kq, nullptr, 0, &event, 1, &settle) == 1) {
      std::lock_guard guard(lock);
      ++seen[{event.ident, event.filter}];
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(drain);
  for (auto& thread : pool) thread.join();
  return seen;
}

// Every one of `count` knotes of `filter` (idents first..first+count-1) was delivered exactly once.
void check_each_once(const std::map<std::pair<uintptr_t, short>, int>& seen, short filter, uintptr_t first,
                     int count) {
  for (uintptr_t ident = first; ident < first + static_cast<uintptr_t>(count); ++ident) {
    const auto found = seen.find({ident, filter});
    INFO("ident " << ident << " filter " << filter);
    CHECK((found == seen.end() ? 0 : found->second) == 1);
  }
  CHECK(seen.size() == static_cast<size_t>(count));
}

}  // namespace

TEST_SUITE("threads") {

TEST_CASE("two threads relay an EV_CLEAR user event: each trigger wakes the other within milliseconds") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  constexpr int kRounds = 10;
  std::atomic<int> handled{0};
  std::atomic<int64_t> slowest{0};
  auto relay = [&] {
    while (handled < kRounds) {
      struct kevent event;
      const timespec limit{3, 0};
      const auto asked = Clock::now();
      const int n = kevent(kq, nullptr, 0, &event, 1, &limit);
      if (n != 1) return;  // a timeout: the check below says so
      int64_t waited = ms_since(asked), before = slowest;
      while (waited > before && !slowest.compare_exchange_weak(before, waited)) {
      }
      ++handled;
      const struct kevent again = change(1, EVFILT_USER, 0, NOTE_TRIGGER);
      kevent(kq, &again, 1, nullptr, 0, nullptr);  // for the other thread, which is asleep on the queue
    }
  };
  const auto start = Clock::now();
  std::thread first(relay), second(relay);
  let_threads_block();
  trigger(kq, 1);
  first.join();
  second.join();
  INFO("slowest wake-up " << slowest.load() << " ms, whole relay " << ms_since(start) << " ms");
  CHECK(handled >= kRounds);
  CHECK(ms_since(start) < 1000);
}

TEST_CASE("a level user event taken by one thread is still there for another thread already waiting") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER);  // no EV_CLEAR: stays triggered, every call returns it
  std::atomic<int> first_got{-2};
  std::thread first([&] {
    struct kevent event;
    const timespec limit{2, 0};
    first_got = kevent(kq, nullptr, 0, &event, 1, &limit);
  });
  let_threads_block();
  std::atomic<int> second_got{-2};
  std::atomic<int64_t> second_waited{0};
  std::thread second([&] {
    struct kevent event;
    const timespec limit{2, 0};
    const auto asked = Clock::now();
    second_got = kevent(kq, nullptr, 0, &event, 1, &limit);
    second_waited = ms_since(asked);
  });
  let_threads_block();
  trigger(kq, 1);
  first.join();
  second.join();
  CHECK(first_got == 1);
  CHECK(second_got == 1);
  CHECK(second_waited < 1000);
}

TEST_CASE("N threads blocked, N events made pending at once: each thread gets one") {
  auto kq = new_queue();
  constexpr int kThreads = 4;
  for (uintptr_t ident = 1; ident <= kThreads; ++ident) add(kq, ident, EVFILT_USER, EV_CLEAR);
  std::mutex lock;
  std::map<uintptr_t, int> got;
  std::atomic<int> returned_one{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < kThreads; ++i) {
    pool.emplace_back([&] {
      struct kevent event;
      const timespec limit{2, 0};
      if (kevent(kq, nullptr, 0, &event, 1, &limit) != 1) return;
      ++returned_one;
      std::lock_guard guard(lock);
      ++got[event.ident];
    });
  }
  let_threads_block();
  const auto start = Clock::now();
  std::vector<struct kevent> triggers;
  for (uintptr_t ident = 1; ident <= kThreads; ++ident) triggers.push_back(change(ident, EVFILT_USER, 0, NOTE_TRIGGER));
  REQUIRE(kqtest::apply(kq, triggers) == 0);
  for (auto& thread : pool) thread.join();
  CHECK(returned_one == kThreads);
  CHECK(got.size() == static_cast<size_t>(kThreads));
  CHECK(ms_since(start) < 1000);
}

TEST_CASE("every source wakes a blocked thread at once: descriptor, timer, signal, nested queue") {
  auto kq = new_queue();
  auto pair = socket_pair();
  KeepDisposition keep(SIGUSR2);
  signal(SIGUSR2, SIG_IGN);  // BSD records a signal even while it is ignored
  add(kq, pair.a, EVFILT_READ, EV_CLEAR);
  add(kq, SIGUSR2, EVFILT_SIGNAL);
  auto inner = new_queue();
  add(inner, 7, EVFILT_USER, EV_CLEAR);
  add(kq, inner, EVFILT_READ, EV_CLEAR);
  add(kq, 99, EVFILT_USER, EV_CLEAR);  // releases the thread that did not get the event
  const std::vector<std::pair<const char*, std::function<void()>>> sources = {
      {"a byte written", [&] { write_bytes(pair.b, 1); }},
      {"a timer added", [&] { add_timer(kq, 9, 1, 0, EV_ONESHOT); }},
      {"a signal sent", [&] { REQUIRE(kill(getpid(), SIGUSR2) == 0); }},
      {"a trigger on a watched queue", [&] { trigger(inner, 7); }},
  };
  for (const auto& [what, make_pending] : sources) {
    INFO(what);
    std::atomic<int> got{-2};
    auto wait_one = [&] {
      struct kevent event;
      const timespec limit{2, 0};
      const int n = kevent(kq, nullptr, 0, &event, 1, &limit);
      int none = -2;
      got.compare_exchange_strong(none, n);
    };
    std::thread first(wait_one), second(wait_one);
    let_threads_block();
    const auto start = Clock::now();
    make_pending();
    // One thread takes the event, within milliseconds; then the other is released.
    while (got == -2 && ms_since(start) < 3000) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(got == 1);
    CHECK(ms_since(start) < 1000);  // at once: milliseconds; the waits themselves run for 2 s
    trigger(kq, 99);
    first.join();
    second.join();
  }
}

TEST_CASE("threads blocked on a queue with nothing to report burn no CPU") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ);
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  add_timer(kq, 2, 60'000);
  const int64_t before = process_cpu_ms();
  std::vector<std::thread> pool;
  for (int i = 0; i < 3; ++i) {
    pool.emplace_back([&] {
      struct kevent event;
      const timespec limit{0, 400'000'000};
      kevent(kq, nullptr, 0, &event, 1, &limit);
    });
  }
  for (auto& thread : pool) thread.join();
  const int64_t used = process_cpu_ms() - before;
  INFO("CPU used by 3 threads waiting 400 ms: " << used << " ms");
  CHECK(used < 100);  // a busy loop would use about 400 ms per thread
}

TEST_CASE("threads blocked when a level event fires all take it, and burn no CPU while each holds it") {
  // Level-triggered: every call returns the event while it stays triggered. Each thread keeps what it got for
  // 300 ms without calling kevent() again; none may be left spinning for the others to come back.
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER);
  const int64_t before = process_cpu_ms();
  std::atomic<int> deliveries{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < 3; ++i) {
    pool.emplace_back([&] {
      struct kevent event;
      const timespec limit{0, 400'000'000};
      if (kevent(kq, nullptr, 0, &event, 1, &limit) != 1) return;
      ++deliveries;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    });
  }
  let_threads_block();
  trigger(kq, 1);
  for (auto& thread : pool) thread.join();
  const int64_t used = process_cpu_ms() - before;
  INFO("CPU used: " << used << " ms");
  CHECK(deliveries == 3);
  CHECK(used < 100);  // a thread spinning until its timeout would use about 400 ms
}

TEST_CASE("EV_CLEAR user event, one trigger, four threads blocked: exactly one thread gets it") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  std::atomic<int> got{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < 4; ++i) {
    pool.emplace_back([&] {
      struct kevent event;
      const timespec limit{0, 300'000'000};
      if (kevent(kq, nullptr, 0, &event, 1, &limit) == 1) ++got;
    });
  }
  let_threads_block();
  trigger(kq, 1);
  for (auto& thread : pool) thread.join();
  CHECK(got == 1);
}

TEST_CASE("EV_ONESHOT and EV_DISPATCH across four threads: each user event delivered exactly once") {
  for (const unsigned short mode : {EV_ONESHOT, EV_DISPATCH}) {
    INFO((mode == EV_ONESHOT ? "EV_ONESHOT" : "EV_DISPATCH"));
    auto kq = new_queue();
    constexpr int kEvents = 32;
    for (uintptr_t ident = 0; ident < kEvents; ++ident) add(kq, ident, EVFILT_USER, mode);  // level: no EV_CLEAR
    std::thread triggerer([&] {
      let_threads_block();
      for (uintptr_t ident = 0; ident < kEvents; ++ident) trigger(kq, ident);
    });
    const auto seen = drain_with_threads(kq, 4, kEvents);
    triggerer.join();
    check_each_once(seen, EVFILT_USER, 0, kEvents);
  }
}

TEST_CASE("EV_ONESHOT and EV_DISPATCH across four threads: each timer delivered exactly once") {
  for (const unsigned short mode : {EV_ONESHOT, EV_DISPATCH}) {
    INFO((mode == EV_ONESHOT ? "EV_ONESHOT" : "EV_DISPATCH"));
    auto kq = new_queue();
    constexpr int kTimers = 16;
    // Periodic every 1-4 ms: without single delivery a dispatch timer would come back many times.
    for (uintptr_t ident = 0; ident < kTimers; ++ident) add_timer(kq, ident, 1 + ident % 4, 0, mode);
    const auto seen = drain_with_threads(kq, 4, kTimers);
    check_each_once(seen, EVFILT_TIMER, 0, kTimers);
  }
}

TEST_CASE("EV_ONESHOT and EV_DISPATCH across four threads: each readable descriptor delivered exactly once") {
  for (const unsigned short mode : {EV_ONESHOT, EV_DISPATCH}) {
    INFO((mode == EV_ONESHOT ? "EV_ONESHOT" : "EV_DISPATCH"));
    auto kq = new_queue();
    constexpr int kPairs = 16;
    std::vector<Pair> pairs;
    for (int i = 0; i < kPairs; ++i) pairs.push_back(socket_pair());
    for (auto& pair : pairs) add(kq, pair.a, EVFILT_READ, mode);  // level, and the bytes are never read
    std::thread writer([&] {
      let_threads_block();
      for (auto& pair : pairs) write_bytes(pair.b, 1);
    });
    const auto seen = drain_with_threads(kq, 4, kPairs);
    writer.join();
    CHECK(seen.size() == static_cast<size_t>(kPairs));
    for (auto& pair : pairs) {
      const auto found = seen.find({static_cast<uintptr_t>(pair.a.get()), EVFILT_READ});
      CHECK((found == seen.end() ? 0 : found->second) == 1);
    }
  }
}

TEST_CASE("EV_ONESHOT and EV_DISPATCH across four threads: each signal delivered exactly once") {
  for (const unsigned short mode : {EV_ONESHOT, EV_DISPATCH}) {
    INFO((mode == EV_ONESHOT ? "EV_ONESHOT" : "EV_DISPATCH"));
    KeepDisposition keep_usr1(SIGUSR1), keep_usr2(SIGUSR2);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    auto kq = new_queue();
    add(kq, SIGUSR1, EVFILT_SIGNAL, mode);
    add(kq, SIGUSR2, EVFILT_SIGNAL, mode);
    std::thread sender([&] {
      let_threads_block();
      for (const int sig : {SIGUSR1, SIGUSR2}) {
        kill(getpid(), sig);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        kill(getpid(), sig);  // a second send before anyone re-enables: still one delivery
      }
    });
    const auto seen = drain_with_threads(kq, 4, 2, 100);
    sender.join();
    for (const int sig : {SIGUSR1, SIGUSR2}) {
      const auto found = seen.find({static_cast<uintptr_t>(sig), EVFILT_SIGNAL});
      INFO("signal " << sig);
      CHECK((found == seen.end() ? 0 : found->second) == 1);
    }
    CHECK(seen.size() == 2u);
  }
}

}  // TEST_SUITE
