// How EVFILT_TIMER scales in one queue: the cost of adding, deleting and firing timers with 10, 1,000 and
// 50,000 of them registered, next to what one timerfd per timer would cost (the design the layer avoids).
//
// Build with the release preset and run by hand (not part of ctest):
//   cmake --preset release && cmake --build build/release && build/release/compat/bench/timer_scale
#include <sys/epoll.h>
#include <sys/event.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double ns_since(Clock::time_point start) { return std::chrono::duration<double, std::nano>(Clock::now() - start).count(); }

double cpu_ns() {
  timespec now;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return now.tv_sec * 1e9 + now.tv_nsec;
}

void must(bool ok, const char* what) {
  if (!ok) {
    std::perror(what);
    std::exit(1);
  }
}

// One change per kevent() call, as an event loop that sets timers one at a time does.
void change(int kq, uintptr_t ident, unsigned short flags, int64_t data) {
  struct kevent entry;
  EV_SET(&entry, ident, EVFILT_TIMER, flags, 0, data, nullptr);
  must(kevent(kq, &entry, 1, nullptr, 0, nullptr) == 0, "kevent");
}

struct Figures {
  double add_ns, add_earliest_ns, delete_ns, fire_cpu_ns, periodic_cpu_ns, periodic_per_s, periodic_load;
};

Figures measure(int count) {
  Figures figures{};
  const int kq = kqueue();
  must(kq >= 0, "kqueue");

  // Add and delete: periods of an hour and more, so nothing fires meanwhile; distinct deadlines. Repeated to
  // 100,000 operations so that small counts give stable figures. "add" sets each timer later than the others
  // (the common case: no system call); "add, earliest" sets each one earlier than all others, so every add
  // re-arms the timerfd (the worst case).
  const int rounds = count >= 100'000 ? 1 : 100'000 / count;
  double add = 0, add_earliest = 0, remove = 0;
  for (int round = 0; round < rounds; ++round) {
    auto start = Clock::now();
    for (int i = 0; i < count; ++i) change(kq, i, EV_ADD, 3'600'000 + round * count + i);
    add += ns_since(start);
    start = Clock::now();
    for (int i = 0; i < count; ++i) change(kq, i, EV_DELETE, 0);
    remove += ns_since(start);
    start = Clock::now();
    for (int i = 0; i < count; ++i) change(kq, i, EV_ADD, 3'500'000 - (round * count + i));  // always earlier
    add_earliest += ns_since(start);
    for (int i = 0; i < count; ++i) change(kq, i, EV_DELETE, 0);
  }
  const double operations = static_cast<double>(rounds) * count;
  figures.add_ns = add / operations;
  figures.add_earliest_ns = add_earliest / operations;
  figures.delete_ns = remove / operations;

  // Fire: `count` one-shot timers due over 50 ms, collected in batches of 256. CPU time per timer fired
  // (expiry, pending list, copy-out, one-shot removal; the waiting in between costs none).
  std::vector<struct kevent> events(256);
  for (int i = 0; i < count; ++i) change(kq, i, EV_ADD | EV_ONESHOT, 1 + 50LL * i / count);
  double cpu = cpu_ns();
  for (int fired = 0; fired < count;) {
    const int n = kevent(kq, nullptr, 0, events.data(), static_cast<int>(events.size()), nullptr);
    must(n > 0, "kevent wait");
    fired += n;
  }
  figures.fire_cpu_ns = (cpu_ns() - cpu) / count;

  // Periodic: `count` timers of 100 ms, staggered, for one second. CPU time per expiration delivered.
  for (int i = 0; i < count; ++i) change(kq, i, EV_ADD, 100);
  int64_t expirations = 0;
  cpu = cpu_ns();
  const auto start = Clock::now();
  while (ns_since(start) < 1e9) {
    const timespec limit{0, 100'000'000};
    const int n = kevent(kq, nullptr, 0, events.data(), static_cast<int>(events.size()), &limit);
    for (int i = 0; i < n; ++i) expirations += events[i].data;
  }
  const double used = cpu_ns() - cpu;
  figures.periodic_cpu_ns = expirations ? used / expirations : 0;
  figures.periodic_per_s = expirations / (ns_since(start) / 1e9);
  figures.periodic_load = used / ns_since(start);
  close(kq);
  return figures;
}

// The design not taken: a timerfd per timer in an epoll set. Add = timerfd_create + timerfd_settime +
// epoll_ctl; delete = epoll_ctl + close. Needs a descriptor per timer.
bool measure_timerfd_each(int count, double* add_ns, double* delete_ns) {
  rlimit limit;
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < static_cast<rlim_t>(count) + 64) return false;
  const int epoll_fd = epoll_create1(0);
  std::vector<int> fds(count);
  auto start = Clock::now();
  for (int i = 0; i < count; ++i) {
    fds[i] = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (fds[i] < 0) return false;
    itimerspec setting{};
    setting.it_value.tv_sec = 3600 + i;
    setting.it_interval = setting.it_value;
    timerfd_settime(fds[i], 0, &setting, nullptr);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u32 = i;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fds[i], &event);
  }
  *add_ns = ns_since(start) / count;
  start = Clock::now();
  for (int fd : fds) {
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
  }
  *delete_ns = ns_since(start) / count;
  close(epoll_fd);
  return true;
}

}  // namespace

int main() {
  std::printf("EVFILT_TIMER in one queue, one change per kevent() call. ns per timer (fire, periodic: CPU ns per\n"
              "expiration delivered; periodic: every timer at 100 ms for 1 s, with the CPU share of one core).\n"
              "Last column: one timerfd per timer instead, add / delete.\n\n");
  std::printf("%7s %6s %14s %7s %6s %9s %12s %6s %15s\n", "timers", "add", "add, earliest", "delete", "fire",
              "periodic", "expiries/s", "load", "timerfd each");
  for (int count : {10, 1000, 50'000}) {
    const Figures figures = measure(count);
    double fd_add = 0, fd_delete = 0;
    char baseline[48];
    if (measure_timerfd_each(count, &fd_add, &fd_delete))
      std::snprintf(baseline, sizeof baseline, "%.0f / %.0f", fd_add, fd_delete);
    else
      std::snprintf(baseline, sizeof baseline, "n/a (RLIMIT_NOFILE)");
    std::printf("%7d %6.0f %14.0f %7.0f %6.0f %9.0f %12.0f %5.1f%% %15s\n", count, figures.add_ns,
                figures.add_earliest_ns, figures.delete_ns, figures.fire_cpu_ns, figures.periodic_cpu_ns,
                figures.periodic_per_s, figures.periodic_load * 100, baseline);
  }
  return 0;
}
