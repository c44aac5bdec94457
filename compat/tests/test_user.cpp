// EVFILT_USER (kqueue(2): "Establishes a user event identified by ident which is not associated with any kernel
// mechanism but is triggered by user level code"): triggers, the 24 user flags, data, EV_CLEAR, disabling.
#include "support.hpp"

using namespace kqtest;

TEST_SUITE("user") {

TEST_CASE("NOTE_TRIGGER fires the event: fflags are the stored user flags, data the latest change's") {
  auto kq = new_queue();
  int tag;
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ADD | EV_CLEAR, 0x11, 7)}) == 0);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, 0, NOTE_TRIGGER, 42, &tag)}) == 0);
  const auto event = expect_event(kq, 1, EVFILT_USER);
  CHECK(event.fflags == 0x11);
  CHECK(event.data == 42);
  CHECK(event.udata == &tag);
  CHECK(portable_flags(event) == EV_CLEAR);
}

TEST_CASE("NOTE_TRIGGER inside EV_ADD does not fire (FreeBSD)" * doctest::skip(kMacOS)) {  // macOS: it fires
  auto kq = new_queue();
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ADD | EV_CLEAR, NOTE_TRIGGER)}) == 0);
  expect_nothing(kq);
  trigger(kq, 1);
  expect_event(kq, 1, EVFILT_USER);
}

TEST_CASE("NOTE_FFOR, NOTE_FFAND, NOTE_FFCOPY and NOTE_FFNOP act on the 24 user flags") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  const struct {
    unsigned operation;
    unsigned expected;
  } steps[] = {
      {NOTE_FFOR | 0x3, 0x3},
      {NOTE_FFOR | 0x8, 0xb},
      {NOTE_FFAND | 0xa, 0xa},
      {NOTE_FFCOPY | 0xf0, 0xf0},
      {NOTE_FFNOP | 0xff, 0xf0},
      {NOTE_FFCOPY | NOTE_FFLAGSMASK, NOTE_FFLAGSMASK},
  };
  for (const auto& step : steps) {
    INFO("fflags operation 0x" << std::hex << step.operation);
    trigger(kq, 1, step.operation);
    CHECK(expect_event(kq, 1, EVFILT_USER).fflags == step.expected);
  }
}

TEST_CASE("a change that does not trigger still updates the flags and data returned by the next trigger") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, 0, NOTE_FFOR | 0x4, 9)}) == 0);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, 0, NOTE_TRIGGER, 10)}) == 0);
  const auto event = expect_event(kq, 1, EVFILT_USER);
  CHECK(event.fflags == 0x4);
  CHECK(event.data == 10);
}

TEST_CASE("EV_CLEAR: one event per burst of triggers") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  trigger(kq, 1);
  trigger(kq, 1);
  trigger(kq, 1);
  expect_event(kq, 1, EVFILT_USER);
  expect_nothing(kq);
  trigger(kq, 1);
  expect_event(kq, 1, EVFILT_USER);
}

TEST_CASE("without EV_CLEAR a triggered event stays triggered until deleted") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER);
  trigger(kq, 1);
  for (int call = 0; call < 3; ++call) expect_event(kq, 1, EVFILT_USER);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_DELETE)}) == 0);
  expect_nothing(kq);
}

TEST_CASE("a change carrying EV_CLEAR resets a triggered event (FreeBSD)" * doctest::skip(kMacOS)) {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER);
  trigger(kq, 1);
  expect_event(kq, 1, EVFILT_USER);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_CLEAR)}) == 0);
  expect_nothing(kq);
}

TEST_CASE("a trigger made while disabled is kept and delivered by EV_ENABLE") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_DISABLE)}) == 0);
  trigger(kq, 1, NOTE_FFNOP, 5);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ENABLE, 0, 5)}) == 0);
  CHECK(expect_event(kq, 1, EVFILT_USER).data == 5);
  expect_nothing(kq);
}

