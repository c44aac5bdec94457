// What one delivered event costs, on raw epoll and through the kqueue layer, measured in a tight loop.
//
//   event_cost [ITERATIONS]
//
// N loopback TCP connections each have a byte waiting, so every level-triggered registration reports every time,
// and one thread asks again and again, nothing else happening in between. Three ways to ask:
//   epoll          epoll_wait() returning the N events
//   epoll+FIONREAD the same, and ioctl(FIONREAD) for each event: the query the layer makes to fill `data`
//   kevent         kevent() through the layer, returning N EVFILT_READ events (its FIONREAD inside)
// for N = 1 (one event per call, as a server with one busy connection sees) and N = 64 (a full batch). It prints
// the thread's CPU time per event (the best of 15 rounds, the three ways taking turns): kevent minus epoll is what the
// layer costs, epoll+FIONREAD minus epoll the query as a system call per event. kevent minus epoll+FIONREAD is the
// layer's own code; at 64 per call it is negative, because the layer then asks for the whole batch's counts in one
// io_uring submission (compat/src/readable_queries.hpp), which costs less than 64 FIONREADs. Unlike a server's CPU time under load, these move little
// with the load of the machine: no wake-ups, no other process's data in between.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/event.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

#include "probe.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::perror(what);
  std::exit(1);
}

// `count` accepted loopback TCP connections, each with one byte waiting to be read. Returns the accepted ends.
std::vector<int> ready_connections(int count) {
  sockaddr_in address;
  const int listener = probe::listen_on_loopback(count, address);
  if (listener < 0) fail("listener");
  std::vector<int> accepted;
  for (int i = 0; i < count; ++i) {
    const int client = socket(AF_INET, SOCK_STREAM, 0);
    if (client < 0 || connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) fail("connect");
    if (write(client, "x", 1) != 1) fail("write");
    const int server = accept(listener, nullptr, nullptr);
    if (server < 0) fail("accept");
    accepted.push_back(server);
    // The client ends stay open for the program's lifetime: the byte must stay unread, the connection up.
  }
  close(listener);
  return accepted;
}

// CPU ns per event of `ask`, which returns how many events one call delivered, over `iterations` calls.
template <typename Ask>
double per_event(long iterations, Ask ask) {
  long events = 0;
  const double start = probe::thread_cpu_ns();
  for (long i = 0; i < iterations; ++i) events += ask();
  return (probe::thread_cpu_ns() - start) / static_cast<double>(events);
}

struct Costs {
  double epoll, epoll_fionread, kevent;
};

constexpr int kRounds = 15;

Costs measure(int count, long iterations) {
  const std::vector<int> fds = ready_connections(count);
  const int epoll_fd = epoll_create1(0);
  const int kq = kqueue();
  if (epoll_fd < 0 || kq < 0) fail("epoll_create1/kqueue");
  for (const int fd : fds) {
    epoll_event event{};
    event.events = EPOLLIN;  // level-triggered, as lesson 01 and the layer's entry for it
    event.data.fd = fd;
    struct kevent change;
    EV_SET(&change, fd, EVFILT_READ, EV_ADD, 0, 0, nullptr);
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0 || kevent(kq, &change, 1, nullptr, 0, nullptr) != 0)
      fail("register");
  }
  std::vector<epoll_event> ready(static_cast<size_t>(count));
  std::vector<struct kevent> events(static_cast<size_t>(count));
  const auto epoll_only = [&] { return epoll_wait(epoll_fd, ready.data(), count, -1); };
  const auto with_query = [&] {
    const int n = epoll_wait(epoll_fd, ready.data(), count, -1);
    for (int i = 0; i < n; ++i) {
      int waiting = 0;
      if (ioctl(ready[static_cast<size_t>(i)].data.fd, FIONREAD, &waiting) != 0 || waiting != 1) fail("FIONREAD");
    }
    return n;
  };
  const auto through_layer = [&] {
    const int n = kevent(kq, nullptr, 0, events.data(), count, nullptr);
    if (n != count || events[0].data != 1) fail("kevent");
    return n;
  };
  // The three take turns, round after round, so that whatever else the machine does falls on all of them; the
  // best round of each is the one least disturbed.
  Costs best{1e18, 1e18, 1e18};
  for (int round = 0; round < kRounds; ++round) {
    best.epoll = std::min(best.epoll, per_event(iterations, epoll_only));
    best.epoll_fionread = std::min(best.epoll_fionread, per_event(iterations, with_query));
    best.kevent = std::min(best.kevent, per_event(iterations, through_layer));
  }
  close(epoll_fd);
  close(kq);
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  if (iterations <= 0) {
    std::fprintf(stderr, "usage: event_cost [ITERATIONS]  (calls per round and way of asking, default 20000)\n");
    return 2;
  }
  const int counts[] = {1, 64};
  Costs costs[2];
  for (int i = 0; i < 2; ++i) costs[i] = measure(counts[i], counts[i] == 1 ? iterations : iterations / 16);

  std::printf("CPU time per delivered event (ns), level-triggered, a byte waiting on each connection:\n");
  std::printf("  %-16s %10s %16s %10s %10s %10s\n", "events per call", "epoll", "epoll+FIONREAD", "kevent", "query",
              "layer");
  for (int i = 0; i < 2; ++i) {
    const Costs& c = costs[i];
    std::printf("  %-16d %10.0f %16.0f %10.0f %10.0f %10.0f\n", counts[i], c.epoll, c.epoll_fionread, c.kevent,
                c.epoll_fionread - c.epoll, c.kevent - c.epoll_fionread);
  }
  // The same, as one line of JSON (what ./kqlab bench reads).
  std::printf("{");
  for (int i = 0; i < 2; ++i) {
    std::printf("%s\"%d\": {\"epoll\": %.1f, \"epoll_fionread\": %.1f, \"kevent\": %.1f}", i ? ", " : "", counts[i],
                costs[i].epoll, costs[i].epoll_fionread, costs[i].kevent);
  }
  std::printf("}\n");
  return 0;
}
