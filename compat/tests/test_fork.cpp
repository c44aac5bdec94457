// fork() (kqueue(2)): "The queue is not inherited by a child created with fork(2)." The child's descriptor for
// the parent's queue is not usable (kevent() and close() fail with EBADF), a new queue works normally, and the
// parent's queue, knotes and pending events are untouched by whatever the child does. Each child reports through
// its exit code; the parent checks it.
#include <signal.h>

#include "support.hpp"

using namespace kqtest;

TEST_SUITE("fork") {

TEST_CASE("the child has no queue: kevent() and close() on the parent's descriptor fail with EBADF") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_WRITE);
  const int number = kq.get();
  Child child([number] {
    struct kevent event;
    const timespec zero{0, 0};
    if (kevent(number, nullptr, 0, &event, 1, &zero) != -1 || errno != EBADF) return 1;
    if (close(number) != -1 || errno != EBADF) return 2;
    return 0;
  });
  CHECK(child.wait_exit_code() == 0);
  expect_event(kq, pair.a, EVFILT_WRITE);
}

TEST_CASE("a new queue in the child works normally") {
  auto kq = new_queue();
  Child child([] {
    const int again = kqueue();
    int fds[2];
    if (again < 0 || pipe(fds) != 0) return 1;
    struct kevent watch, event;
    EV_SET(&watch, fds[0], EVFILT_READ, EV_ADD, 0, 0, nullptr);
    if (kevent(again, &watch, 1, nullptr, 0, nullptr) != 0) return 2;
    if (write(fds[1], "x", 1) != 1) return 3;
    const timespec limit{2, 0};
    if (kevent(again, nullptr, 0, &event, 1, &limit) != 1) return 4;
    return event.ident == static_cast<uintptr_t>(fds[0]) && event.data == 1 ? 0 : 5;
  });
  CHECK(child.wait_exit_code() == 0);
}

TEST_CASE("the parent's knotes and pending events survive the child closing the same descriptors") {
  auto kq = new_queue();
  auto pending = pipe_pair();
  auto later = pipe_pair();
  add(kq, pending.a, EVFILT_READ);
  add(kq, later.a, EVFILT_READ);
  write_bytes(pending.b, 1);
  const int numbers[] = {pending.a.get(), later.a.get(), kq.get()};  // the queue last: it is still "live"
  Child child([&numbers] {
    for (int fd : numbers) close(fd);
    return 0;
  });
  CHECK(child.wait_exit_code() == 0);
  CHECK(expect_event(kq, pending.a, EVFILT_READ).data == 1);
  read_bytes(pending.a, 1);
  write_bytes(later.b, 2);
  CHECK(expect_event(kq, later.a, EVFILT_READ).data == 2);
}

TEST_CASE("a signal sent to the child is not counted by the parent's queue") {
  KeepDisposition keep(SIGUSR1);
  REQUIRE((signal(SIGUSR1, SIG_IGN) != SIG_ERR));
  auto kq = new_queue();
  add(kq, SIGUSR1, EVFILT_SIGNAL);
  Child child([] {
    raise(SIGUSR1);  // still ignored in the child
    return 0;
  });
  CHECK(child.wait_exit_code() == 0);
  expect_nothing(kq);
}

// What the layer's signal handler writes must never land in a descriptor the program opened: here the child
// closes everything (the layer's descriptors too), opens sockets that take the freed numbers, and is sent the
// watched signal.
TEST_CASE("a child that closes every descriptor and reuses the numbers gets nothing written into them") {
  KeepDisposition keep(SIGUSR1);
  REQUIRE((signal(SIGUSR1, SIG_IGN) != SIG_ERR));
  auto kq = new_queue();
  add(kq, SIGUSR1, EVFILT_SIGNAL);
  Child child([] {
    const int again = kqueue();
    struct kevent watch;
    EV_SET(&watch, SIGUSR1, EVFILT_SIGNAL, EV_ADD, 0, 0, nullptr);
    if (again < 0 || kevent(again, &watch, 1, nullptr, 0, nullptr) != 0) return 1;
    for (int fd = 3; fd < 256; ++fd) close(fd);
    int pairs[32][2];  // both ends writable and readable: a write into either shows on the other
    for (auto& fds : pairs) {
      if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return 2;
      fcntl(fds[0], F_SETFL, O_NONBLOCK);
      fcntl(fds[1], F_SETFL, O_NONBLOCK);
    }
    raise(SIGUSR1);
    char byte;
    for (auto& fds : pairs) {
      for (int fd : fds) {
        if (read(fd, &byte, 1) != -1 || errno != EAGAIN) return 3;
      }
    }
    return 0;
  });
  CHECK(child.wait_exit_code() == 0);
}

}  // TEST_SUITE
