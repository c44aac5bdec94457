// kqueue(2) read sentence by sentence, filter by filter: what the other files leave out about FIFOs, terminals,
// pipes, eventfds, timers, low-water marks and end of file. kevent()'s own part is in test_conformance.cpp.
// EVFILT_EMPTY, which only FreeBSD has, is skipped where it is missing.
#include <stdlib.h>
#include <sys/stat.h>
#if __has_include(<sys/eventfd.h>)
#include <sys/eventfd.h>
#endif

#include <algorithm>
#include <cstdint>

#include "support.hpp"

using namespace kqtest;

namespace {

#if defined(EVFILT_EMPTY)
constexpr short kFilterEmpty = EVFILT_EMPTY;
#else
constexpr short kFilterEmpty = 0;
#endif

// A FIFO in a temporary directory, opened without blocking: `reader` first, then `writer`.
struct Fifo {
  TempDir dir;
  std::string path = dir / "fifo";
  Fd reader, writer;

  Fifo() {
    REQUIRE(mkfifo(path.c_str(), 0600) == 0);
    reader = Fd(open(path.c_str(), O_RDONLY | O_NONBLOCK));
    REQUIRE(reader.get() >= 0);
    writer = open_writer();
  }
  Fd open_writer() const {
    Fd fd(open(path.c_str(), O_WRONLY | O_NONBLOCK));
    REQUIRE(fd.get() >= 0);
    return fd;
  }
};

// A pseudo-terminal: `master` is the terminal emulator's side, `terminal` the program's.
struct Terminal {
  Fd master{posix_openpt(O_RDWR | O_NOCTTY)};
  Fd terminal;

  Terminal() {
    REQUIRE(master.get() >= 0);
    REQUIRE(grantpt(master) == 0);
    REQUIRE(unlockpt(master) == 0);
    terminal = Fd(open(ptsname(master), O_RDWR | O_NOCTTY | O_NONBLOCK));
    REQUIRE(terminal.get() >= 0);
  }
};

}  // namespace

TEST_SUITE("conformance") {

// --- re-adding modifies the filter's parameters ------------------------------------------------------------

TEST_CASE("re-adding with a new NOTE_LOWAT changes the threshold of the existing event") {
  auto kq = new_queue();
  auto pair = socket_pair();
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_ADD, NOTE_LOWAT, 10)}) == 0);
  write_bytes(pair.b, 4);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_ADD, NOTE_LOWAT, 3)}) == 0);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 4);
}

TEST_CASE("a one-shot event re-added before it fired keeps firing once") {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  int first, second;
  add(kq, pipe.a, EVFILT_READ, EV_ONESHOT, &first);
  add(kq, pipe.a, EVFILT_READ, EV_ONESHOT, &second);
  write_bytes(pipe.b, 1);
  CHECK(expect_event(kq, pipe.a, EVFILT_READ).udata == &second);
  expect_nothing(kq);
}

TEST_CASE("SO_RCVLOWAT: a Unix-domain stream socket is readable only once that many bytes wait" *
          doctest::skip(kLinuxLayer)) {  // Linux's Unix-domain sockets ignore SO_RCVLOWAT: README deviation 31
  auto pair = socket_pair();
  const int low_water = 10;
  REQUIRE(setsockopt(pair.a, SOL_SOCKET, SO_RCVLOWAT, &low_water, sizeof low_water) == 0);
  auto kq = new_queue();
  add(kq, pair.a, EVFILT_READ);
  write_bytes(pair.b, 4);
  expect_nothing(kq, 100);
  write_bytes(pair.b, 6);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 10);
}

TEST_CASE("EVFILT_PROC for a process number that cannot exist is ESRCH") {
  auto kq = new_queue();
  CHECK(apply(kq, {change(static_cast<uintptr_t>(-1), EVFILT_PROC, EV_ADD, NOTE_EXIT)}) == -1);
  CHECK(errno == ESRCH);
}

// --- FIFOs and terminals -----------------------------------------------------------------------------------

TEST_CASE("EVFILT_READ on a FIFO: data is the bytes waiting; EV_EOF when the last writer closes") {
  Fifo fifo;
  auto kq = new_queue();
  add(kq, fifo.reader, EVFILT_READ);
  expect_nothing(kq);
  write_bytes(fifo.writer, 5);
  CHECK(expect_event(kq, fifo.reader, EVFILT_READ).data == 5);
  fifo.writer.reset();
  const struct kevent event = expect_event(kq, fifo.reader, EVFILT_READ);
  CHECK((event.flags & EV_EOF));
  CHECK(event.data == 5);
}

TEST_CASE("a FIFO's EV_EOF is cleared when a new writer connects; then it waits for data (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS: EV_CLEAR clears it instead
  Fifo fifo;
  auto kq = new_queue();
  add(kq, fifo.reader, EVFILT_READ);
  fifo.writer.reset();
  CHECK((expect_event(kq, fifo.reader, EVFILT_READ).flags & EV_EOF));
  Fd writer = fifo.open_writer();
  expect_nothing(kq);
  write_bytes(writer, 2);
  const struct kevent event = expect_event(kq, fifo.reader, EVFILT_READ);
  CHECK(!(event.flags & EV_EOF));
  CHECK(event.data == 2);
}

