// The EV_* flags, one by one (kqueue(2), "flags"), on the simplest source there is: a socketpair.
#include "support.hpp"

using namespace kqtest;

TEST_SUITE("flags") {

TEST_CASE("level-triggered by default: returned again on every call while the condition holds") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ);
  write_bytes(pair.b, 5);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 5);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 5);
  read_bytes(pair.a, 5);
  expect_nothing(kq);
}

TEST_CASE("a condition that stopped holding before kevent() is not returned") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ);
  write_bytes(pair.b, 5);
  read_bytes(pair.a, 5);
  expect_nothing(kq);
}

TEST_CASE("returned flags carry the creation flags but not the actions (FreeBSD)") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_WRITE, EV_CLEAR);
  const auto event = expect_event(kq, pair.a, EVFILT_WRITE);
  CHECK(portable_flags(event) == EV_CLEAR);
}

TEST_CASE("EV_ONESHOT: returned once, then the event is gone") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ, EV_ONESHOT);
  write_bytes(pair.b, 1);
  CHECK((expect_event(kq, pair.a, EVFILT_READ).flags & EV_ONESHOT));
  expect_nothing(kq);
  CHECK(apply(kq, {change(pair.a, EVFILT_READ, EV_DELETE)}) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("EV_ONESHOT added again while the condition holds: returned again") {
  // The one-shot re-arm pattern: each delivery is answered by a new EV_ADD|EV_ONESHOT, with the bytes left
  // unread. BSD evaluates a new knote when it is added, so every re-add fires at once.
  auto kq = new_queue();
  auto pair = socket_pair();
  write_bytes(pair.b, 3);
  for (int round = 0; round < 3; ++round) {
    add(kq, pair.a, EVFILT_READ, EV_ONESHOT);
    CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 3);
    expect_nothing(kq);
  }
}

TEST_CASE("EV_CLEAR added after a one-shot delivery, while the condition holds: returned once") {
  auto kq = new_queue();
  auto pair = socket_pair();
  write_bytes(pair.b, 4);
  add(kq, pair.a, EVFILT_READ, EV_ONESHOT);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 4);
  add(kq, pair.a, EVFILT_READ, EV_CLEAR);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 4);
  expect_nothing(kq);
  write_bytes(pair.b, 1);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 5);
}

TEST_CASE("EV_CLEAR: returned once per new arrival, reporting the current total") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ, EV_CLEAR);
  write_bytes(pair.b, 2);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 2);
  expect_nothing(kq);
  write_bytes(pair.b, 3);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 5);
}

TEST_CASE("EV_DISPATCH: disabled after delivery; EV_ENABLE fires again while the condition holds") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ, EV_DISPATCH);
  write_bytes(pair.b, 4);
  CHECK((expect_event(kq, pair.a, EVFILT_READ).flags & EV_DISPATCH));
  expect_nothing(kq);
  write_bytes(pair.b, 1);  // more data while disabled: still nothing
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_ENABLE)}) == 0);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 5);
  expect_nothing(kq);
}

TEST_CASE("EV_DISABLE suppresses, EV_ENABLE restores, the event stays registered") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ);
  write_bytes(pair.b, 1);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_DISABLE)}) == 0);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_ENABLE)}) == 0);
  expect_event(kq, pair.a, EVFILT_READ);
}

TEST_CASE("EV_ADD|EV_DISABLE creates the event disabled") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_WRITE, EV_DISABLE);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_WRITE, EV_ENABLE)}) == 0);
  expect_event(kq, pair.a, EVFILT_WRITE);
}

TEST_CASE("EV_DELETE removes the event and anything it had pending") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ);
  write_bytes(pair.b, 1);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_DELETE)}) == 0);
  expect_nothing(kq);
}

TEST_CASE("re-adding modifies: udata replaced, the creation flags kept") {
  auto kq = new_queue();
  auto pair = socket_pair();
  int first, second;
  add(kq, pair.a, EVFILT_READ, 0, &first);
  add(kq, pair.a, EVFILT_READ, EV_ONESHOT, &second);  // does not make it one-shot
  write_bytes(pair.b, 1);
  const auto event = expect_event(kq, pair.a, EVFILT_READ);
  CHECK(event.udata == &second);
  CHECK(!(event.flags & EV_ONESHOT));
  expect_event(kq, pair.a, EVFILT_READ);  // still level-triggered, still there
}

TEST_CASE("EV_ENABLE and EV_DISABLE replace udata too") {
  auto kq = new_queue();
  auto pair = socket_pair();
  int first, second;
  add(kq, pair.a, EVFILT_WRITE, 0, &first);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_WRITE, EV_DISABLE, 0, 0, &second)}) == 0);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_WRITE, EV_ENABLE, 0, 0, &second)}) == 0);
  CHECK(expect_event(kq, pair.a, EVFILT_WRITE).udata == &second);
}

TEST_CASE("EV_RECEIPT: a receipt for each change, and the bit echoed in later events") {
  auto kq = new_queue();
  auto pair = socket_pair();
  std::vector<struct kevent> changes = {change(pair.a, EVFILT_WRITE, EV_ADD | EV_RECEIPT),
                                        change(pair.b, EVFILT_WRITE, EV_ADD | EV_RECEIPT)};
  std::vector<struct kevent> out(2);
  REQUIRE(kevent(kq, changes.data(), 2, out.data(), 2, nullptr) == 2);
  for (const auto& receipt : out) {
    CHECK((receipt.flags & EV_ERROR));
    CHECK(receipt.data == 0);
  }
  CHECK((expect_event(kq, pair.a, EVFILT_WRITE, 1000).flags & EV_RECEIPT));
}

TEST_CASE("EV_ERROR and EV_EOF given as input are ignored") {
  auto kq = new_queue();
  auto pair = socket_pair();
  REQUIRE(apply(kq, {change(pair.a, EVFILT_WRITE, EV_ADD | EV_EOF | EV_ERROR)}) == 0);
  const auto event = expect_event(kq, pair.a, EVFILT_WRITE);
  CHECK(!(event.flags & (EV_EOF | EV_ERROR)));
}

TEST_CASE("EV_ONESHOT|EV_DISPATCH is accepted; one-shot wins") {
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_WRITE, EV_ONESHOT | EV_DISPATCH);
  expect_event(kq, pair.a, EVFILT_WRITE);
  CHECK(apply(kq, {change(pair.a, EVFILT_WRITE, EV_ENABLE)}) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("EV_ADD|EV_DELETE creates a missing event (FreeBSD)" * doctest::skip(kMacOS)) {  // macOS: delete wins
  auto kq = new_queue();
  auto pair = socket_pair();
  REQUIRE(apply(kq, {change(pair.a, EVFILT_WRITE, EV_ADD | EV_DELETE)}) == 0);
  expect_event(kq, pair.a, EVFILT_WRITE);
}

}  // TEST_SUITE
