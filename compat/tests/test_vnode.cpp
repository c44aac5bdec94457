// EVFILT_VNODE (kqueue(2)): "Takes a file descriptor as the identifier and the events to watch for in fflags, and
// returns when one or more of the requested events occurs on the descriptor." The descriptor's file is watched,
// whatever its name becomes; fflags returns the requested events that happened. Normal use is EV_ADD|EV_CLEAR.
#include <sys/stat.h>

#include <thread>

#include "support.hpp"

using namespace kqtest;

namespace {

constexpr unsigned int kAll = NOTE_DELETE | NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB | NOTE_LINK | NOTE_RENAME;

Fd open_file(const std::string& path, int flags = O_RDWR | O_CREAT) {
  Fd fd(open(path.c_str(), flags, 0644));
  REQUIRE_MESSAGE(fd.get() >= 0, "open " << path << ": " << std::strerror(errno));
  return fd;
}

Fd open_directory(const std::string& path) {
  REQUIRE(mkdir(path.c_str(), 0755) == 0);
  return open_file(path, O_RDONLY | O_DIRECTORY);
}

void watch(int kq, int fd, unsigned int fflags = kAll, unsigned short flags = EV_CLEAR) {
  REQUIRE(apply(kq, {change(fd, EVFILT_VNODE, EV_ADD | flags, fflags)}) == 0);
}

// The fflags of the one vnode event for `fd`.
unsigned int fired(int kq, int fd) { return expect_event(kq, fd, EVFILT_VNODE).fflags; }

}  // namespace

TEST_SUITE("vnode") {

TEST_CASE("NOTE_WRITE on a write; NOTE_EXTEND when it grew the file") {
  TempDir dir;
  auto file = open_file(dir / "log");
  auto kq = new_queue();
  watch(kq, file);
  write_bytes(file, 10);
  const unsigned int appended = fired(kq, file);
  CHECK((appended & NOTE_WRITE));
  if (!kMacOS) CHECK((appended & NOTE_EXTEND));  // macOS reports an append as NOTE_WRITE only
  expect_nothing(kq);
  REQUIRE(pwrite(file, "y", 1, 0) == 1);  // over existing bytes: no growth
  const unsigned int overwritten = fired(kq, file);
  CHECK((overwritten & NOTE_WRITE));
  CHECK(!(overwritten & NOTE_EXTEND));
}

// inotify reports a truncate as IN_MODIFY, like a write (compat/README.md, "on a truncate").
TEST_CASE("NOTE_ATTRIB when the file is truncated" * doctest::skip(kLinuxLayer)) {  // Linux: NOTE_WRITE
  TempDir dir;
  auto file = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, file);
  REQUIRE(ftruncate(file, 100) == 0);
  CHECK((fired(kq, file) & NOTE_ATTRIB));
}

TEST_CASE("NOTE_ATTRIB on chmod") {
  TempDir dir;
  auto file = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, file);
  REQUIRE(fchmod(file, 0600) == 0);
  CHECK(fired(kq, file) == NOTE_ATTRIB);
}

TEST_CASE("NOTE_DELETE when the file is unlinked while it is open") {
  TempDir dir;
  auto file = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, file);
  REQUIRE(unlink((dir / "f").c_str()) == 0);
  CHECK((fired(kq, file) & NOTE_DELETE));
}

TEST_CASE("NOTE_LINK when a hard link is made") {
  TempDir dir;
  auto file = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, file);
  REQUIRE(link((dir / "f").c_str(), (dir / "g").c_str()) == 0);
  CHECK((fired(kq, file) & NOTE_LINK));
}

TEST_CASE("NOTE_RENAME on a rename, and the descriptor's file is still the one watched") {
  TempDir dir;
  auto file = open_file(dir / "old");
  auto kq = new_queue();
  watch(kq, file);
  REQUIRE(rename((dir / "old").c_str(), (dir / "new").c_str()) == 0);
  CHECK(fired(kq, file) == NOTE_RENAME);
  write_bytes(file, 1);
  CHECK((fired(kq, file) & NOTE_WRITE));
  auto other = open_file(dir / "old");  // a new file at the old name is not the watched one
  write_bytes(other, 1);
  expect_nothing(kq);
}

TEST_CASE("NOTE_DELETE when another file is renamed over it") {
  TempDir dir;
  auto file = open_file(dir / "target");
  auto replacement = open_file(dir / "replacement");
  auto kq = new_queue();
  watch(kq, file);
  REQUIRE(rename((dir / "replacement").c_str(), (dir / "target").c_str()) == 0);
  CHECK((fired(kq, file) & NOTE_DELETE));
}

TEST_CASE("only the requested events are returned; EV_CLEAR starts them again") {
  TempDir dir;
  auto file = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, file, NOTE_ATTRIB);
  write_bytes(file, 1);
  expect_nothing(kq);
  REQUIRE(fchmod(file, 0600) == 0);
  CHECK(fired(kq, file) == NOTE_ATTRIB);
  expect_nothing(kq);
  REQUIRE(fchmod(file, 0640) == 0);
  CHECK(fired(kq, file) == NOTE_ATTRIB);
}

