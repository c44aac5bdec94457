// EVFILT_TIMER's clock for one queue: one timerfd, and the queue's armed timers in a binary heap ordered by
// their next expiry.
//
// FreeBSD gives each timer knote a callout (kernel memory, capped system-wide by kern.kq_calloutmax). A timerfd
// per knote would cost a descriptor per timer (RLIMIT_NOFILE) and three system calls per add; instead a queue
// keeps its timers in user space and its one timerfd armed for the earliest deadline. Adding, deleting and
// re-arming a timer are O(log n) with no system call, except when the earliest deadline moves earlier; an
// expiry costs one read() for however many timers are due. All of it runs under the queue's lock.
//
// Clock: CLOCK_MONOTONIC, which like FreeBSD's sbinuptime() does not jump with the wall clock. NOTE_ABSTIME
// deadlines are converted to it once, when the timer is set, as FreeBSD's filt_timervalidate does; a later
// change of the wall clock does not move them.
#pragma once

#include <cstdint>
#include <vector>

#include "kqueue.hpp"

namespace kqcompat {

class TimerQueue {
 public:
  // The queue's timer source, made on first use (a timerfd in the queue's epoll set). Null, with `*error` set
  // to an errno, when it cannot be made.
  static TimerQueue* of(Kqueue& queue, int* error);
  ~TimerQueue();
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // CLOCK_MONOTONIC now, in nanoseconds.
  static int64_t now_ns();

  // Arms `knote` to expire at `first_ns` and then every `period_ns` (0: once), moving it if it was armed.
  void arm(SourceKnote& knote, int64_t first_ns, int64_t period_ns);

  // Takes `knote` out of the heap if it is armed. The timerfd may still fire once for it; that wake-up finds
  // nothing due and re-arms for the next deadline (cheaper than a system call per delete).
  void disarm(SourceKnote& knote);

  // Counts the expirations of `knote` up to `now_ns` into `knote.count_` (drift-free: the k-th expiry is at
  // first + k * period, however late it is noticed) and moves or disarms it. True when it expired.
  bool catch_up(SourceKnote& knote, int64_t now_ns);

 private:
  struct Entry {
    int64_t at;
    SourceKnote* knote;
  };

  explicit TimerQueue(int fd);
  // The timerfd fired: count the expirations of every due timer and put the enabled ones on the pending list.
  static void on_ready(Kqueue& queue, InternalSource& source);
  void expire(Kqueue& queue);
  // Points the timerfd at the earliest deadline when it is not already set at or before it.
  void rearm();

  void place(size_t slot, Entry entry);
  void sift_up(size_t slot);
  void sift_down(size_t slot);
  void remove(size_t slot);

  InternalSource source_;
  std::vector<Entry> heap_;
  int64_t armed_ns_ = 0;  // the deadline the timerfd is set to; 0 when it is not set (or has fired)
};

}  // namespace kqcompat