TEST_CASE("EV_DISPATCH, then EV_ENABLE|NOTE_TRIGGER in one change re-arms and fires") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_DISPATCH | EV_CLEAR);
  trigger(kq, 1);
  CHECK((expect_event(kq, 1, EVFILT_USER).flags & EV_DISPATCH));
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ENABLE, NOTE_TRIGGER)}) == 0);
  expect_event(kq, 1, EVFILT_USER);
  expect_nothing(kq);
}

TEST_CASE("EV_ONESHOT: one delivery, then the event is gone") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_ONESHOT);
  trigger(kq, 1);
  CHECK((expect_event(kq, 1, EVFILT_USER).flags & EV_ONESHOT));  // fflags differ: FreeBSD copies them raw
  expect_nothing(kq);
  CHECK(apply(kq, {change(1, EVFILT_USER, 0, NOTE_TRIGGER)}) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("triggering an event that does not exist fails with ENOENT") {
  auto kq = new_queue();
  CHECK(apply(kq, {change(1, EVFILT_USER, 0, NOTE_TRIGGER)}) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("user events, timers and descriptors with the same ident are independent") {
  auto kq = new_queue();
  auto pair = socket_pair();
  const auto ident = static_cast<uintptr_t>(pair.a.get());
  add(kq, ident, EVFILT_USER, EV_CLEAR);
  add(kq, ident, EVFILT_WRITE);
  add_timer(kq, ident, 60'000);
  trigger(kq, ident);
  const auto events = wait(kq);
  INFO("returned:" << describe_all(events));
  REQUIRE(events.size() == 2);
  REQUIRE(apply(kq, {change(ident, EVFILT_USER, EV_DELETE)}) == 0);
  REQUIRE(apply(kq, {change(ident, EVFILT_TIMER, EV_DELETE)}) == 0);
  expect_event(kq, ident, EVFILT_WRITE);
}

TEST_CASE("NOTE_TRIGGER fires in any change to an existing event: bare, with EV_ENABLE, with EV_ADD") {
  // filt_usertouch applies NOTE_TRIGGER on every change that is not a delete, and kqueue_register then
  // evaluates the knote: EV_ENABLE|NOTE_TRIGGER is the usual way to re-arm and fire in one change.
  const std::pair<const char*, unsigned short> variants[] = {
      {"NOTE_TRIGGER", 0}, {"EV_ENABLE|NOTE_TRIGGER", EV_ENABLE}, {"EV_ADD|NOTE_TRIGGER", EV_ADD}};
  for (const auto& [name, flags] : variants) {
    for (const unsigned short mode : {0, EV_CLEAR, EV_DISPATCH, EV_DISPATCH | EV_CLEAR}) {
      INFO(name << " on an enabled event registered with flags " << mode);
      auto kq = new_queue();
      add(kq, 1, EVFILT_USER, mode);
      expect_nothing(kq, 0);
      REQUIRE(apply(kq, {change(1, EVFILT_USER, flags, NOTE_TRIGGER | NOTE_FFCOPY | 0x5, 9)}) == 0);
      const auto event = expect_event(kq, 1, EVFILT_USER);
      CHECK(event.fflags == 0x5);
      CHECK(event.data == 9);
    }
  }
}

TEST_CASE("EV_ENABLE|NOTE_TRIGGER re-arms and fires a dispatched event, every time") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_DISPATCH);
  for (int round = 0; round < 3; ++round) {
    INFO("round " << round);
    REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ENABLE, NOTE_TRIGGER)}) == 0);
    expect_event(kq, 1, EVFILT_USER);
    expect_nothing(kq, 0);  // dispatched: disabled until the next EV_ENABLE
  }
}

TEST_CASE("EV_DISABLE|NOTE_TRIGGER records the trigger; EV_ENABLE delivers it") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_DISABLE, NOTE_TRIGGER)}) == 0);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ENABLE)}) == 0);
  expect_event(kq, 1, EVFILT_USER);
}

TEST_CASE("EV_ADD|NOTE_TRIGGER on a disabled event records the trigger without enabling it") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER, EV_CLEAR | EV_DISABLE);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ADD, NOTE_TRIGGER)}) == 0);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ENABLE)}) == 0);
  expect_event(kq, 1, EVFILT_USER);
}

}  // TEST_SUITE
