#include "timer_queue.hpp"

#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <ctime>

namespace kqcompat {
namespace {

constexpr int64_t kNsPerSecond = 1'000'000'000;

int64_t saturating_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

}  // namespace

TimerQueue* TimerQueue::of(Kqueue& queue, int* error) {
  if (queue.timers_) return queue.timers_.get();
  const int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) {
    *error = errno;
    return nullptr;
  }
  std::unique_ptr<TimerQueue> timers(new TimerQueue(fd));
  if (const int failed = queue.add_source(timers->source_)) {
    *error = failed;
    return nullptr;  // the destructor closes the timerfd
  }
  queue.timers_ = std::move(timers);
  return queue.timers_.get();
}

TimerQueue::TimerQueue(int fd) {
  source_.fd_ = fd;
  source_.on_ready = on_ready;
}

// The knotes in the heap are owned by the queue and already gone (or going) when this runs: not touched here.
TimerQueue::~TimerQueue() { ::close(source_.fd_); }

int64_t TimerQueue::now_ns() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * kNsPerSecond + now.tv_nsec;
}

void TimerQueue::arm(SourceKnote& knote, int64_t first_ns, int64_t period_ns) {
  knote.timer_next_ns_ = first_ns;
  knote.timer_period_ns_ = period_ns;
  if (knote.timer_slot_ == SourceKnote::kNoTimerSlot) {
    heap_.push_back({first_ns, &knote});
    knote.timer_slot_ = heap_.size() - 1;
    sift_up(knote.timer_slot_);
  } else {
    heap_[knote.timer_slot_].at = first_ns;
    sift_up(knote.timer_slot_);
    sift_down(knote.timer_slot_);
  }
  rearm();
}

void TimerQueue::disarm(SourceKnote& knote) {
  if (knote.timer_slot_ != SourceKnote::kNoTimerSlot) remove(knote.timer_slot_);
}

bool TimerQueue::catch_up(SourceKnote& knote, int64_t now_ns) {
  if (knote.timer_slot_ == SourceKnote::kNoTimerSlot || knote.timer_next_ns_ > now_ns) return false;
  const int64_t period = knote.timer_period_ns_;
  if (period == 0) {
    knote.count_ += 1;
    remove(knote.timer_slot_);
    return true;
  }
  // Overruns accumulate into `data` (kqueue(2)); the schedule stays on its grid, so no drift builds up.
  const int64_t expirations = (now_ns - knote.timer_next_ns_) / period + 1;
  knote.count_ = saturating_add(knote.count_, expirations);
  const int64_t advance = expirations > INT64_MAX / period ? INT64_MAX : expirations * period;
  knote.timer_next_ns_ = saturating_add(knote.timer_next_ns_, advance);
  heap_[knote.timer_slot_].at = knote.timer_next_ns_;
  sift_down(knote.timer_slot_);
  return true;
}

void TimerQueue::on_ready(Kqueue& queue, InternalSource&) { queue.timers_->expire(queue); }

void TimerQueue::expire(Kqueue& queue) {
  uint64_t fired;
  // EAGAIN: another thread re-armed the timerfd (which resets it) between epoll's report and now, so the
  // deadline it is set to has not passed yet and stays armed.
  if (read(source_.fd_, &fired, sizeof fired) == sizeof fired) armed_ns_ = 0;
  const int64_t now = now_ns();
  while (!heap_.empty() && heap_.front().at <= now) {
    SourceKnote& knote = *heap_.front().knote;
    catch_up(knote, now);
    // FreeBSD keeps counting while the knote is disabled; EV_ENABLE queues it then (Call::set_enabled).
    if (!knote.disabled_) queue.queue_pending(knote);
  }
  rearm();
}

void TimerQueue::rearm() {
  if (heap_.empty()) return;  // a timerfd left set fires once for nothing, then stays quiet
  const int64_t earliest = heap_.front().at;
  if (armed_ns_ != 0 && armed_ns_ <= earliest) return;
  itimerspec setting{};
  const int64_t at = earliest > 0 ? earliest : 1;  // an all-zero it_value would disarm it
  setting.it_value.tv_sec = static_cast<time_t>(at / kNsPerSecond);
  setting.it_value.tv_nsec = static_cast<long>(at % kNsPerSecond);
  if (timerfd_settime(source_.fd_, TFD_TIMER_ABSTIME, &setting, nullptr) == 0) armed_ns_ = at;
}

void TimerQueue::place(size_t slot, Entry entry) {
  heap_[slot] = entry;
  entry.knote->timer_slot_ = slot;
}

void TimerQueue::sift_up(size_t slot) {
  const Entry entry = heap_[slot];
  while (slot > 0) {
    const size_t parent = (slot - 1) / 2;
    if (heap_[parent].at <= entry.at) break;
    place(slot, heap_[parent]);
    slot = parent;
  }
  place(slot, entry);
}

void TimerQueue::sift_down(size_t slot) {
  const Entry entry = heap_[slot];
  const size_t size = heap_.size();
  for (;;) {
    size_t child = 2 * slot + 1;
    if (child >= size) break;
    if (child + 1 < size && heap_[child + 1].at < heap_[child].at) ++child;
    if (entry.at <= heap_[child].at) break;
    place(slot, heap_[child]);
    slot = child;
  }
  place(slot, entry);
}

void TimerQueue::remove(size_t slot) {
  heap_[slot].knote->timer_slot_ = SourceKnote::kNoTimerSlot;
  const Entry last = heap_.back();
  heap_.pop_back();
  if (slot == heap_.size()) return;
  place(slot, last);
  sift_up(slot);
  sift_down(slot);
}

}  // namespace kqcompat
