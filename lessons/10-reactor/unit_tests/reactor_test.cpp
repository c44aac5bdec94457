// Lesson 10: the reactor's unit tests (doctest). Each test suite is one part of the reactor's contract, and one
// pytest test in harness/10-reactor runs it (`./kqlab check 10`); by hand:
//
//     build/default/bin/workspace/10-reactor/unit_tests                        # every case
//     build/default/bin/workspace/10-reactor/unit_tests --test-suite=timers    # one suite
//
// The peers are socketpairs: one end opened in the reactor, the other read and written by the test directly.
// Every wait is bounded (scaled by KQLAB_TIMEOUT_SCALE, as the harness's), so a reactor that never calls back
// fails a check instead of hanging.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "reactor.hpp"
#include "setup.hpp"

namespace {

using reactor::kAborted;
using reactor::Reactor;
using Clock = Reactor::Clock;
using namespace std::chrono_literals;

// A write to a peer that is gone must fail with EPIPE, not kill the test program (reactor.hpp's contract).
const bool sigpipe_ignored = std::signal(SIGPIPE, SIG_IGN) != SIG_ERR;

Clock::duration scaled(Clock::duration base) {
  const char* text = std::getenv("KQLAB_TIMEOUT_SCALE");
  const double scale = text && std::atof(text) > 0 ? std::atof(text) : 1.0;
  return std::chrono::duration_cast<Clock::duration>(base * scale);
}

// A descriptor the test owns, closed when the test ends.
struct Owned {
  int fd;
  explicit Owned(int descriptor) : fd(descriptor) {}
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { ::close(fd); }
};

// A connected pair of stream sockets: `ours` to open in the reactor (which then owns it), `theirs` for the test,
// non-blocking.
struct Peer {
  int ours;
  Owned theirs;
};

Peer connected_pair() {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  kqlab::set_nonblocking(fds[1]);
  return Peer{fds[0], Owned(fds[1])};
}

void send_text(int fd, const std::string& text) {
  REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
}

// Everything that can be read from `fd` now (non-blocking).
std::string drain(int fd) {
  std::string text;
  char buffer[64 * 1024];
  ssize_t got = 0;
  while ((got = ::read(fd, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<std::size_t>(got));
  return text;
}

// `size` bytes in which a lost, repeated or reordered stretch shows.
std::string patterned(std::size_t size, char salt = 0) {
  std::string text(size, '\0');
  for (std::size_t i = 0; i < size; ++i) text[i] = static_cast<char>('a' + (i / 7 + salt) % 26);
  return text;
}

// Runs rounds until done() holds or `limit` (scaled) has passed; returns done().
template <class Condition>
bool run_until(Reactor& reactor, Condition done, Clock::duration limit = 2s) {
  const Clock::time_point deadline = Clock::now() + scaled(limit);
  while (!done() && Clock::now() < deadline) reactor.run_once(deadline - Clock::now());
  return done();
}

Clock::duration time_one_round(Reactor& reactor, Clock::duration max_wait, std::size_t& handlers) {
  const Clock::time_point start = Clock::now();
  handlers = reactor.run_once(max_wait);
  return Clock::now() - start;
}

}  // namespace

TEST_SUITE("operations") {
  TEST_CASE("a read completes with the bytes that came, and with 0 at the end of the stream") {
    Reactor reactor;
    Peer peer = connected_pair();
    reactor.open(peer.ours);
    char buffer[64];
    std::vector<std::pair<int, std::size_t>> results;
    const auto record = [&results](int error, std::size_t bytes) { results.emplace_back(error, bytes); };

    reactor.async_read(peer.ours, buffer, record);
    send_text(peer.theirs.fd, "ping");
    REQUIRE(run_until(reactor, [&] { return results.size() == 1; }));
    CHECK(results[0] == std::pair(0, std::size_t{4}));
    CHECK(std::string(buffer, 4) == "ping");

    REQUIRE(shutdown(peer.theirs.fd, SHUT_WR) == 0);
    reactor.async_read(peer.ours, buffer, record);
    REQUIRE(run_until(reactor, [&] { return results.size() == 2; }));
    CHECK(results[1] == std::pair(0, std::size_t{0}));
  }

  TEST_CASE("a write completes once every byte is out, however many write() calls it takes") {
    Reactor reactor;
    Peer peer = connected_pair();
    reactor.open(peer.ours);
    const std::string data = patterned(4 << 20);  // much more than a socket buffer holds
    std::optional<std::pair<int, std::size_t>> result;
    reactor.async_write(peer.ours, data, [&result](int error, std::size_t bytes) { result.emplace(error, bytes); });

    std::string received;
    REQUIRE(run_until(reactor, [&] {
      received += drain(peer.theirs.fd);
      return result.has_value() && received.size() == data.size();
    }, 10s));
    CHECK(result->first == 0);
    CHECK(result->second == data.size());
    CHECK(received == data);
  }

  TEST_CASE("an accept completes with a new non-blocking descriptor") {
    Reactor reactor;
    const int listener = kqlab::open_listener(kqlab::Address{});
    reactor.open(listener);
    sockaddr_in address{};
    socklen_t length = sizeof address;
    REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    Owned client(socket(AF_INET, SOCK_STREAM, 0));
    REQUIRE(connect(client.fd, reinterpret_cast<sockaddr*>(&address), length) == 0);

    std::optional<std::pair<int, int>> result;
    reactor.async_accept(listener, [&result](int error, int fd) { result.emplace(error, fd); });
    REQUIRE(run_until(reactor, [&] { return result.has_value(); }));
    CHECK(result->first == 0);
    REQUIRE(result->second >= 0);
    CHECK((fcntl(result->second, F_GETFL) & O_NONBLOCK) != 0);
    ::close(result->second);
  }
}

TEST_SUITE("registration") {
  TEST_CASE("an open descriptor that nobody waits on does not wake the loop") {
    Reactor reactor;
    Peer peer = connected_pair();
    reactor.open(peer.ours);
    reactor.run_once(50ms);  // takes the reports of the registration itself: writable (EV_CLEAR: once)
    std::size_t handlers = 0;
    const Clock::duration slept = time_one_round(reactor, 100ms, handlers);
    INFO("run_once(100ms) returned after ", std::chrono::duration<double, std::milli>(slept).count(), " ms");
    CHECK(handlers == 0);
    CHECK(slept >= 80ms);  // a level-triggered registration for writing reports on every wait: no sleep at all
  }
}

TEST_SUITE("speculative") {
  TEST_CASE("a read started after its bytes came finishes at once, without waiting for a report") {
    Reactor reactor;
    Peer peer = connected_pair();
    reactor.open(peer.ours);
    send_text(peer.theirs.fd, "early");
    reactor.run_once(50ms);  // the report of "early" comes and goes (EV_CLEAR), while nobody reads

    bool called = false;
    std::size_t got = 0;
    char buffer[64];
    reactor.async_read(peer.ours, buffer, [&](int, std::size_t bytes) {
      called = true;
      got = bytes;
    });
    CHECK_FALSE(called);  // never from inside async_read()
    REQUIRE(run_until(reactor, [&] { return called; }, 1s));
    CHECK(got == 5);
  }

  TEST_CASE("a write that can finish at once still calls back from the loop, not from inside async_write()") {
    Reactor reactor;
    Peer peer = connected_pair();
    reactor.open(peer.ours);
    bool called = false;
    reactor.async_write(peer.ours, std::string_view("hello"), [&called](int, std::size_t) { called = true; });
    CHECK_FALSE(called);
    CHECK(reactor.run_once(1s) == 1);
    CHECK(called);
    CHECK(drain(peer.theirs.fd) == "hello");
  }
}

TEST_SUITE("ordering") {
  TEST_CASE("writes go out in the order they were started, never interleaved") {
    Reactor reactor;
    Peer peer = connected_pair();
    reactor.open(peer.ours);
    const std::string first = patterned(1 << 20);  // stays waiting: more than the socket buffer holds
    const std::string second = "and then the second write\n";
    std::vector<int> order;
    reactor.async_write(peer.ours, first, [&order](int, std::size_t) { order.push_back(1); });
    // The peer makes room, so the second write could go out at once: but the rest of the first waits before it.
    std::string received = drain(peer.theirs.fd);
    reactor.async_write(peer.ours, second, [&order](int, std::size_t) { order.push_back(2); });

    REQUIRE(run_until(reactor, [&] {
      received += drain(peer.theirs.fd);
      return order.size() == 2 && received.size() == first.size() + second.size();
    }, 10s));
    CHECK(order == std::vector{1, 2});
    CHECK(received.substr(0, first.size()) == first);
    CHECK(received.substr(first.size()) == second);
  }

  TEST_CASE("one report finishes every waiting operation it can, in the order they were started") {
    Reactor reactor;
    Peer peer = connected_pair();
    reactor.open(peer.ours);
    char first[4];
    char second[4];
    std::vector<int> order;
    reactor.async_read(peer.ours, first, [&order](int, std::size_t) { order.push_back(1); });
    reactor.async_read(peer.ours, second, [&order](int, std::size_t) { order.push_back(2); });
    send_text(peer.theirs.fd, "12345678");  // one write: one report for both reads
    REQUIRE(run_until(reactor, [&] { return order.size() == 2; }, 1s));
    CHECK(order == std::vector{1, 2});
    CHECK(std::string(first, 4) == "1234");
    CHECK(std::string(second, 4) == "5678");
  }
}

TEST_SUITE("batch") {
  TEST_CASE("a handler may close a descriptor whose event is further down the same batch") {
    Reactor reactor;
    Peer one = connected_pair();
    Peer two = connected_pair();
    reactor.open(one.ours);
    reactor.open(two.ours);
    char buffer_one[16];
    char buffer_two[16];
    int calls_one = 0;
    int calls_two = 0;
    // Whichever handler runs first closes the other descriptor. Run during the batch, it would free the other's
    // state while the kernel's next event still points at it: AddressSanitizer stops the program there.
    reactor.async_read(one.ours, buffer_one, [&](int, std::size_t) {
      ++calls_one;
      reactor.close(two.ours);
    });
    reactor.async_read(two.ours, buffer_two, [&](int, std::size_t) {
      ++calls_two;
      reactor.close(one.ours);
    });
    send_text(one.theirs.fd, "x");
    send_text(two.theirs.fd, "y");  // both readable before the round: their events come in one batch
    REQUIRE(run_until(reactor, [&] { return calls_one + calls_two == 2; }, 1s));
    CHECK(calls_one == 1);
    CHECK(calls_two == 1);
  }
}

TEST_SUITE("cancellation") {
  TEST_CASE("close() aborts what is waiting: each handler once, with kAborted, after close() has returned") {
    Reactor reactor;
    Peer peer = connected_pair();
    reactor.open(peer.ours);
    char buffer[64];
    const std::string data = patterned(4 << 20);  // the peer never reads: the write stays waiting
    std::vector<int> errors;
    reactor.async_read(peer.ours, buffer, [&errors](int error, std::size_t) { errors.push_back(error); });
    reactor.async_write(peer.ours, data, [&errors](int error, std::size_t) { errors.push_back(error); });
    reactor.run_once(0s);

    reactor.close(peer.ours);
    CHECK(errors.empty());  // not from inside close()
    REQUIRE(run_until(reactor, [&] { return errors.size() == 2; }, 1s));
    CHECK(errors == std::vector{kAborted, kAborted});
    reactor.run_once(20ms);
    CHECK(errors.size() == 2);  // once each
    CHECK(fcntl(peer.ours, F_GETFD) == -1);  // and the descriptor is closed
  }

  TEST_CASE("a closed descriptor's number can be opened again at once") {
    Reactor reactor;
    Peer old_peer = connected_pair();
    reactor.open(old_peer.ours);
    reactor.close(old_peer.ours);
    Peer peer = connected_pair();  // usually gets the number just closed
    reactor.open(peer.ours);
    char buffer[16];
    std::size_t got = 0;
    reactor.async_read(peer.ours, buffer, [&got](int, std::size_t bytes) { got = bytes; });
    send_text(peer.theirs.fd, "new");
    REQUIRE(run_until(reactor, [&] { return got == 3; }, 1s));
  }
}

TEST_SUITE("timers") {
  TEST_CASE("timers fire in the order of their deadlines, never before them") {
    Reactor reactor;
    const Clock::time_point start = Clock::now();
    std::vector<std::pair<int, Clock::duration>> fired;
    for (const auto& [number, delay] : {std::pair(3, 60ms), std::pair(1, 20ms), std::pair(2, 40ms)}) {
      reactor.after(delay, [&fired, &start, number](int) { fired.emplace_back(number, Clock::now() - start); });
    }
    REQUIRE(run_until(reactor, [&] { return fired.size() == 3; }));
    CHECK(fired[0].first == 1);
    CHECK(fired[1].first == 2);
    CHECK(fired[2].first == 3);
    CHECK(fired[0].second >= 20ms);
    CHECK(fired[1].second >= 40ms);
    CHECK(fired[2].second >= 60ms);
  }

  TEST_CASE("an idle reactor sleeps until its next timer is due, and wakes up for it") {
    Reactor reactor;
    bool fired = false;
    reactor.after(100ms, [&fired](int error) { fired = error == 0; });
    std::size_t handlers = 0;
    const Clock::duration slept = time_one_round(reactor, scaled(2s), handlers);
    INFO("run_once(2s) returned after ", std::chrono::duration<double, std::milli>(slept).count(), " ms");
    CHECK(fired);
    CHECK(handlers == 1);
    CHECK(slept >= 100ms);
    CHECK(slept < scaled(1s));
  }

  TEST_CASE("a wait limited by run_once(max_wait) ends by then, even when the next timer is due later") {
    Reactor reactor;
    reactor.after(scaled(5s), [](int) {});
    std::size_t handlers = 0;
    const Clock::duration slept = time_one_round(reactor, 50ms, handlers);
    INFO("run_once(50ms), with a timer due in 5 s, returned after ",
         std::chrono::duration<double, std::milli>(slept).count(), " ms: the shorter of the two must bound the wait");
    CHECK(handlers == 0);
    CHECK(slept >= 50ms);
    CHECK(slept < scaled(1s));
  }

  TEST_CASE("a timer already due when the loop comes to wait fires at once: the timeout is zero, never negative") {
    Reactor reactor;
    bool fired = false;
    reactor.after(1ms, [&fired](int error) { fired = error == 0; });
    std::this_thread::sleep_for(20ms);  // past its deadline before the loop ever waits
    std::size_t handlers = 0;
    const Clock::duration slept = time_one_round(reactor, scaled(2s), handlers);
    CHECK(fired);
    CHECK(handlers == 1);
    CHECK(slept < scaled(1s));
  }

  TEST_CASE("a cancelled timer's handler gets kAborted, once, and the timer never fires") {
    Reactor reactor;
    std::vector<int> errors;
    const Reactor::TimerId timer = reactor.after(30ms, [&errors](int error) { errors.push_back(error); });
    reactor.cancel(timer);
    CHECK(errors.empty());  // not from inside cancel()
    REQUIRE(run_until(reactor, [&] { return !errors.empty(); }, 1s));
    reactor.cancel(timer);  // too late: nothing happens
    reactor.run_once(60ms);
    CHECK(errors == std::vector{kAborted});
  }
}

TEST_SUITE("post") {
  TEST_CASE("after a post, an idle reactor sleeps again: the user event was reset") {
    Reactor reactor;
    bool ran = false;
    reactor.post([&ran] { ran = true; });
    REQUIRE(run_until(reactor, [&] { return ran; }, 1s));
    std::size_t handlers = 0;
    const Clock::duration slept = time_one_round(reactor, 100ms, handlers);
    INFO("run_once(100ms) returned after ", std::chrono::duration<double, std::milli>(slept).count(), " ms");
    CHECK(handlers == 0);
    CHECK(slept >= 80ms);
  }
}

TEST_SUITE("threads") {
  TEST_CASE("post() from another thread wakes a loop asleep in kevent()") {
    Reactor reactor;
    // The safety net: a wake-up that never comes fails the checks below instead of hanging the test.
    reactor.after(scaled(2s), [&reactor](int error) {
      if (error == 0) reactor.stop();
    });
    const std::thread::id loop_thread = std::this_thread::get_id();
    std::thread::id ran_on;
    Clock::time_point posted_at;
    Clock::time_point ran_at;
    std::thread poster([&] {
      posted_at = Clock::now();
      reactor.post([&] {
        ran_on = std::this_thread::get_id();
        ran_at = Clock::now();
        reactor.stop();
      });
    });
    reactor.run();
    poster.join();
    CHECK(ran_on == loop_thread);
    CHECK(ran_at - posted_at < scaled(1s));
  }

  TEST_CASE("handlers posted by several threads all run, each thread's in the order it posted them") {
    Reactor reactor;
    reactor.after(scaled(5s), [&reactor](int error) {
      if (error == 0) reactor.stop();
    });
    constexpr int kThreads = 4;
    constexpr int kPosts = 1000;
    std::vector<std::vector<int>> seen(kThreads);  // touched by the loop's thread only
    int total = 0;
    std::vector<std::thread> posters;
    for (int thread = 0; thread < kThreads; ++thread) {
      posters.emplace_back([&, thread] {
        for (int post = 0; post < kPosts; ++post) {
          reactor.post([&, thread, post] {
            seen[thread].push_back(post);
            if (++total == kThreads * kPosts) reactor.stop();
          });
        }
      });
    }
    reactor.run();
    for (std::thread& poster : posters) poster.join();
    CHECK(total == kThreads * kPosts);
    for (const std::vector<int>& posts : seen) {
      bool in_order = true;
      for (std::size_t i = 0; i < posts.size(); ++i) in_order = in_order && posts[i] == static_cast<int>(i);
      CHECK(in_order);
    }
  }

  TEST_CASE("stop() from another thread ends run()") {
    Reactor reactor;
    reactor.after(scaled(2s), [](int) { FAIL("run() went on until the safety timer"); });
    const Clock::time_point start = Clock::now();
    std::thread stopper([&reactor] { reactor.stop(); });
    reactor.run();
    stopper.join();
    CHECK(Clock::now() - start < scaled(1s));
  }
}
