// EVFILT_PROC (kqueue(2)): "Takes the process ID to monitor as the identifier and the events to watch for in
// fflags, and returns when the process performs one or more of the requested events. [...] NOTE_EXIT: The process
// has exited. The exit status will be stored in data." The event carries EV_EOF and is one-shot; watching does not
// reap (waitpid() still gets the child), and any process can be watched, not only one's children.
#include <signal.h>
#include <spawn.h>

#include <map>
#include <string>
#include <thread>

#include "support.hpp"

using namespace kqtest;

#if defined(__linux__)
#include <linux/connector.h>
#include <linux/netlink.h>
#endif

extern char** environ;

namespace {

// Whether NOTE_FORK and NOTE_EXEC can follow a process that does not run the Linux layer: there, only through
// the kernel's process-events connector, which needs CAP_NET_ADMIN (compat/README.md, deviation 20). Natively,
// always.
bool hears_every_process() {
#if defined(__linux__)
  const int fd = socket(PF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  if (fd < 0) return false;
  sockaddr_nl address{};
  address.nl_family = AF_NETLINK;
  address.nl_groups = CN_IDX_PROC;
  const bool bound = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  close(fd);
  return bound;
#else
  return true;
#endif
}

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

TEST_CASE("NOTE_FORK and NOTE_EXEC on one's own child: accepted, and nothing before they happen") {
  auto kq = new_queue();
  auto go = pipe_pair();
  Child child = exit_on_byte(go, 0);
  CHECK(apply(kq, {change(child.pid(), EVFILT_PROC, EV_ADD, NOTE_EXIT | NOTE_EXEC)}) == 0);
  expect_nothing(kq);
  write_bytes(go.b, 1);
  const auto event = expect_event(kq, child.pid(), EVFILT_PROC, 5000);
  CHECK(event.fflags == NOTE_EXIT);  // it exited without exec
  CHECK(child.wait_exit_code() == 0);
}

// Linux has no unprivileged source for the forks and execs of a process that does not run the layer (the
// process-events connector needs CAP_NET_ADMIN): refused rather than silent.
TEST_CASE("NOTE_EXEC on a process that does not run the layer: accepted, or ENOTSUP on Linux without CAP_NET_ADMIN") {
  auto kq = new_queue();
  const int result = apply(kq, {change(getppid(), EVFILT_PROC, EV_ADD, NOTE_EXIT | NOTE_EXEC)});
  const int error = errno;
  if (hears_every_process()) {
    CHECK(result == 0);
  } else {
    CHECK(result == -1);
    CHECK(error == ENOTSUP);
  }
}

// posix_spawn() runs no fork hook (glibc starts the child with clone(CLONE_VFORK)): on Linux only the connector
// can tell of its exec.
TEST_CASE("a process started by posix_spawn: NOTE_EXEC, then NOTE_EXIT" * doctest::skip(!hears_every_process())) {
  auto kq = new_queue();
  auto input = pipe_pair();
  posix_spawn_file_actions_t actions;
  REQUIRE(posix_spawn_file_actions_init(&actions) == 0);
  REQUIRE(posix_spawn_file_actions_adddup2(&actions, input.a, 0) == 0);
  char* const argv[] = {const_cast<char*>("sh"), const_cast<char*>("-c"),
                        const_cast<char*>("read line; exec /bin/sh -c 'exit 5'"), nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, "/bin/sh", &actions, nullptr, argv, environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  const int registered = apply(kq, {change(pid, EVFILT_PROC, EV_ADD, NOTE_EXIT | NOTE_EXEC)});
  CHECK(registered == 0);
  unsigned int fflags = 0;
  int64_t status = -1;
  if (registered == 0) {
    expect_nothing(kq);
    write_bytes(input.b, 3, '\n');
    const auto start = Clock::now();
    while (!(fflags & NOTE_EXIT) && ms_since(start) < 5000) {
      for (const auto& event : wait(kq, 100)) {
        fflags |= event.fflags;
        if (event.fflags & NOTE_EXIT) status = event.data;
      }
    }
  } else {
    write_bytes(input.b, 3, '\n');
  }
  int reaped = 0;
  REQUIRE(waitpid(pid, &reaped, 0) == pid);
  CHECK((fflags & NOTE_EXEC));
  CHECK((fflags & NOTE_EXIT));
  CHECK(WEXITSTATUS(status) == 5);
  CHECK(WEXITSTATUS(reaped) == 5);
}

TEST_CASE("NOTE_FORK on the process itself") {
  auto kq = new_queue();
  REQUIRE(apply(kq, {change(getpid(), EVFILT_PROC, EV_ADD, NOTE_FORK)}) == 0);
  expect_nothing(kq);
  Child child([] { return 0; });
  const auto event = expect_event(kq, getpid(), EVFILT_PROC, 5000);
  CHECK(event.fflags == NOTE_FORK);
  CHECK(child.wait_exit_code() == 0);
  expect_nothing(kq);  // EV_CLEAR: told once
}

namespace {

// What a queue reported per process, over several kevent() calls: fflags or'ed, and NOTE_CHILD's and NOTE_EXIT's
// data.
struct ProcHistory {
  std::map<pid_t, unsigned int> fflags;
  std::map<pid_t, int64_t> parent_of, status_of;
  std::string log;

  void take(int kq, int ms) {
    for (const auto& event : wait(kq, ms)) {
      const auto pid = static_cast<pid_t>(event.ident);
      log += "\n  " + kqlab::describe(event);
      fflags[pid] |= event.fflags;
      if (event.fflags & NOTE_CHILD) parent_of[pid] = event.data;
      if (event.fflags & NOTE_EXIT) status_of[pid] = event.data;
    }
  }
  // Collects until `done` holds, for at most `ms`.
  template <typename Done>
  void collect_until(int kq, Done done, int ms = 5000) {
    const auto start = Clock::now();
    while (!done() && ms_since(start) < ms) take(kq, 100);
  }
};

}  // namespace

TEST_CASE("NOTE_TRACK: a child that forks and execs reports NOTE_FORK, its child NOTE_CHILD, then NOTE_EXEC") {
  auto kq = new_queue();
  auto go = pipe_pair();
  const int read_end = go.a.get();
  Child child([read_end] {
    char byte;
    if (read(read_end, &byte, 1) != 1) return 100;
    const pid_t grandchild = fork();
    if (grandchild == 0) _exit(3);
    if (grandchild < 0 || read(read_end, &byte, 1) != 1) return 101;
    execl("/bin/sh", "sh", "-c", "exit 7", static_cast<char*>(nullptr));
    return 102;
  });
  const pid_t watched = child.pid();
  REQUIRE(apply(kq, {change(watched, EVFILT_PROC, EV_ADD, NOTE_EXIT | NOTE_FORK | NOTE_EXEC | NOTE_TRACK)}) == 0);
  ProcHistory seen;
  write_bytes(go.b, 1);  // fork
  const auto grandchild = [&] {
    for (const auto& [pid, parent] : seen.parent_of)
      if (parent == watched) return pid;
    return pid_t{0};
  };
  seen.collect_until(kq, [&] { return (seen.fflags[watched] & NOTE_FORK) && grandchild() != 0; });
  INFO("events:" << seen.log);
  CHECK((seen.fflags[watched] & NOTE_FORK));
  REQUIRE(grandchild() != 0);
  CHECK(!(seen.fflags[watched] & (NOTE_EXEC | NOTE_EXIT)));
  write_bytes(go.b, 1);  // exec
  seen.collect_until(kq, [&] { return (seen.fflags[watched] & NOTE_EXIT) && (seen.fflags[grandchild()] & NOTE_EXIT); });
  CHECK((seen.fflags[watched] & NOTE_EXEC));
  CHECK((seen.fflags[watched] & NOTE_EXIT));
  CHECK(WEXITSTATUS(seen.status_of[watched]) == 7);  // the exec'd program's exit
  CHECK((seen.fflags[grandchild()] & NOTE_CHILD));
  CHECK((seen.fflags[grandchild()] & NOTE_EXIT));    // followed with the parent's fflags
  CHECK(!(seen.fflags[grandchild()] & NOTE_TRACKERR));
  CHECK(child.wait_exit_code() == 7);
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
