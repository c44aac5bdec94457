// Closing a watched descriptor removes its events at once, per descriptor number (kqueue(2): "Calling close()
// on a file descriptor will remove any kevents that reference the descriptor"), even when a dup() keeps the
// file open, and even when the number is reused at once.
#include "support.hpp"

using namespace kqtest;

TEST_SUITE("close") {

TEST_CASE("close() removes the events of that descriptor number, even if a dup keeps the file open") {
  auto kq = new_queue();
  auto pair = socket_pair();
  Fd copy(dup(pair.a));
  add(kq, pair.a, EVFILT_READ);
  const int number = pair.a.release();
  REQUIRE(close(number) == 0);
  write_bytes(pair.b, 1);
  expect_nothing(kq);
  CHECK(apply(kq, {change(number, EVFILT_READ, EV_DELETE)}) == -1);
  CHECK(errno == (kMacOS ? ENOENT : EBADF));
}

TEST_CASE("a pending event of a closed descriptor is dropped with it") {
  auto kq = new_queue();
  auto pair = socket_pair();
  Fd copy(dup(pair.a));
  add(kq, pair.a, EVFILT_READ, EV_CLEAR);
  write_bytes(pair.b, 1);
  pair.a.reset();
  expect_nothing(kq);
}

TEST_CASE("a reused descriptor number starts with no events") {
  auto kq = new_queue();
  auto first = socket_pair();
  Fd keep(dup(first.a));
  add(kq, first.a, EVFILT_READ);
  const int number = first.a.release();
  close(number);
  auto second = socket_pair();  // the lowest free numbers: `number` is reused
  REQUIRE((second.a.get() == number || second.b.get() == number));
  write_bytes(first.b, 1);
  write_bytes(second.a.get() == number ? second.b : second.a, 1);
  expect_nothing(kq);
  CHECK(apply(kq, {change(number, EVFILT_READ, EV_DELETE)}) == -1);
  CHECK(errno == ENOENT);
  add(kq, number, EVFILT_READ);
  expect_event(kq, number, EVFILT_READ);
}

TEST_CASE("dup2() onto a watched number removes its events") {
  auto kq = new_queue();
  auto watched = socket_pair();
  auto other = socket_pair();
  Fd keep(dup(watched.a));
  add(kq, watched.a, EVFILT_READ);
  REQUIRE(dup2(other.a, watched.a) == watched.a.get());
  write_bytes(watched.b, 1);
  write_bytes(other.b, 1);
  expect_nothing(kq);
}

TEST_CASE("closing the queue releases it; a new queue can take the same number") {
  auto pair = socket_pair();
  const int kq = kqueue();
  REQUIRE(kq >= 0);
  add(kq, pair.a, EVFILT_WRITE);
  REQUIRE(close(kq) == 0);
  struct kevent event;
  CHECK(kevent(kq, nullptr, 0, &event, 1, nullptr) == -1);
  CHECK(errno == EBADF);
  auto again = new_queue();
  CHECK(again.get() == kq);
  expect_nothing(again);  // nothing of the old queue's
  add(again, pair.a, EVFILT_WRITE);
  expect_event(again, pair.a, EVFILT_WRITE);
}

TEST_CASE("closing a descriptor the queue does not watch leaves its events alone") {
  auto kq = new_queue();
  auto watched = socket_pair();
  add(kq, watched.a, EVFILT_READ);
  { auto unrelated = socket_pair(); }
  write_bytes(watched.b, 1);
  expect_event(kq, watched.a, EVFILT_READ);
}

}  // TEST_SUITE