TEST_CASE("EVFILT_WRITE on a FIFO: data is the free space; EV_EOF when the reader goes") {
  Fifo fifo;
  auto kq = new_queue();
  add(kq, fifo.writer, EVFILT_WRITE);
  const struct kevent event = expect_event(kq, fifo.writer, EVFILT_WRITE);
  CHECK(event.data > 0);
  CHECK(!(event.flags & EV_EOF));
  fifo.reader.reset();
  CHECK((expect_event(kq, fifo.writer, EVFILT_WRITE).flags & EV_EOF));
}

TEST_CASE("EVFILT_READ on a terminal: readable once a line is typed") {
  Terminal pty;
  auto kq = new_queue();
  add(kq, pty.terminal, EVFILT_READ);
  expect_nothing(kq);
  write_bytes(pty.master, 3, '\n');
  CHECK(expect_event(kq, pty.terminal, EVFILT_READ).data > 0);
}

TEST_CASE("EVFILT_READ on a terminal: EV_EOF once the other side hangs up (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS's terminals are not pinned here
  Terminal pty;
  auto kq = new_queue();
  add(kq, pty.terminal, EVFILT_READ);
  expect_nothing(kq);
  pty.master.reset();
  CHECK((expect_event(kq, pty.terminal, EVFILT_READ).flags & EV_EOF));
}

// --- pipes: the filter a descriptor's direction does not support ---------------------------------------------

TEST_CASE("EVFILT_WRITE on a pipe's read end is accepted and never fires, even when the writer goes (FreeBSD)" *
          doctest::skip(kMacOS)) {  // pipe_kqfilter's pipe_nfiltops; macOS is not documented to agree
  auto kq = new_queue();
  auto pipe = pipe_pair();
  add(kq, pipe.a, EVFILT_WRITE);
  expect_nothing(kq);
  pipe.b.reset();
  expect_nothing(kq);
}

TEST_CASE("EVFILT_READ on a pipe's write end is accepted and never fires, even when the reader goes (FreeBSD)" *
          doctest::skip(kMacOS)) {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  add(kq, pipe.b, EVFILT_READ);
  write_bytes(pipe.b, 4);
  expect_nothing(kq);
  pipe.a.reset();
  expect_nothing(kq);
}

TEST_CASE("EVFILT_WRITE on a pipe whose reader is already gone fails with EPIPE (FreeBSD)" * doctest::skip(kMacOS)) {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  pipe.a.reset();
  CHECK(apply(kq, {change(pipe.b, EVFILT_WRITE, EV_ADD)}) == -1);
  CHECK(errno == EPIPE);
}

// --- timers and udata ----------------------------------------------------------------------------------------

TEST_CASE("a timer's event has fflags 0, whatever unit it was given (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS numbers its units differently and is not pinned here
  auto kq = new_queue();
  add_timer(kq, 1, 1000, NOTE_USECONDS);
  const struct kevent event = expect_event(kq, 1, EVFILT_TIMER);
  CHECK(event.fflags == 0);
  CHECK(event.data >= 1);
}

TEST_CASE("a timer far in the future is accepted and does not fire (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS refuses a period its clock cannot hold: ERANGE
  auto kq = new_queue();
  add_timer(kq, 1, INT64_MAX, NOTE_SECONDS);
  add_timer(kq, 2, INT64_MAX / 2);
  add_timer(kq, 3, INT64_MAX, NOTE_NSECONDS, EV_ONESHOT);
  expect_nothing(kq);
}

TEST_CASE("udata comes back as given, for every filter") {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  TempFile file;
  KeepDisposition keep(SIGUSR2);
  signal(SIGUSR2, SIG_IGN);
  int marks[6];
  REQUIRE(apply(kq, {change(pipe.a, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, &marks[0]),
                     change(pipe.b, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, &marks[1]),
                     change(1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 1, &marks[2]),
                     change(2, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, &marks[3]),
                     change(SIGUSR2, EVFILT_SIGNAL, EV_ADD, 0, 0, &marks[4]),
                     change(file.writer, EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_WRITE, 0, &marks[5])}) == 0);
  write_bytes(pipe.b, 1);
  REQUIRE(apply(kq, {change(2, EVFILT_USER, 0, NOTE_TRIGGER, 0, &marks[3])}) == 0);  // a change sets udata too
  REQUIRE(kill(getpid(), SIGUSR2) == 0);
  write_bytes(file.writer, 1);
  const short filters[6] = {EVFILT_READ, EVFILT_WRITE, EVFILT_TIMER, EVFILT_USER, EVFILT_SIGNAL, EVFILT_VNODE};
  void* seen[6] = {};
  for (int call = 0; call < 50 && std::count(seen, seen + 6, nullptr) > 0; ++call) {
    for (const struct kevent& event : wait(kq, 20)) {
      INFO(kqlab::describe(event));
      for (int i = 0; i < 6; ++i) {
        if (event.filter == filters[i]) seen[i] = event.udata;
      }
    }
  }
  for (int i = 0; i < 6; ++i) {
    CAPTURE(filters[i]);
    CHECK(seen[i] == &marks[i]);
  }
}

