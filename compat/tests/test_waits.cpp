// How long kevent() waits and what ends the wait (kqueue(2); FreeBSD's kqueue_scan): timeouts at the edges of
// what a timespec holds, and the signals that may, or may not, interrupt it.
#include <poll.h>
#include <signal.h>

#include <chrono>
#include <climits>
#include <limits>
#include <thread>

#include "support.hpp"

using namespace kqtest;

TEST_SUITE("kevent call") {

namespace {

// A user event triggered from another thread after `ms`: what ends a wait that has no end of its own.
class LateTrigger {
 public:
  LateTrigger(int kq, int ms) : thread_([kq, ms] {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    struct kevent fire;
    EV_SET(&fire, 1, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
    kevent(kq, &fire, 1, nullptr, 0, nullptr);
  }) {}
  ~LateTrigger() { thread_.join(); }
  LateTrigger(const LateTrigger&) = delete;
  LateTrigger& operator=(const LateTrigger&) = delete;

 private:
  std::thread thread_;
};

// A wait with `limit` that an event ends after 100 ms: it must return that event, neither fail nor time out.
void expect_event_ends_wait(const timespec& limit) {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  struct kevent event;
  const auto start = Clock::now();
  int n;
  {
    LateTrigger trigger(kq, 100);
    n = kevent(kq, nullptr, 0, &event, 1, &limit);
  }
  INFO("timeout {" << limit.tv_sec << ", " << limit.tv_nsec << "}, errno " << std::strerror(errno));
  REQUIRE(n == 1);
  CHECK(event.filter == EVFILT_USER);
  CHECK(ms_since(start) < 5000);
}

// A timespec as a program makes it from a std::chrono limit.
template <typename Duration>
timespec timespec_of(Duration limit) {
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(limit);
  return timespec{static_cast<time_t>(seconds.count()),
                  static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(limit - seconds).count())};
}

}  // namespace

// FreeBSD's kqueue_scan: a tv_sec beyond INT32_MAX means no deadline at all.
TEST_CASE("a huge timeout waits as long as it takes, without failing") {
  expect_event_ends_wait(timespec_of(std::chrono::steady_clock::duration::max()));
  expect_event_ends_wait(timespec_of(std::chrono::nanoseconds::max()));
  expect_event_ends_wait(timespec{std::numeric_limits<time_t>::max(), 999'999'999});
  expect_event_ends_wait(timespec{time_t{INT32_MAX} + 1, 0});
  expect_event_ends_wait(timespec{INT32_MAX, 999'999'999});  // the longest real deadline: 68 years
}

TEST_CASE("a huge timeout blocks until an event comes, never returning at once") {
  // A deadline that wrapped around would be in the past: the call would return 0 at once.
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  const timespec forever{std::numeric_limits<time_t>::max(), 0};
  struct kevent event;
  const auto start = Clock::now();
  int n;
  {
    LateTrigger trigger(kq, 300);
    n = kevent(kq, nullptr, 0, &event, 1, &forever);
  }
  REQUIRE(n == 1);
  CHECK(ms_since(start) >= 250);
}

TEST_CASE("a negative timeout or one with tv_nsec out of range gives EINVAL, events pending or not") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  struct kevent event;
  const time_t huge = std::numeric_limits<time_t>::max();
  const time_t most_negative = std::numeric_limits<time_t>::min();
  for (const bool pending : {false, true}) {
    if (pending) trigger(kq, 1);
    for (const timespec bad : {timespec{-1, 0}, timespec{most_negative, 0}, timespec{0, -1}, timespec{huge, -1},
                               timespec{huge, 1'000'000'000}, timespec{0, LONG_MAX}, timespec{1, LONG_MIN}}) {
      INFO("pending " << pending << ", timeout {" << bad.tv_sec << ", " << bad.tv_nsec << "}");
      CHECK(kevent(kq, nullptr, 0, &event, 1, &bad) == -1);
      CHECK(errno == EINVAL);
    }
  }
  CHECK(expect_event(kq, 1, EVFILT_USER).filter == EVFILT_USER);  // still pending: the calls scanned nothing
}

// Stop and continue: BSD never interrupts kevent() for them (a stop is not a caught signal), whatever handlers
// the program has. Only a handler that runs ends the wait with EINTR.
namespace {

volatile sig_atomic_t usr1_runs = 0;
void count_usr1(int) { usr1_runs = usr1_runs + 1; }

// A child that catches SIGUSR1, tells the parent through `ready` that it is about to wait, and waits in kevent()
// for 2 s on an empty queue. Its exit code: 0 when the wait timed out, 2 for EINTR after a SIGUSR1 handler ran,
// 3 for EINTR with no handler run, 4 for another result; a failed set-up step exits with its errno plus 10
// (sigaction), 100 (kqueue) or 200 (the word to the parent).
int wait_two_seconds(int ready) {
  struct sigaction action {};
  action.sa_handler = count_usr1;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGUSR1, &action, nullptr) != 0) return 10 + errno;
  const int kq = kqueue();
  if (kq < 0) return 100 + errno;
  struct kevent event;
  const timespec limit{2, 0};
  if (write(ready, "r", 1) != 1) return 200 + errno;
  const int n = kevent(kq, nullptr, 0, &event, 1, &limit);
  if (n == 0) return 0;
  if (n == -1 && errno == EINTR) return usr1_runs > 0 ? 2 : 3;
  return 4;
}

// The child, once it is (all but) blocked in kevent(): its word that it is about to wait has come (within 5 s;
// the parent's copy of the write end closed, so that a child that died first reads as end of file), and a
// moment has passed.
void await_wait(Pair& ready, Child& child) {
  ready.b.reset();
  pollfd word{ready.a, POLLIN, 0};
  char byte = 0;
  if (poll(&word, 1, 5000) != 1 || read(ready.a, &byte, 1) != 1) {
    const int code = child.wait_exit_code();
    FAIL("the child never got to its wait; its exit code: " << code);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
}

}  // namespace

TEST_CASE("stopped and continued while waiting, with a handler installed: no EINTR") {
  auto ready = pipe_pair();
  const auto start = Clock::now();
  Child child([&] { return wait_two_seconds(ready.b); });
  await_wait(ready, child);
  REQUIRE(kill(child.pid(), SIGSTOP) == 0);
  const int status = child.wait(WUNTRACED);
  REQUIRE(WIFSTOPPED(status));
  REQUIRE(kill(child.pid(), SIGCONT) == 0);
  CHECK(child.wait_exit_code() == 0);  // 3: EINTR with no handler run
  CHECK(ms_since(start) >= 1900);      // the whole timeout, the stop included
}

TEST_CASE("a caught signal that runs its handler ends the wait with EINTR") {
  auto ready = pipe_pair();
  Child child([&] { return wait_two_seconds(ready.b); });
  await_wait(ready, child);
  REQUIRE(kill(child.pid(), SIGUSR1) == 0);
  CHECK(child.wait_exit_code() == 2);
}

TEST_CASE("sigaction() reports the handler, mask and flags the program set") {
  KeepDisposition keep(SIGUSR1);
  struct sigaction action {};
  action.sa_handler = count_usr1;
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, SIGUSR2);
  action.sa_flags = SA_RESTART;
  REQUIRE(sigaction(SIGUSR1, &action, nullptr) == 0);
  struct sigaction seen {};
  REQUIRE(sigaction(SIGUSR1, nullptr, &seen) == 0);
  CHECK(!(seen.sa_flags & SA_SIGINFO));
  CHECK((seen.sa_handler == count_usr1));
  CHECK((seen.sa_flags & SA_RESTART));
  CHECK(sigismember(&seen.sa_mask, SIGUSR2) == 1);
  // The old action returned when replacing it is the same.
  struct sigaction ignore {}, old {};
  ignore.sa_handler = SIG_IGN;
  REQUIRE(sigaction(SIGUSR1, &ignore, &old) == 0);
  CHECK((old.sa_handler == count_usr1));
  CHECK((signal(SIGUSR1, SIG_DFL) == SIG_IGN));
}

TEST_CASE("a handler runs with the mask the program asked for, and SA_RESETHAND resets it") {
  KeepDisposition keep(SIGUSR1);
  static volatile sig_atomic_t usr2_blocked = -1;
  struct sigaction action {};
  action.sa_handler = [](int) {
    sigset_t now;
    sigprocmask(SIG_BLOCK, nullptr, &now);
    usr2_blocked = sigismember(&now, SIGUSR2);
  };
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, SIGUSR2);
  action.sa_flags = SA_RESETHAND;
  REQUIRE(sigaction(SIGUSR1, &action, nullptr) == 0);
  REQUIRE(raise(SIGUSR1) == 0);
  CHECK(usr2_blocked == 1);
  struct sigaction seen {};
  REQUIRE(sigaction(SIGUSR1, nullptr, &seen) == 0);
  CHECK((seen.sa_handler == SIG_DFL));
}

}  // TEST_SUITE
