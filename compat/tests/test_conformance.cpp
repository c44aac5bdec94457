// kqueue(2) read sentence by sentence, with kern_event.c where the page is silent: what the other files leave out
// about kevent() itself (the changelist, the flags, ext[], modifying an event). The filters' part is in
// test_conformance_filters.cpp. Names only FreeBSD has (EV_KEEPUDATA, EV_FORCEONESHOT, kqueuex) are skipped where
// they are missing; each skip says why.
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>

#include "support.hpp"

using namespace kqtest;

namespace {

// FreeBSD's names for 0x100 and 0x200; macOS gives those bits other meanings (EV_UDATA_SPECIFIC, EV_VANISHED).
#if defined(EV_KEEPUDATA) && defined(EV_FORCEONESHOT)
constexpr bool kHaveFreeBsdFlags = true;
constexpr unsigned short kKeepUdata = EV_KEEPUDATA;
constexpr unsigned short kForceOneshot = EV_FORCEONESHOT;
#else
constexpr bool kHaveFreeBsdFlags = false;
constexpr unsigned short kKeepUdata = 0;
constexpr unsigned short kForceOneshot = 0;
#endif

// kqueuex() and kqueue1() (FreeBSD 14+, which defines KQUEUE_CLOEXEC with them); stand-ins elsewhere.
#if defined(KQUEUE_CLOEXEC)
constexpr bool kHaveKqueuex = true;
int queue_x(unsigned flags) { return kqueuex(flags); }
int queue_1(int flags) { return kqueue1(flags); }
constexpr unsigned kQueueCloexec = KQUEUE_CLOEXEC;
#else
constexpr bool kHaveKqueuex = false;
int queue_x(unsigned) { return -1; }
int queue_1(int) { return -1; }
constexpr unsigned kQueueCloexec = 0;
#endif

bool close_on_exec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

}  // namespace

TEST_SUITE("conformance") {

// --- EV_KEEPUDATA, EV_FORCEONESHOT (FreeBSD) ---------------------------------------------------------------

TEST_CASE("EV_KEEPUDATA: a change leaves the event's udata as it was (FreeBSD)" * doctest::skip(!kHaveFreeBsdFlags)) {
  auto kq = new_queue();
  int first, second;
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, &first)}) == 0);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, kKeepUdata, NOTE_TRIGGER, 0, &second)}) == 0);
  CHECK(expect_event(kq, 1, EVFILT_USER).udata == &first);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ENABLE | kKeepUdata, NOTE_TRIGGER, 0, nullptr)}) == 0);
  CHECK(expect_event(kq, 1, EVFILT_USER).udata == &first);
}

TEST_CASE("EV_KEEPUDATA with EV_ADD is EINVAL, for a new event and an existing one (FreeBSD)" *
          doctest::skip(!kHaveFreeBsdFlags)) {
  auto kq = new_queue();
  CHECK(apply(kq, {change(1, EVFILT_USER, EV_ADD | kKeepUdata)}) == -1);
  CHECK(errno == EINVAL);
  CHECK(apply(kq, {change(1, EVFILT_USER, 0, NOTE_TRIGGER)}) == -1);  // nothing was made
  CHECK(errno == ENOENT);
  REQUIRE(apply(kq, {change(1, EVFILT_USER, EV_ADD)}) == 0);
  CHECK(apply(kq, {change(1, EVFILT_USER, EV_ADD | kKeepUdata)}) == -1);
  CHECK(errno == EINVAL);
}