TEST_CASE("without EV_CLEAR the event stays active and its bits accumulate") {
  TempDir dir;
  auto file = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, file, NOTE_ATTRIB | NOTE_RENAME, 0);
  REQUIRE(fchmod(file, 0600) == 0);
  CHECK(fired(kq, file) == NOTE_ATTRIB);
  CHECK(fired(kq, file) == NOTE_ATTRIB);
  REQUIRE(rename((dir / "f").c_str(), (dir / "g").c_str()) == 0);
  CHECK(fired(kq, file) == (NOTE_ATTRIB | NOTE_RENAME));
}

TEST_CASE("EV_DISABLE: changes accumulate and surface on EV_ENABLE") {
  TempDir dir;
  auto file = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, file);
  REQUIRE(apply(kq, {change(file, EVFILT_VNODE, EV_DISABLE, kAll)}) == 0);
  REQUIRE(fchmod(file, 0600) == 0);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(file, EVFILT_VNODE, EV_ENABLE, kAll)}) == 0);
  CHECK(fired(kq, file) == NOTE_ATTRIB);
}

TEST_CASE("a directory: NOTE_WRITE when an entry comes or goes, NOTE_LINK for a subdirectory") {
  TempDir dir;
  auto watched = open_directory(dir / "d");
  auto kq = new_queue();
  watch(kq, watched);
  { auto entry = open_file(dir / "d/file"); }
  CHECK((fired(kq, watched) & NOTE_WRITE));
  REQUIRE(unlink((dir / "d/file").c_str()) == 0);
  CHECK((fired(kq, watched) & NOTE_WRITE));
  REQUIRE(mkdir((dir / "d/sub").c_str(), 0755) == 0);
  const unsigned int made = fired(kq, watched);
  CHECK((made & NOTE_WRITE));
  CHECK((made & NOTE_LINK));
}

// inotify reports a directory's entries' own changes (a write, a chmod) on the directory's watch, with their name.
TEST_CASE("a directory: writing or chmod-ing a file in it is not an event of the directory") {
  TempDir dir;
  auto watched = open_directory(dir / "d");
  auto entry = open_file(dir / "d/file");
  auto kq = new_queue();
  watch(kq, watched);
  write_bytes(entry, 10);
  REQUIRE(fchmod(entry, 0600) == 0);
  expect_nothing(kq);
}

TEST_CASE("a directory: NOTE_DELETE when it is removed while open") {
  TempDir dir;
  auto watched = open_directory(dir / "d");
  auto kq = new_queue();
  watch(kq, watched);
  REQUIRE(rmdir((dir / "d").c_str()) == 0);
  CHECK((fired(kq, watched) & NOTE_DELETE));
}

TEST_CASE("two descriptors of one file in one queue: both fire; deleting one keeps the other") {
  TempDir dir;
  auto first = open_file(dir / "f");
  auto second = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, first);
  watch(kq, second);
  REQUIRE(fchmod(first, 0600) == 0);
  const auto events = wait(kq, 1000);
  CHECK(events.size() == 2);
  REQUIRE(apply(kq, {change(first, EVFILT_VNODE, EV_DELETE)}) == 0);
  REQUIRE(fchmod(first, 0640) == 0);
  CHECK(fired(kq, second) == NOTE_ATTRIB);
}

TEST_CASE("EINVAL for a pipe and a socket") {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  auto pair = socket_pair();
  CHECK(apply(kq, {change(pipe.a, EVFILT_VNODE, EV_ADD | EV_CLEAR, kAll)}) == -1);
  CHECK(errno == EINVAL);
  CHECK(apply(kq, {change(pair.a, EVFILT_VNODE, EV_ADD | EV_CLEAR, kAll)}) == -1);
  CHECK(errno == EINVAL);
}

TEST_CASE("closing the descriptor removes the event, even while a dup keeps the file open") {
  TempDir dir;
  auto file = open_file(dir / "f");
  Fd copy(dup(file));
  auto kq = new_queue();
  watch(kq, file);
  const int number = file.release();
  REQUIRE(close(number) == 0);
  write_bytes(copy, 1);
  expect_nothing(kq);
  CHECK(apply(kq, {change(number, EVFILT_VNODE, EV_DELETE)}) == -1);
  CHECK(errno == (kMacOS ? ENOENT : EBADF));
  CHECK(apply(kq, {change(number, EVFILT_VNODE, EV_ADD | EV_CLEAR, kAll)}) == -1);
  CHECK(errno == EBADF);
}

TEST_CASE("a pending event is dropped when its descriptor is closed, and a reused number starts clean") {
  TempDir dir;
  auto file = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, file);
  REQUIRE(fchmod(file, 0600) == 0);
  const int number = file.release();
  REQUIRE(close(number) == 0);
  auto reused = open_file(dir / "g");
  REQUIRE(reused.get() == number);
  expect_nothing(kq);
  CHECK(apply(kq, {change(number, EVFILT_VNODE, EV_DELETE)}) == -1);
  CHECK(errno == ENOENT);
}

}  // TEST_SUITE

TEST_SUITE("threads") {

TEST_CASE("a change to a file wakes a thread blocked in kevent()") {
  TempDir dir;
  auto file = open_file(dir / "f");
  auto kq = new_queue();
  watch(kq, file);
  int returned = -2;
  struct kevent event {};
  std::thread waiter([&] {
    const timespec limit{5, 0};
    returned = kevent(kq, nullptr, 0, &event, 1, &limit);
  });
  write_bytes(file, 1);
  waiter.join();
  CHECK(returned == 1);
  CHECK((event.fflags & NOTE_WRITE));
}

}  // TEST_SUITE
