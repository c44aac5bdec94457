// EVFILT_PROC (kqueue(2)): "Takes the process ID to monitor as the identifier and the events to watch for in
// fflags, and returns when the process performs one or more of the requested events. [...] NOTE_EXIT: The process
// has exited. The exit status will be stored in data." The event carries EV_EOF and is one-shot; watching does not
// reap (waitpid() still gets the child), and any process can be watched, not only one's children.
#include <signal.h>

#include <thread>

#include "support.hpp"

using namespace kqtest;

namespace {

// A child that exits with `code` once a byte arrives on `go` (so that the test registers first).
Child exit_on_byte(Pair& go, int code) {
  const int read_end = go.a.get();
  return Child([read_end, code] {
    char byte;
    return read(read_end, &byte, 1) == 1 ? code : 100;
  });
}

}  // namespace

TEST_SUITE("proc") {

TEST_CASE("NOTE_EXIT: data is the wait status, EV_EOF|EV_ONESHOT are set, and the child is not reaped") {
  auto kq = new_queue();
  auto go = pipe_pair();
  Child child = exit_on_byte(go, 42);
  REQUIRE(apply(kq, {change(child.pid(), EVFILT_PROC, EV_ADD, kNoteExitStatus)}) == 0);
  expect_nothing(kq);
  write_bytes(go.b, 1);
  const auto event = expect_event(kq, child.pid(), EVFILT_PROC, 5000);
  CHECK((event.fflags & NOTE_EXIT));
  CHECK(portable_flags(event) == (EV_CLEAR | EV_ONESHOT | EV_EOF));
  CHECK(WIFEXITED(event.data));
  CHECK(WEXITSTATUS(event.data) == 42);
  CHECK(child.wait_exit_code() == 42);  // still there for waitpid()
  CHECK(apply(kq, {change(child.pid(), EVFILT_PROC, EV_DELETE)}) == -1);  // one-shot: gone
  CHECK(errno == ENOENT);
}

TEST_CASE("NOTE_EXIT of a process killed by a signal") {
  auto kq = new_queue();
  auto go = pipe_pair();
  Child child = exit_on_byte(go, 0);
  REQUIRE(apply(kq, {change(child.pid(), EVFILT_PROC, EV_ADD, kNoteExitStatus)}) == 0);
  REQUIRE(kill(child.pid(), SIGKILL) == 0);
  const auto event = expect_event(kq, child.pid(), EVFILT_PROC, 5000);
  CHECK(WIFSIGNALED(event.data));
  CHECK(WTERMSIG(event.data) == SIGKILL);
}

TEST_CASE("a process that already exited but was not reaped fires at once") {
  auto kq = new_queue();
  Child child([] { return 5; });
  siginfo_t info{};
  REQUIRE(waitid(P_PID, static_cast<id_t>(child.pid()), &info, WEXITED | WNOWAIT) == 0);  // a zombie now
  REQUIRE(apply(kq, {change(child.pid(), EVFILT_PROC, EV_ADD, kNoteExitStatus)}) == 0);
  const auto event = expect_event(kq, child.pid(), EVFILT_PROC);
  CHECK(WEXITSTATUS(event.data) == 5);
  CHECK(child.wait_exit_code() == 5);
}

TEST_CASE("ESRCH for a process that does not exist") {
  auto kq = new_queue();
  pid_t gone;
  {
    Child child([] { return 0; });
    gone = child.pid();
    REQUIRE(child.wait_exit_code() == 0);
  }
  CHECK(apply(kq, {change(gone, EVFILT_PROC, EV_ADD, NOTE_EXIT)}) == -1);
  CHECK(errno == ESRCH);
}

TEST_CASE("any process can be watched: a grandchild, with its status, before its parent reaps it") {
  auto kq = new_queue();
  auto report = pipe_pair();  // grandchild's pid, child -> test
  auto go = pipe_pair();      // test -> grandchild: exit now
  auto reap = pipe_pair();    // test -> child: reap the grandchild now
  const int report_end = report.b.get(), go_end = go.a.get(), reap_end = reap.a.get();
  Child child([=] {
    const pid_t grandchild = fork();
    if (grandchild == 0) {
      char byte;
      _exit(read(go_end, &byte, 1) == 1 ? 9 : 100);
    }
    if (write(report_end, &grandchild, sizeof grandchild) != sizeof grandchild) return 1;
    char byte;
    if (read(reap_end, &byte, 1) != 1) return 2;
    int status = 0;
    return waitpid(grandchild, &status, 0) == grandchild && WEXITSTATUS(status) == 9 ? 0 : 3;
  });
  pid_t grandchild = 0;
  REQUIRE(read(report.a, &grandchild, sizeof grandchild) == sizeof grandchild);
  REQUIRE(apply(kq, {change(grandchild, EVFILT_PROC, EV_ADD, kNoteExitStatus)}) == 0);
  write_bytes(go.b, 1);
  const auto event = expect_event(kq, grandchild, EVFILT_PROC, 5000);
  CHECK((event.fflags & NOTE_EXIT));
  // macOS gives the status of its own children only.
  if (!kMacOS) CHECK(WEXITSTATUS(event.data) == 9);
  write_bytes(reap.b, 1);
  CHECK(child.wait_exit_code() == 0);
}

TEST_CASE("NOTE_FORK and NOTE_EXEC: reported on FreeBSD; refused on Linux with ENOTSUP") {
  auto kq = new_queue();
  auto go = pipe_pair();
  Child child = exit_on_byte(go, 0);
  const int result = apply(kq, {change(child.pid(), EVFILT_PROC, EV_ADD, NOTE_EXIT | NOTE_EXEC)});
  if (kLinuxLayer) {
    // No unprivileged Linux source reports another process's exec or fork: refused rather than silent.
    CHECK(result == -1);
    CHECK(errno == ENOTSUP);
  } else {
    CHECK(result == 0);
  }
  write_bytes(go.b, 1);
  CHECK(child.wait_exit_code() == 0);
}

TEST_CASE("a registration without NOTE_EXIT returns nothing at exit") {
  auto kq = new_queue();
  auto go = pipe_pair();
  Child child = exit_on_byte(go, 0);
  REQUIRE(apply(kq, {change(child.pid(), EVFILT_PROC, EV_ADD, 0)}) == 0);
  write_bytes(go.b, 1);
  siginfo_t info{};
  REQUIRE(waitid(P_PID, static_cast<id_t>(child.pid()), &info, WEXITED | WNOWAIT) == 0);
  expect_nothing(kq, 100);
  CHECK(child.wait_exit_code() == 0);
}

TEST_CASE("re-added with fflags 0: nothing at exit, and the knote is gone (FreeBSD's EV_DROP)") {
  auto kq = new_queue();
  auto go = pipe_pair();
  Child child = exit_on_byte(go, 0);
  REQUIRE(apply(kq, {change(child.pid(), EVFILT_PROC, EV_ADD, kNoteExitStatus)}) == 0);
  REQUIRE(apply(kq, {change(child.pid(), EVFILT_PROC, EV_ADD, 0)}) == 0);  // FreeBSD replaces the interest
  write_bytes(go.b, 1);
  siginfo_t info{};
  REQUIRE(waitid(P_PID, static_cast<id_t>(child.pid()), &info, WEXITED | WNOWAIT) == 0);  // exited, not reaped
  expect_nothing(kq, 100);
  CHECK(apply(kq, {change(child.pid(), EVFILT_PROC, EV_DELETE)}) == -1);
  CHECK(errno == ENOENT);
  CHECK(child.wait_exit_code() == 0);
}

}  // TEST_SUITE

TEST_SUITE("threads") {

TEST_CASE("a process's exit wakes a thread blocked in kevent()") {
  auto kq = new_queue();
  auto go = pipe_pair();
  Child child = exit_on_byte(go, 7);
  REQUIRE(apply(kq, {change(child.pid(), EVFILT_PROC, EV_ADD, kNoteExitStatus)}) == 0);
  int returned = -2;
  struct kevent event {};
  std::thread waiter([&] {
    const timespec limit{5, 0};
    returned = kevent(kq, nullptr, 0, &event, 1, &limit);
  });
  write_bytes(go.b, 1);
  waiter.join();
  CHECK(returned == 1);
  CHECK(WEXITSTATUS(event.data) == 7);
  CHECK(child.wait_exit_code() == 7);
}

}  // TEST_SUITE