// --- end of file and low-water marks ---------------------------------------------------------------------------

TEST_CASE("a pipe's EV_EOF stays after the data is read: level-triggered, data 0") {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  add(kq, pipe.a, EVFILT_READ);
  write_bytes(pipe.b, 2);
  pipe.b.reset();
  CHECK(expect_event(kq, pipe.a, EVFILT_READ).data == 2);
  read_bytes(pipe.a, 2);
  const struct kevent after = expect_event(kq, pipe.a, EVFILT_READ);
  CHECK((after.flags & EV_EOF));
  CHECK(after.data == 0);
}

TEST_CASE("EV_CLEAR: an end of file is reported once") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ, EV_CLEAR);
  REQUIRE(shutdown(pair.b, SHUT_WR) == 0);
  CHECK((expect_event(kq, pair.a, EVFILT_READ).flags & EV_EOF));
  expect_nothing(kq);
}

TEST_CASE("NOTE_LOWAT on EVFILT_WRITE: fires only once that much room is free (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS bounds the mark by the buffer
  auto kq = new_queue();
  auto pipe = pipe_pair();
  REQUIRE(apply(kq, {change(pipe.b, EVFILT_WRITE, EV_ADD, NOTE_LOWAT, int64_t{1} << 30)}) == 0);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(pipe.b, EVFILT_WRITE, EV_ADD, NOTE_LOWAT, 1)}) == 0);
  CHECK(expect_event(kq, pipe.b, EVFILT_WRITE).data > 0);
}

TEST_CASE("SO_RCVLOWAT: a TCP socket is readable only once that many bytes wait") {
  auto listener = tcp_listener();
  auto client = tcp_connect(listener);
  Fd server(accept(listener, nullptr, nullptr));
  const int low_water = 10;
  REQUIRE(setsockopt(server, SOL_SOCKET, SO_RCVLOWAT, &low_water, sizeof low_water) == 0);
  auto kq = new_queue();
  add(kq, server, EVFILT_READ);
  write_bytes(client, 4);
  expect_nothing(kq, 100);
  write_bytes(client, 6);
  CHECK(expect_event(kq, server, EVFILT_READ).data == 10);
}

TEST_CASE("EV_ONESHOT: an event whose condition went away before kevent() is still returned, once (FreeBSD)" *
          doctest::skip(kLinuxLayer || kMacOS)) {  // kqueue_scan copies a one-shot knote out unasked; deviation 32
  auto kq = new_queue();
  auto pipe = pipe_pair();
  add(kq, pipe.a, EVFILT_READ, EV_ONESHOT);
  write_bytes(pipe.b, 3);
  read_bytes(pipe.a, 3);
  CHECK((expect_event(kq, pipe.a, EVFILT_READ).flags & EV_ONESHOT));
  CHECK(apply(kq, {change(pipe.a, EVFILT_READ, EV_DELETE)}) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("EVFILT_VNODE with no notes, or notes it does not know, is accepted and fires for none of them") {
  TempFile file;
  auto kq = new_queue();
  Fd other = file.open_for_reading();
  REQUIRE(apply(kq, {change(file.writer, EVFILT_VNODE, EV_ADD | EV_CLEAR, 0),
                     change(other, EVFILT_VNODE, EV_ADD | EV_CLEAR, 0x00100000)}) == 0);
  write_bytes(file.writer, 2);
  REQUIRE(fchmod(file.writer, 0640) == 0);
  expect_nothing(kq);
}

// --- eventfd (FreeBSD 13+, Linux) -------------------------------------------------------------------------------

#if __has_include(<sys/eventfd.h>)
TEST_CASE("EVFILT_READ on an eventfd: returned while the counter is above 0, data the counter") {
  Fd counter(eventfd(0, EFD_NONBLOCK));
  REQUIRE(counter.get() >= 0);
  auto kq = new_queue();
  add(kq, counter, EVFILT_READ);
  expect_nothing(kq);
  REQUIRE(eventfd_write(counter, 5) == 0);
  REQUIRE(eventfd_write(counter, 2) == 0);
  CHECK(static_cast<uint64_t>(expect_event(kq, counter, EVFILT_READ).data) == 7);
  eventfd_t value = 0;
  REQUIRE(eventfd_read(counter, &value) == 0);
  expect_nothing(kq);
}
#endif

// --- EVFILT_EMPTY (FreeBSD) ----------------------------------------------------------------------------------

TEST_CASE("EVFILT_EMPTY: a connected socket with nothing left to send fires, data 0 (FreeBSD)" *
          doctest::skip(kFilterEmpty == 0 || kLinuxLayer)) {  // macOS: no such filter; Linux: README deviation
  auto listener = tcp_listener();
  auto client = tcp_connect(listener);
  auto kq = new_queue();
  add(kq, client, kFilterEmpty);
  CHECK(expect_event(kq, client, kFilterEmpty).data == 0);
}

}  // TEST_SUITE