TEST_CASE("EV_FORCEONESHOT: an existing event fires once at once, condition or not, then is gone (FreeBSD)" *
          doctest::skip(!kHaveFreeBsdFlags)) {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  int marker;
  add(kq, pipe.a, EVFILT_READ, 0, &marker);
  expect_nothing(kq);  // the pipe is empty
  REQUIRE(apply(kq, {change(pipe.a, EVFILT_READ, kForceOneshot, 0, 0, &marker)}) == 0);
  const struct kevent event = expect_event(kq, pipe.a, EVFILT_READ);
  CHECK((event.flags & EV_ONESHOT));
  CHECK(event.udata == &marker);
  write_bytes(pipe.b, 3);
  expect_nothing(kq);
  CHECK(apply(kq, {change(pipe.a, EVFILT_READ, EV_DELETE)}) == -1);
  CHECK(errno == ENOENT);
  read_bytes(pipe.a, 3);
  add(kq, pipe.a, EVFILT_READ);  // a new event: neither one-shot nor forced
  expect_nothing(kq);
  write_bytes(pipe.b, 1);
  CHECK(!(expect_event(kq, pipe.a, EVFILT_READ).flags & EV_ONESHOT));
}

TEST_CASE("EV_FORCEONESHOT of an event never added is ENOENT (FreeBSD)" * doctest::skip(!kHaveFreeBsdFlags)) {
  auto kq = new_queue();
  CHECK(apply(kq, {change(7, EVFILT_USER, kForceOneshot)}) == -1);
  CHECK(errno == ENOENT);
}

// --- making a queue ---------------------------------------------------------------------------------------

TEST_CASE("kqueue() is not close-on-exec; kqueuex(KQUEUE_CLOEXEC) and kqueue1(O_CLOEXEC) are (FreeBSD 14)" *
          doctest::skip(!kHaveKqueuex)) {
  Fd plain(kqueue()), with_x(queue_x(kQueueCloexec)), with_1(queue_1(O_CLOEXEC)), without_1(queue_1(0));
  REQUIRE(plain.get() >= 0);
  REQUIRE(with_x.get() >= 0);
  REQUIRE(with_1.get() >= 0);
  REQUIRE(without_1.get() >= 0);
  CHECK(!close_on_exec(plain));
  CHECK(close_on_exec(with_x));
  CHECK(close_on_exec(with_1));
  CHECK(!close_on_exec(without_1));
  struct kevent event;
  const timespec poll_only{0, 0};
  CHECK(kevent(with_1, nullptr, 0, &event, 1, &poll_only) == 0);  // a queue like any other
}

TEST_CASE("kqueuex() with an unknown flag is EINVAL (FreeBSD 14)" * doctest::skip(!kHaveKqueuex)) {
  CHECK(queue_x(0x8000) == -1);
  CHECK(errno == EINVAL);
}

// --- the changelist: errors, receipts, bad arguments -------------------------------------------------------

