// A descriptor number closed by one thread and handed out again by accept() while other threads are inside
// kevent() on the same queue. On BSD, close() removes the old file's knotes before the number can be reused
// (knote_fdclose, under the descriptor table's lock): the number's next registration is a new knote on a new
// file, and it must fire like any other, whatever the other threads were doing with the old one. Run under
// ThreadSanitizer too (the `threads` suite).
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace kqtest;

TEST_SUITE("threads") {

TEST_CASE("a number closed and accepted again while other threads wait: each new connection's event arrives") {
  auto kq = new_queue();
  auto listener = tcp_listener(64);
  constexpr int kWaiters = 3;
  constexpr int kRounds = 200;
  constexpr int64_t kBudgetMs = 4000;   // the whole case, however slow the machine: rounds stop there
  constexpr int64_t kArrivalMs = 2000;  // one connection's event, from its byte being written
  std::atomic<bool> done{false};
  std::atomic<intptr_t> arrived{0};  // the latest round whose read event a waiter got (udata = round)
  std::atomic<int> failed_calls{0};

  // The waiters keep the queue busy with the current connection's level write event, so that when it is closed
  // they are likely to be in the middle of its record: the close, the reuse and their scans overlap.
  auto waiter = [&] {
    while (!done.load()) {
      struct kevent events[4];
      const timespec limit{0, 20'000'000};
      const int n = kevent(kq, nullptr, 0, events, 4, &limit);
      if (n < 0) {
        if (errno != EINTR) failed_calls.fetch_add(1);
        continue;
      }
      for (int i = 0; i < n; ++i) {
        if (events[i].filter != EVFILT_READ) continue;
        const auto round = reinterpret_cast<intptr_t>(events[i].udata);
        intptr_t seen = arrived.load();
        while (seen < round && !arrived.compare_exchange_weak(seen, round)) {
        }
      }
    }
  };
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) waiters.emplace_back(waiter);

  const auto start = Clock::now();
  int rounds = 0;
  int lost = 0;
  int reused = 0;
  int previous = -1;
  for (intptr_t round = 1; round <= kRounds && ms_since(start) < kBudgetMs; ++round) {
    Fd client = tcp_connect(listener);
    Fd server(accept(listener, nullptr, nullptr));
    REQUIRE(server.get() >= 0);
    if (server.get() == previous) ++reused;
    previous = server.get();
    REQUIRE(apply(kq, {change(server, EVFILT_WRITE, EV_ADD),
                       change(server, EVFILT_READ, EV_ADD | EV_DISPATCH, 0, 0, reinterpret_cast<void*>(round))}) == 0);
    write_bytes(client, 1);
    const auto written = Clock::now();
    while (arrived.load() < round && ms_since(written) < kArrivalMs) std::this_thread::yield();
    if (arrived.load() < round) ++lost;
    ++rounds;
    server.reset();  // while the waiters are busy with its write event
  }
  done = true;
  for (auto& thread : waiters) thread.join();

  INFO(rounds << " rounds, the number reused in " << reused);
  CHECK(lost == 0);
  CHECK(failed_calls == 0);
  CHECK(rounds >= 20);
  CHECK(reused > rounds / 2);  // the case is about reuse: accept() hands out the lowest free number
}

}  // TEST_SUITE("threads")
