// Four threads blocked in kevent() on one queue for about a second: what they cost while they wait. Count the
// system calls with strace; a layer that loops instead of sleeping shows thousands of epoll waits.
//
//   blocked_threads idle   nothing becomes pending: each thread should make one wait and time out
//   blocked_threads held   a level-triggered user event becomes pending; every thread should take it at once
//                          (level: each call returns it), the first one holding on to it for a second
//
// Build with the release preset and run by hand (not part of ctest):
//   cmake --preset release && cmake --build build/release --target blocked_threads
//   strace -c -f build/release/compat/bench/blocked_threads held
#include <signal.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr int kThreads = 4;

void must(bool ok, const char* what) {
  if (ok) return;
  std::perror(what);
  std::exit(1);
}

// A queue with one knote of each everyday kind, none of them about to fire: an idle socket, a user event, a
// timer a minute away, an ignored signal.
int quiet_queue(bool level_user_event) {
  const int kq = kqueue();
  must(kq >= 0, "kqueue");
  int pair[2];
  must(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0, "socketpair");
  signal(SIGUSR1, SIG_IGN);
  struct kevent changes[4];
  EV_SET(&changes[0], pair[0], EVFILT_READ, EV_ADD, 0, 0, nullptr);
  EV_SET(&changes[1], 1, EVFILT_USER, EV_ADD | (level_user_event ? 0 : EV_CLEAR), 0, 0, nullptr);
  EV_SET(&changes[2], 2, EVFILT_TIMER, EV_ADD, 0, 60'000, nullptr);
  EV_SET(&changes[3], SIGUSR1, EVFILT_SIGNAL, EV_ADD, 0, 0, nullptr);
  must(kevent(kq, changes, 4, nullptr, 0, nullptr) == 0, "kevent (registering)");
  return kq;
}

}  // namespace

int main(int argc, char** argv) {
  const bool held = argc > 1 && std::strcmp(argv[1], "held") == 0;
  if (argc > 1 && !held && std::strcmp(argv[1], "idle") != 0) {
    std::fprintf(stderr, "usage: blocked_threads [idle|held]\n");
    return 2;
  }
  const int kq = quiet_queue(held);
  int returned[kThreads] = {};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      usleep(i * 20'000);  // thread 0 blocks first: in "held" mode it is the one that holds the event
      struct kevent event;
      const timespec limit{1, 0};
      returned[i] = kevent(kq, nullptr, 0, &event, 1, &limit);
      if (held && i == 0 && returned[i] == 1) usleep(1'000'000);
    });
  }
  if (held) {
    usleep(100'000);  // all four are asleep in kevent() by now
    struct kevent trigger;
    EV_SET(&trigger, 1, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
    must(kevent(kq, &trigger, 1, nullptr, 0, nullptr) == 0, "kevent (trigger)");
  }
  for (auto& thread : threads) thread.join();
  std::printf("events returned to the %d threads:", kThreads);
  for (const int n : returned) std::printf(" %d", n);
  std::printf(" (%s)\n", held ? "expected 1 each" : "expected 0 each: nothing was pending");
  return 0;
}