TEST_CASE("an EV_RECEIPT change with no room left ends the call: 0, later changes not applied (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS goes on with the next change
  auto kq = new_queue();
  std::vector<struct kevent> changes = {
      change(1, EVFILT_USER, EV_ADD | EV_RECEIPT),
      change(2, EVFILT_USER, EV_ADD),
  };
  CHECK(kevent(kq, changes.data(), 2, nullptr, 0, nullptr) == 0);
  CHECK(apply(kq, {change(1, EVFILT_USER, 0, NOTE_TRIGGER)}) == 0);
  CHECK(apply(kq, {change(2, EVFILT_USER, 0, NOTE_TRIGGER)}) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("EV_DELETE, EV_ENABLE or EV_DISABLE on a descriptor that is not open is EBADF (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS answers ENOENT
  auto kq = new_queue();
  int closed = -1;
  {
    auto pipe = pipe_pair();
    closed = pipe.a.get();
  }
  for (unsigned short flags : {EV_DELETE, EV_ENABLE, EV_DISABLE}) {
    CAPTURE(flags);
    CHECK(apply(kq, {change(closed, EVFILT_READ, flags)}) == -1);
    CHECK(errno == EBADF);
  }
}

TEST_CASE("EV_ADD of a descriptor number beyond any open file is EBADF") {
  auto kq = new_queue();
  const uintptr_t huge = uintptr_t{1} << 40;
  CHECK(apply(kq, {change(huge, EVFILT_READ, EV_ADD)}) == -1);
  CHECK(errno == EBADF);
  CHECK(apply(kq, {change(1 << 30, EVFILT_WRITE, EV_ADD)}) == -1);
  CHECK(errno == EBADF);
}

TEST_CASE("an error entry echoes ident, filter and udata; data holds the errno") {
  auto kq = new_queue();
  int marker;
  std::vector<struct kevent> changes = {change(42, EVFILT_USER, EV_DISABLE, 0, 0, &marker)};
  struct kevent out[2];
  REQUIRE(kevent(kq, changes.data(), 1, out, 2, nullptr) == 1);
  CHECK(out[0].ident == 42);
  CHECK(out[0].filter == EVFILT_USER);
  CHECK(out[0].udata == &marker);
  CHECK((out[0].flags & EV_ERROR));
  CHECK(out[0].data == ENOENT);
}

TEST_CASE("a NULL changelist with changes to read is EFAULT, and nothing is applied") {
  auto kq = new_queue();
  struct kevent out[1];
  CHECK(kevent(kq, nullptr, 1, out, 1, nullptr) == -1);
  CHECK(errno == EFAULT);
}

TEST_CASE("a NULL eventlist with an event to return is EFAULT") {
  auto kq = new_queue();
  add(kq, 1, EVFILT_USER);
  trigger(kq, 1);
  const timespec poll_only{0, 0};
  CHECK(kevent(kq, nullptr, 0, nullptr, 1, &poll_only) == -1);
  CHECK(errno == EFAULT);
}

TEST_CASE("a negative number of changes or events is EINVAL (FreeBSD)" * doctest::skip(kMacOS)) {
  auto kq = new_queue();
  struct kevent event = change(1, EVFILT_USER, EV_ADD);
  const timespec poll_only{0, 0};
  CHECK(kevent(kq, &event, -1, nullptr, 0, &poll_only) == -1);
  CHECK(errno == EINVAL);
  CHECK(kevent(kq, nullptr, 0, &event, -1, &poll_only) == -1);
  CHECK(errno == EINVAL);
}

TEST_CASE("kqueue() with no descriptor left fails with EMFILE") {
  Child child([] {
    auto kq_check = kqueue();  // the layer's per-process resources exist before the limit is lowered
    if (kq_check < 0) return 2;
    close(kq_check);
    int lowest = dup(0);
    if (lowest < 0) return 3;
    close(lowest);
    const rlimit limit{static_cast<rlim_t>(lowest), static_cast<rlim_t>(lowest)};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return 4;
    const int kq = kqueue();
    if (kq >= 0) return 5;
    return errno == EMFILE ? 0 : 6;
  });
  CHECK(child.wait_exit_code() == 0);
}

// --- ext[]: FreeBSD's four extension words (macOS's struct kevent has none) -------------------------------------

#if !defined(__APPLE__)
TEST_CASE("ext[] given at EV_ADD comes back in every event, for a descriptor, a timer and a user event") {
  auto kq = new_queue();
  auto pipe = pipe_pair();
  std::vector<struct kevent> changes = {change(pipe.a, EVFILT_READ, EV_ADD | EV_CLEAR),
                                        change(1, EVFILT_TIMER, EV_ADD, 0, 1),
                                        change(2, EVFILT_USER, EV_ADD | EV_CLEAR)};
  for (size_t i = 0; i < changes.size(); ++i) {
    changes[i].ext[2] = 0x1000 + i;
    changes[i].ext[3] = 0x2000 + i;
  }
  REQUIRE(kqtest::apply(kq, changes) == 0);
  write_bytes(pipe.b, 1);
  trigger(kq, 2);
  std::vector<struct kevent> seen(changes.size());
  for (int call = 0; call < 50 && std::any_of(seen.begin(), seen.end(), [](auto& e) { return e.filter == 0; });
       ++call) {
    for (const struct kevent& event : wait(kq, 20)) {
      for (size_t i = 0; i < changes.size(); ++i) {
        if (event.filter == changes[i].filter) seen[i] = event;
      }
    }
  }
  for (size_t i = 0; i < changes.size(); ++i) {
    CAPTURE(i);
    CHECK(seen[i].ext[2] == 0x1000 + i);
    CHECK(seen[i].ext[3] == 0x2000 + i);
  }
  // A knote added afterwards at the same place starts with its own (zero) ext.
  REQUIRE(apply(kq, {change(pipe.a, EVFILT_READ, EV_DELETE), change(pipe.a, EVFILT_READ, EV_ADD)}) == 0);
  const struct kevent fresh = expect_event(kq, pipe.a, EVFILT_READ);
  CHECK(fresh.ext[2] == 0);
  CHECK(fresh.ext[3] == 0);
}
#endif

// --- modifying an event: what a change without EV_ADD leaves alone --------------------------------------------

TEST_CASE("EV_ENABLE with new data does not restart a timer: only EV_ADD re-arms it (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS re-arms on enable
  auto kq = new_queue();
  add_timer(kq, 1, 300, 0, EV_ONESHOT);
  REQUIRE(apply(kq, {change(1, EVFILT_TIMER, EV_ENABLE, 0, 1)}) == 0);
  expect_nothing(kq, 100);
  CHECK(expect_event(kq, 1, EVFILT_TIMER, 2000).data == 1);
}

TEST_CASE("re-adding a vnode event replaces its notes, it does not add to them") {
  TempFile file;
  auto kq = new_queue();
  REQUIRE(apply(kq, {change(file.writer, EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_WRITE)}) == 0);
  REQUIRE(apply(kq, {change(file.writer, EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_ATTRIB)}) == 0);
  write_bytes(file.writer, 3);
  expect_nothing(kq);
  REQUIRE(fchmod(file.writer, 0640) == 0);
  CHECK((expect_event(kq, file.writer, EVFILT_VNODE).fflags & NOTE_ATTRIB));
}

TEST_CASE("EV_DISPATCH with EV_CLEAR: EV_ENABLE asks the filter again, as every change does (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS's touch differs
  auto kq = new_queue();
  auto pair = socket_pair();
  add(kq, pair.a, EVFILT_READ, EV_DISPATCH | EV_CLEAR);
  write_bytes(pair.b, 2);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 2);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_ENABLE)}) == 0);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 2);  // kqueue_register calls f_event: the bytes are there
  read_bytes(pair.a, 2);
  REQUIRE(apply(kq, {change(pair.a, EVFILT_READ, EV_ENABLE)}) == 0);
  expect_nothing(kq);
  write_bytes(pair.b, 1);
  CHECK(expect_event(kq, pair.a, EVFILT_READ).data == 1);
  write_bytes(pair.b, 1);
  expect_nothing(kq);  // disabled again by the delivery
}

TEST_CASE("EV_ADD|EV_DISABLE on an existing event disables it; EV_ADD alone does not enable it (FreeBSD)" *
          doctest::skip(kMacOS)) {  // macOS: EV_ADD enables
  auto kq = new_queue();
  auto pipe = pipe_pair();
  add(kq, pipe.a, EVFILT_READ);
  write_bytes(pipe.b, 1);
  REQUIRE(apply(kq, {change(pipe.a, EVFILT_READ, EV_ADD | EV_DISABLE)}) == 0);
  expect_nothing(kq);
  REQUIRE(apply(kq, {change(pipe.a, EVFILT_READ, EV_ADD)}) == 0);
  expect_nothing(kq);  // kqueue_register changes the enabled state only for EV_ENABLE or EV_DISABLE
  REQUIRE(apply(kq, {change(pipe.a, EVFILT_READ, EV_ENABLE)}) == 0);
  CHECK(expect_event(kq, pipe.a, EVFILT_READ).data == 1);
}

}  // TEST_SUITE
