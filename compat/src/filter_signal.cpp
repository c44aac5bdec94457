// EVFILT_SIGNAL: how many times a signal was delivered since the last retrieval.
//
// kqueue(2): the filter "returns when the given signal is delivered to the process. This coexists with the
// signal() and sigaction() facilities, and has a lower precedence. The filter will record all attempts to deliver
// a signal to a process, even if the signal has been marked as SIG_IGN, except for the SIGCHLD signal, which, if
// ignored, won't be recorded by the filter. [...] data returns the number of times the signal has occurred since
// the last call to kevent(). This filter automatically sets the EV_CLEAR flag internally."
//
// Counting is process-wide (signal_hooks.cpp): one counter per signal, bumped by the layer's handler. A knote
// remembers the count it last reported (or found at registration, so only later deliveries count); `data` is the
// difference. Each queue with signal knotes has the handler's wake-up eventfd in its epoll set, and a signalfd
// of the signals it watches, never read: it becomes readable when one of them is left pending, blocked in every
// thread, which the handler never sees (signals_record_pending counts it then, as FreeBSD counts at send time).
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "kqueue.hpp"
#include "signal_hooks.hpp"

namespace kqcompat {
namespace {

struct SignalKnote : FilterState {
  uint64_t seen = 0;      // the delivery count already reported
  uint64_t reported = 0;  // the count the last evaluation returned: EV_CLEAR makes it `seen`
};

// The wake-up eventfd in this queue's epoll set (not owned: it is the process's), the queue's signalfd of the
// signals it watches (owned; -1 while it watches none), and the knotes to look at when either fires.
struct SignalQueue : FilterState {
  InternalSource source;
  InternalSource pending;
  uint64_t watched = 0;  // signal_bit of each signal a knote here watches: the signalfd's mask
  std::vector<Knote*> knotes;
  ~SignalQueue() override {
    if (pending.fd_ >= 0) ::close(pending.fd_);
  }
};

SignalKnote& state_of(Knote& knote) { return static_cast<SignalKnote&>(*source_knote(knote).state_); }
int signal_of(const Knote& knote) { return static_cast<int>(knote.ident_); }
SignalQueue& queue_state(Kqueue& queue) { return static_cast<SignalQueue&>(*queue.filter_state(EVFILT_SIGNAL)); }

void wake_ready(Kqueue& queue, InternalSource&) {
  for (Knote* knote : queue_state(queue).knotes) {
    if (!knote->disabled_ && signal_deliveries(signal_of(*knote)) != state_of(*knote).seen) queue.queue_pending(*knote);
  }
}

// A watched signal was left pending (the signalfd became readable): count it, then look as for a delivery.
void pending_ready(Kqueue& queue, InternalSource& source) {
  signals_record_pending(queue_state(queue).watched);
  wake_ready(queue, source);
}

// Makes the signalfd's mask the signals this queue's knotes watch; made on first need and kept (edge-triggered:
// a signal that stays pending reports once per new signal sent, never in a loop). Returns 0 or an errno.
int sync_pending_watch(Kqueue& queue, SignalQueue& signals) {
  uint64_t watched = 0;
  sigset_t mask;
  sigemptyset(&mask);
  for (const Knote* knote : signals.knotes) {
    watched |= signal_bit(signal_of(*knote));
    sigaddset(&mask, signal_of(*knote));
  }
  if (signals.pending.fd_ >= 0) {
    if (signalfd(signals.pending.fd_, &mask, 0) < 0) return errno;
  } else if (watched) {
    const int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return errno;
    epoll_event event{};
    event.events = EPOLLIN | EPOLLET;
    event.data.u64 = epoll_data_for(signals.pending);
    if (epoll_ctl(queue.epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
      const int error = errno;
      ::close(fd);
      return error;
    }
    signals.pending.fd_ = fd;
  }
  signals.watched = watched;
  return 0;
}

// Puts the process's wake-up eventfd in the queue's epoll set: edge-triggered, so each write is one wake-up for
// every queue and nobody needs to drain it. Asked on every attach (EEXIST is fine): the program may have closed
// the descriptor and the layer made a new one since.
int register_wake(Kqueue& queue, SignalQueue& signals) {
  const int fd = signal_wake_fd();
  epoll_event event{};
  event.events = EPOLLIN | EPOLLET;
  event.data.u64 = epoll_data_for(signals.source);
  if (epoll_ctl(queue.epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0 && errno != EEXIST) return errno;
  signals.source.fd_ = fd;
  return 0;
}

// FreeBSD has signals 1 to 128 (_SIG_MAXSIG) and checks no number: a knote for any other (0, 1000) is made and
// never fires. It holds no state here. Numbers that are signals on FreeBSD but not on Linux stay EINVAL (README,
// deviation 15): silence would hide that they cannot be watched.
constexpr uintptr_t kFreeBsdMaxSignal = 128;
bool never_fires(const Knote& knote) { return knote.ident_ == 0 || knote.ident_ > kFreeBsdMaxSignal; }
bool fires(Knote& knote) { return source_knote(knote).state_ != nullptr; }

int attach(Kqueue& queue, Knote& knote) {
  if (never_fires(knote)) {
    knote.flags_ |= EV_CLEAR;
    return 0;
  }
  if (const int error = signal_check(knote.ident_)) return error;
  auto& slot = queue.filter_state(EVFILT_SIGNAL);
  if (!slot) {
    auto fresh = std::make_unique<SignalQueue>();
    fresh->source.on_ready = wake_ready;
    fresh->pending.on_ready = pending_ready;
    slot = std::move(fresh);
  }
  if (const int error = signal_watch(signal_of(knote))) return error;
  if (const int error = register_wake(queue, queue_state(queue))) {
    signal_unwatch(signal_of(knote));
    return error;
  }
  auto state = std::make_unique<SignalKnote>();
  state->seen = signal_deliveries(signal_of(knote));  // taken after the handler is in place: nothing is missed
  source_knote(knote).state_ = std::move(state);
  knote.flags_ |= EV_CLEAR;
  queue_state(queue).knotes.push_back(&knote);
  // Without its signalfd the knote still counts every delivery; only a signal left pending would go unseen.
  sync_pending_watch(queue, queue_state(queue));
  return 0;
}

int modify(Kqueue&, Knote& knote, const struct kevent& change) {
  knote.sfflags_ = change.fflags;  // FreeBSD replaces them on every change; the filter does not use them
  knote.sdata_ = change.data;
  return 0;
}

// The core looks again on enable: deliveries made while disabled surface then, as on BSD.
bool enable_changed(Kqueue&, Knote&) { return false; }

void detach(Kqueue& queue, Knote& knote) {
  if (!fires(knote)) return;
  SignalQueue& signals = queue_state(queue);
  std::erase(signals.knotes, &knote);
  signal_unwatch(signal_of(knote));
  if (!queue.closed_.load()) sync_pending_watch(queue, signals);
  if (signals.knotes.empty() && signals.source.fd_ >= 0) {
    if (!queue.closed_.load()) epoll_ctl(queue.epoll_fd_, EPOLL_CTL_DEL, signals.source.fd_, nullptr);
    signals.source.fd_ = -1;
  }
}

bool evaluate(Kqueue&, Knote& knote, uint32_t, struct kevent& out) {
  if (!fires(knote)) return false;
  SignalKnote& state = state_of(knote);
  const uint64_t now = signal_deliveries(signal_of(knote));
  if (now == state.seen) return false;
  state.reported = now;
  out.data = static_cast<int64_t>(now - state.seen);
  return true;
}

void clear(Knote& knote) {
  if (fires(knote)) state_of(knote).seen = state_of(knote).reported;
}

bool source_is_level(const Knote&) { return false; }

}  // namespace

const FilterOps signal_filter = {
    .attach = attach,
    .modify = modify,
    .enable_changed = enable_changed,
    .detach = detach,
    .evaluate = evaluate,
    .clear = clear,
    .source_is_level = source_is_level,
};

}  // namespace kqcompat
