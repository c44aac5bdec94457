// EVFILT_TIMER: a timer per knote, identified by a number of the program's choice, kept by the queue's one
// timer source (timer_queue.hpp).
//
// FreeBSD's contract (kqueue(2), kern_event.c's filt_timer*): `data` is the period, in milliseconds unless
// NOTE_SECONDS, NOTE_MSECONDS, NOTE_USECONDS or NOTE_NSECONDS says otherwise; NOTE_ABSTIME makes it a deadline
// since the epoch, fired once. Periodic unless EV_ONESHOT; EV_CLEAR is implied (not with NOTE_ABSTIME, which then
// stays active until deleted). The returned `data` is the number of expirations since the last delivery.
// Negative data, unknown fflags or two units give EINVAL; a periodic 0 means 1 unit; a one-shot 0 fires at once.
// EV_ADD on an existing timer throws away undelivered expirations and restarts it with the new values; any
// other change leaves it running. Expirations keep counting while the knote is disabled.
#include <cerrno>
#include <climits>
#include <ctime>

#include "timer_queue.hpp"

namespace kqcompat {
namespace {

constexpr unsigned kUnits = NOTE_SECONDS | NOTE_MSECONDS | NOTE_USECONDS | NOTE_NSECONDS;

// Nanoseconds in one unit of `fflags`, or 0 when more than one unit is named (timer2sbintime's -1).
int64_t unit_ns(unsigned fflags) {
  switch (fflags & kUnits) {
    case NOTE_SECONDS:
      return 1'000'000'000;
    case 0:
    case NOTE_MSECONDS:
      return 1'000'000;
    case NOTE_USECONDS:
      return 1'000;
    case NOTE_NSECONDS:
      return 1;
    default:
      return 0;
  }
}

// `count` units in nanoseconds; FreeBSD clamps what does not fit rather than failing.
int64_t to_ns(int64_t count, int64_t unit) { return count > INT64_MAX / unit ? INT64_MAX : count * unit; }

struct Schedule {
  int64_t first_ns;   // CLOCK_MONOTONIC
  int64_t period_ns;  // 0: fires once
};

// filt_timervalidate and filt_timerstart: the schedule `fflags` and `data` ask for, or EINVAL.
int plan(unsigned fflags, int64_t data, bool oneshot, Schedule* out) {
  const int64_t unit = unit_ns(fflags);
  if (data < 0 || (fflags & ~(kUnits | NOTE_ABSTIME)) || unit == 0) return EINVAL;
  const int64_t now = TimerQueue::now_ns();
  if (fflags & NOTE_ABSTIME) {
    // Wall-clock deadline, converted once to the monotonic clock; one already past fires at once.
    timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    const int64_t wall_ns = wall.tv_sec * 1'000'000'000LL + wall.tv_nsec;
    const int64_t left = to_ns(data, unit) - wall_ns;
    *out = {left > 0 ? now + left : now, 0};
    return 0;
  }
  if (data == 0 && !oneshot) data = 1;
  const int64_t period = to_ns(data, unit);
  *out = {now > INT64_MAX - period ? INT64_MAX : now + period, oneshot ? 0 : period};
  return 0;
}

// Starts the knote on `schedule`. A one-time deadline already reached counts at once, without a round trip
// through the timerfd, so a zero one-shot timer is there for the very next scan.
void start(Kqueue& queue, Knote& knote, const Schedule& schedule) {
  if (schedule.period_ns == 0 && schedule.first_ns <= TimerQueue::now_ns()) {
    source_knote(knote).count_ = 1;
    if (!knote.disabled_) queue.queue_pending(knote);
    return;
  }
  queue.timers_->arm(source_knote(knote), schedule.first_ns, schedule.period_ns);
}

int attach(Kqueue& queue, Knote& knote) {
  Schedule schedule;
  if (const int error = plan(knote.sfflags_, knote.sdata_, knote.flags_ & EV_ONESHOT, &schedule)) return error;
  int error = 0;
  if (!TimerQueue::of(queue, &error)) return error;
  if (!(knote.sfflags_ & NOTE_ABSTIME)) knote.flags_ |= EV_CLEAR;  // implied, and returned in flags
  start(queue, knote, schedule);
  return 0;
}

int modify(Kqueue& queue, Knote& knote, const struct kevent& change) {
  if (!(change.flags & EV_ADD)) return 0;  // EV_ENABLE, EV_DISABLE, udata: the timer runs on
  Schedule schedule;
  if (const int error = plan(change.fflags, change.data, knote.flags_ & EV_ONESHOT, &schedule)) return error;
  // filt_timertouch: "if a process is re-adding this timer with new parameters, it is no longer interested in
  // what may have happened under the old parameters".
  queue.unqueue_pending(knote);
  source_knote(knote).count_ = 0;
  knote.sfflags_ = change.fflags;
  knote.sdata_ = change.data;
  queue.timers_->disarm(source_knote(knote));
  start(queue, knote, schedule);
  return 0;
}

bool enable_changed(Kqueue&, Knote&) {
  return false;  // nothing to start or stop; the core looks at what accumulated meanwhile
}

void detach(Kqueue& queue, Knote& knote) { queue.timers_->disarm(source_knote(knote)); }

bool evaluate(Kqueue& queue, Knote& knote, uint32_t, struct kevent& out) {
  queue.timers_->catch_up(source_knote(knote), TimerQueue::now_ns());  // count expirations not yet seen by the timerfd
  if (source_knote(knote).count_ == 0) return false;
  out.data = source_knote(knote).count_;
  return true;
}

void clear(Knote& knote) { source_knote(knote).count_ = 0; }

// The timer source reports each expiry once; a NOTE_ABSTIME timer without EV_CLEAR stays active because the
// core re-queues it after every delivery.
bool source_is_level(const Knote&) { return false; }

}  // namespace

const FilterOps timer_filter = {
    .attach = attach,
    .modify = modify,
    .enable_changed = enable_changed,
    .detach = detach,
    .evaluate = evaluate,
    .clear = clear,
    .source_is_level = source_is_level,
};

}  // namespace kqcompat
