// EVFILT_READ and EVFILT_WRITE on regular files (kqueue(2): "the event is triggered when the file pointer is not
// at the end of file; data contains the offset from the current position to end of file, and may be
// negative"), and on another kqueue ("data contains the number of events on the queue"), which makes queues
// nest.
#include <poll.h>

#include "support.hpp"

using namespace kqtest;

TEST_SUITE("regular files") {

TEST_CASE("EVFILT_READ on a file: data is what lies past the offset, returned while there is some") {
  TempFile file;
  write_bytes(file.writer, 100);
  auto reader = file.open_for_reading();
  auto kq = new_queue();
  add(kq, reader, EVFILT_READ);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == 100);
  REQUIRE(read_bytes(reader, 40) == 40);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == 60);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == 60);  // level-triggered
  REQUIRE(read_bytes(reader, 60) == 60);
  expect_nothing(kq);
}

TEST_CASE("at the end of a file nothing is returned until the file grows") {
  TempFile file;
  auto reader = file.open_for_reading();
  auto kq = new_queue();
  add(kq, reader, EVFILT_READ);
  expect_nothing(kq);
  write_bytes(file.writer, 10);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == 10);
  REQUIRE(read_bytes(reader, 10) == 10);
  expect_nothing(kq);
  write_bytes(file.writer, 3);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == 3);
}

TEST_CASE("EV_CLEAR on a file: once per change, with the current total") {
  TempFile file;
  write_bytes(file.writer, 5);
  auto reader = file.open_for_reading();
  auto kq = new_queue();
  add(kq, reader, EVFILT_READ, EV_CLEAR);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == 5);
  expect_nothing(kq);
  write_bytes(file.writer, 2);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == 7);
}

TEST_CASE("past the end of a file data is negative, and the event fires (FreeBSD)" *
          doctest::skip(kMacOS)) {  // the course's reference pins this for FreeBSD only
  TempFile file;
  write_bytes(file.writer, 100);
  auto reader = file.open_for_reading();
  REQUIRE(lseek(reader, 150, SEEK_SET) == 150);
  auto kq = new_queue();
  add(kq, reader, EVFILT_READ);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == -50);
}

TEST_CASE("NOTE_FILE_POLL: active even at the end of the file (FreeBSD)" * doctest::skip(!kHaveFilePoll)) {
  TempFile file;
  auto reader = file.open_for_reading();
  auto kq = new_queue();
  REQUIRE(apply(kq, {change(reader, EVFILT_READ, EV_ADD, kNoteFilePoll)}) == 0);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == 0);
}

TEST_CASE("EVFILT_WRITE on a file is always active (data 0 on FreeBSD, 1 on macOS)") {
  TempFile file;
  auto kq = new_queue();
  add(kq, file.writer, EVFILT_WRITE);
  CHECK(expect_event(kq, file.writer, EVFILT_WRITE).data == (kMacOS ? 1 : 0));
  CHECK(expect_event(kq, file.writer, EVFILT_WRITE).data == (kMacOS ? 1 : 0));
}

TEST_CASE("a file unlinked while open still reports what is written to it") {
  TempFile file;
  auto reader = file.open_for_reading();
  auto kq = new_queue();
  add(kq, reader, EVFILT_READ, EV_CLEAR);
  REQUIRE(unlink(file.path.c_str()) == 0);
  write_bytes(file.writer, 6);
  CHECK(expect_event(kq, reader, EVFILT_READ).data == 6);
}

TEST_CASE("two descriptors of one file are two events") {
  TempFile file;
  auto first = file.open_for_reading();
  auto second = file.open_for_reading();
  auto kq = new_queue();
  add(kq, first, EVFILT_READ, EV_CLEAR);
  add(kq, second, EVFILT_READ, EV_CLEAR);
  expect_nothing(kq);
  write_bytes(file.writer, 4);
  const auto events = wait(kq, 1000);
  INFO("returned:" << describe_all(events));
  CHECK(events.size() == 2);
  REQUIRE(apply(kq, {change(first, EVFILT_READ, EV_DELETE)}) == 0);
  write_bytes(file.writer, 4);
  CHECK(expect_event(kq, second, EVFILT_READ).data == 8);
}

TEST_CASE("closing a watched file removes its events, even with a dup keeping it open") {
  TempFile file;
  auto reader = file.open_for_reading();
  Fd copy(dup(reader));
  auto kq = new_queue();
  add(kq, reader, EVFILT_READ);
  expect_nothing(kq);
  const int number = reader.release();
  REQUIRE(close(number) == 0);
  write_bytes(file.writer, 8);
  expect_nothing(kq);
  CHECK(apply(kq, {change(number, EVFILT_READ, EV_DELETE)}) == -1);
  CHECK(errno == (kMacOS ? ENOENT : EBADF));
}

}  // TEST_SUITE

TEST_SUITE("nested queues") {

TEST_CASE("a queue is readable from another queue while it has pending events; data counts them") {
  auto inner = new_queue();
  auto outer = new_queue();
  auto pair = socket_pair();
  add(inner, 1, EVFILT_USER, EV_CLEAR);
  add(inner, 2, EVFILT_USER, EV_CLEAR);
  add(inner, pair.a, EVFILT_READ, EV_CLEAR);
  add(outer, inner, EVFILT_READ);
  expect_nothing(outer);
  trigger(inner, 1);
  trigger(inner, 2);
  write_bytes(pair.b, 1);
  CHECK(expect_event(outer, inner, EVFILT_READ).data == 3);
  CHECK(wait(inner, 0).size() == 3);
  expect_nothing(outer);
}

TEST_CASE("a queue whose only activity is a user event is readable to poll() and to another queue") {
  auto inner = new_queue();
  auto outer = new_queue();
  add(inner, 1, EVFILT_USER, EV_CLEAR);
  add(outer, inner, EVFILT_READ, EV_CLEAR);
  pollfd probe{inner, POLLIN, 0};
  CHECK(poll(&probe, 1, 0) == 0);
  trigger(inner, 1);
  CHECK(poll(&probe, 1, 1000) == 1);
  CHECK((probe.revents & POLLIN));
  CHECK(expect_event(outer, inner, EVFILT_READ).data == 1);
  expect_event(inner, 1, EVFILT_USER);
  CHECK(poll(&probe, 1, 0) == 0);
}

TEST_CASE("a timer in a nested queue makes it readable") {
  auto inner = new_queue();
  auto outer = new_queue();
  add_timer(inner, 1, 20, 0, EV_ONESHOT);
  add(outer, inner, EVFILT_READ);
  CHECK(expect_event(outer, inner, EVFILT_READ, 2000).data == 1);
  CHECK(expect_event(inner, 1, EVFILT_TIMER).data == 1);
  expect_nothing(outer);
}

TEST_CASE("a queue cannot watch itself, nor be watched for writing: EINVAL") {
  auto kq = new_queue();
  auto other = new_queue();
  CHECK(apply(kq, {change(kq, EVFILT_READ, EV_ADD)}) == -1);
  CHECK(errno == EINVAL);
  CHECK(apply(kq, {change(other, EVFILT_WRITE, EV_ADD)}) == -1);
  CHECK(errno == EINVAL);
}

TEST_CASE("closing a watched queue removes its event from the watching queue") {
  auto outer = new_queue();
  const int inner = kqueue();
  REQUIRE(inner >= 0);
  add(inner, 1, EVFILT_USER);
  add(outer, inner, EVFILT_READ);
  trigger(inner, 1);
  expect_event(outer, inner, EVFILT_READ);
  REQUIRE(close(inner) == 0);
  expect_nothing(outer);
}

}  // TEST_SUITE
