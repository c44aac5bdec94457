// kqueue() and kevent(): the core that every filter plugs into.
//
// kevent() works as FreeBSD's kern_event.c does: resolve the queue, apply the changelist strictly in order
// (each failure or receipt becomes an EV_ERROR entry while there is room), return those entries without
// scanning if there are any, and otherwise scan: first the pending list (activations found in user space,
// re-evaluated now), then epoll, looping until something fires or the timeout runs out.
#include "kqueue.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <ctime>
#include <new>

#include "fault.hpp"
#include "fd_table.hpp"
#include "fd_filter.hpp"
#include "file_watch.hpp"
#include "readable_queries.hpp"
#include "timer_queue.hpp"
#include "signal_hooks.hpp"
#include "trace.hpp"
#include "tsan_annotations.hpp"

namespace kqcompat {
namespace {

constexpr unsigned short kCreationFlags = EV_ONESHOT | EV_CLEAR | EV_DISPATCH | EV_RECEIPT;

// The epoll bits that concern a descriptor's read knote and its write knote (WatchedFd::read(), write()).
constexpr uint32_t kReadInterest = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
constexpr uint32_t kWriteInterest = EPOLLOUT | EPOLLHUP | EPOLLERR;

KnoteKey knote_key(short filter, uintptr_t ident) { return {ident, filter}; }

bool descriptor_is_open(uintptr_t ident) { return ident <= INT_MAX && fcntl(static_cast<int>(ident), F_GETFD) != -1; }

// A descriptor knote outside WatchedFd (EVFILT_VNODE) whose number was closed since it was made.
bool closed_since_created(const Knote& knote) {
  return !knote.hangs_on_record() && is_descriptor_filter(knote.filter_) &&
         source_knote(knote).fd_generation_ != fd_generation(static_cast<int>(knote.ident_));
}

// All queues ever created and not yet freed. A queue closed by the program is freed here, outside the close
// wrapper (which must not free), once no kevent() call is inside it.
// Never destroyed: other exit-time code (and LeakSanitizer's check) may still look at the queues.
std::mutex& all_queues_lock = *new std::mutex;
std::vector<Kqueue*>& all_queues = *new std::vector<Kqueue*>;

void free_closed_queues() {
  std::lock_guard guard(all_queues_lock);
  std::erase_if(all_queues, [](Kqueue* queue) {
    if (!queue->closed_.load() || queue->callers_.load() != 0) return false;
    delete queue;
    return true;
  });
}

// A program that closes its last queue and exits should not leave it to look like a leak.
__attribute__((destructor)) void free_closed_queues_at_exit() { free_closed_queues(); }

void wake_source_ready(Kqueue&, InternalSource&) {
  // Nothing to do: the pending list it stands for is read by every scan.
}

struct Deadline {
  bool forever = false;
  bool poll_only = false;
  timespec at{};

  // FreeBSD's kqueue_scan waits forever for a timeout beyond INT32_MAX seconds (68 years: a limit such as
  // Clock::duration::max() converted to a timespec), so no deadline computed here can overflow.
  explicit Deadline(const timespec* timeout) {
    if (!timeout || timeout->tv_sec > INT32_MAX) {
      forever = true;
      return;
    }
    poll_only = timeout->tv_sec == 0 && timeout->tv_nsec == 0;
    clock_gettime(CLOCK_MONOTONIC, &at);
    at.tv_sec += timeout->tv_sec;
    at.tv_nsec += timeout->tv_nsec;
    if (at.tv_nsec >= 1'000'000'000) {
      at.tv_sec += 1;
      at.tv_nsec -= 1'000'000'000;
    }
  }

  // Time left, or null for "forever"; {0,0} once expired.
  const timespec* remaining(timespec& left) const {
    if (forever) return nullptr;
    timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = (at.tv_sec - now.tv_sec) * 1'000'000'000LL + (at.tv_nsec - now.tv_nsec);
    ns = std::max<int64_t>(ns, 0);
    left = {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    return &left;
  }
};

int wait_for_events(int epoll_fd, epoll_event* events, int room, const timespec* timeout) {
  static bool have_pwait2 = true;
  if (have_pwait2) {
    const int n = epoll_pwait2(epoll_fd, events, room, timeout, nullptr);
    if (n >= 0 || errno != ENOSYS) return n;
    have_pwait2 = false;
  }
  // Kernels before 5.11: milliseconds, rounded up so a short timeout never becomes a busy poll.
  int ms = -1;
  if (timeout) ms = static_cast<int>(std::min<int64_t>(timeout->tv_sec * 1000LL + (timeout->tv_nsec + 999'999) / 1'000'000, INT_MAX));
  return epoll_wait(epoll_fd, events, room, ms);
}

bool valid_timespec(const timespec* timeout) {
  return !timeout || (timeout->tv_sec >= 0 && timeout->tv_nsec >= 0 && timeout->tv_nsec < 1'000'000'000);
}

// One kevent() call on one queue, with the queue locked except while blocked in epoll.
class Call {
 public:
  Call(Kqueue& queue, struct kevent* out, int room) : queue_(queue), out_(out), room_(room) {}

  // Applies one change; returns 0 or the errno it failed with.
  int apply(const struct kevent& change);

  int scan(const timespec* timeout, std::unique_lock<QueueLock>& lock);

 private:
  Knote* find(short filter, uintptr_t ident);
  int create(const struct kevent& change, const FilterOps& ops);
  int modify(Knote& knote, const struct kevent& change);
  void force_oneshot(Knote& knote);
  void remember_ext(const Knote& knote, const struct kevent& change);
  void copy_ext(const Knote& knote, struct kevent& out) const;
  void destroy(Knote& knote, bool settle_now);
  void settle(WatchedFd& record);
  void set_enabled(Knote& knote, bool enabled);

  int take_pending();
  void take_batch(const epoll_event* events, int n);
  void ask_readable(const epoll_event* events, int n, WatchedFd** records, int* readable);
  void dispatch(WatchedFd& record, uint32_t events, int64_t readable);
  template <short kFilter>
  void dispatch_fd_knote(Knote* knote, uint32_t events, bool* stale_interest);
  // kFilter: the caller knows the knote is a read or write knote (epoll reported its record), and which; 0: any.
  template <short kFilter = 0>
  bool deliver(Knote& knote, const FilterOps& ops, uint32_t hint);

  static constexpr int kBatch = 64;  // epoll events per wait
  static_assert(kBatch <= ReadableQueries::kCapacity, "an event's index names its slot in a ring query");
  Kqueue& queue_;
  struct kevent* out_;
  int room_;
  int count_ = 0;
  // This call's number among the queue's scans: a knote is returned at most once per call. Each concurrent call
  // has its own, so a knote one thread took is not mistaken for "already returned" by another thread's call.
  uint32_t serial_ = 0;
  uint32_t closes_before_wait_ = 0;  // closes_so_far() before the latest epoll wait
};

Knote* Call::find(short filter, uintptr_t ident) {
  if (is_descriptor_filter(filter)) {
    if (ident > INT_MAX) return nullptr;
    // Purges the record (and its knotes) if the number was closed.
    WatchedFd* record = queue_.find_fd(static_cast<int>(ident));
    if (filter == EVFILT_READ) return record ? record->read() : nullptr;
    if (filter == EVFILT_WRITE) return record ? record->write() : nullptr;
  }
  auto it = queue_.knotes_.find(knote_key(filter, ident));
  if (it == queue_.knotes_.end()) return nullptr;
  if (closed_since_created(*it->second)) {
    queue_.drop_knote(*it->second);  // BSD removed it at close(); a reused number starts with no knote
    return nullptr;
  }
  return it->second.get();
}

int Call::apply(const struct kevent& change) {
  const unsigned short flags = change.flags;
  if ((flags & EV_ENABLE) && (flags & EV_DISABLE)) return EINVAL;
  if ((flags & EV_KEEPUDATA) && (flags & EV_ADD)) return EINVAL;
  const FilterOps* ops = filter_ops(change.filter);
  if (!ops) return EINVAL;

  Knote* knote = find(change.filter, change.ident);
  if (!knote) {
    if (flags & EV_ADD) return create(change, *ops);  // EV_ADD|EV_DELETE creates a missing knote (FreeBSD)
    if (is_descriptor_filter(change.filter) && !descriptor_is_open(change.ident)) return EBADF;
    return ENOENT;
  }
  if (flags & EV_DELETE) {
    destroy(*knote, true);
    return 0;
  }
  const int error = modify(*knote, change);
  if (!error && (flags & EV_FORCEONESHOT)) force_oneshot(*knote);
  return error;
}

void Call::copy_ext(const Knote& knote, struct kevent& out) const {
  const auto it = queue_.ext_.find(&knote);
  if (it != queue_.ext_.end()) std::copy(it->second.begin(), it->second.end(), out.ext);
}

// EV_FORCEONESHOT (FreeBSD; its AIO uses it) on an existing knote: one-shot from now on, and active whether or not
// its condition holds, as kqueue_register's KNOTE_ACTIVATE.
void Call::force_oneshot(Knote& knote) {
  knote.flags_ |= EV_ONESHOT;
  knote.forced_ = true;
  if (!knote.disabled_) queue_.queue_pending(knote);
}

void fill_new_knote(Knote& knote, const struct kevent& change) {
  knote.ident_ = change.ident;
  knote.filter_ = change.filter;
  knote.flags_ = change.flags & kCreationFlags;
  knote.sfflags_ = change.fflags;
  knote.sdata_ = change.data;
  knote.udata_ = change.udata;
  knote.disabled_ = change.flags & EV_DISABLE;
}

int Call::create(const struct kevent& change, const FilterOps& ops) {
  if (is_descriptor_filter(change.filter)) {
    if (change.ident > INT_MAX) return EBADF;
    fd_facts_create(static_cast<int>(change.ident));  // so that close() of the number bumps its generation
  }
  if (filter_hangs_on_record(change.filter)) {
    // Made inside the descriptor's record, which the attach brings to epoll.
    WatchedFd& record = queue_.fd_record(static_cast<int>(change.ident));
    Knote& knote = queue_.make_fd_knote(record, change.filter);
    fill_new_knote(knote, change);
    if (const int error = ops.attach(queue_, knote)) {
      queue_.free_fd_knote(record, knote);
      queue_.drop_fd_record_if_empty(record);
      return error;
    }
    remember_ext(knote, change);
    return 0;
  }
  auto knote = std::make_unique<SourceKnote>();
  fill_new_knote(*knote, change);
  if (is_descriptor_filter(change.filter)) knote->fd_generation_ = fd_generation(static_cast<int>(change.ident));
  if (const int error = ops.attach(queue_, *knote)) return error;
  remember_ext(*knote, change);
  queue_.knotes_.emplace(knote_key(change.filter, change.ident), std::move(knote));
  return 0;
}

void Call::remember_ext(const Knote& knote, const struct kevent& change) {
  if (change.ext[0] | change.ext[1] | change.ext[2] | change.ext[3])
    queue_.ext_[&knote] = {change.ext[0], change.ext[1], change.ext[2], change.ext[3]};
}

int Call::modify(Knote& knote, const struct kevent& change) {
  void* const old_udata = knote.udata_;
  if (!(change.flags & EV_KEEPUDATA)) knote.udata_ = change.udata;
  if (const int error = knote.ops().modify(queue_, knote, change)) {
    knote.udata_ = old_udata;
    return error;
  }
  if (change.flags & EV_DISABLE) {
    if (!knote.disabled_) set_enabled(knote, false);
  } else if ((change.flags & EV_ENABLE) && knote.disabled_) {
    set_enabled(knote, true);
  } else if (!knote.disabled_ && !knote.ops().source_is_level(knote)) {
    // BSD re-evaluates the filter after any change (kqueue_register calls f_event), EV_ENABLE of an enabled
    // knote included: a NOTE_TRIGGER in it fires. An edge-triggered source would not tell us again.
    queue_.queue_pending(knote);
  }
  return 0;
}

void Call::set_enabled(Knote& knote, bool enabled) {
  knote.disabled_ = !enabled;
  if (!enabled) queue_.unqueue_pending(knote);
  const bool source_reports = knote.ops().enable_changed(queue_, knote);
  // A condition that already holds (data left unread, state accumulated while disabled) fires on enable.
  if (enabled && (!source_reports || knote.forced_)) queue_.queue_pending(knote);
}

void Call::destroy(Knote& knote, bool settle_now) {
  if (!knote.hangs_on_record()) {
    queue_.drop_knote(knote);
    return;
  }
  queue_.unqueue_pending(knote);
  knote.ops().detach(queue_, knote);
  WatchedFd& record = record_of(knote);
  queue_.free_fd_knote(record, knote);
  if (settle_now) settle(record);
}

// After an explicit change: epoll's entry matches the knotes exactly, and a record with no knotes goes.
void Call::settle(WatchedFd& record) {
  epoll_sync(queue_, record);
  queue_.drop_fd_record_if_empty(record);
}

// `ops` is the knote's filter's (knote.ops()), passed by callers that know it already. EVFILT_READ's common case
// is evaluated inline (fd_filter.hpp).
template <short kFilter>
inline bool Call::deliver(Knote& knote, const FilterOps& ops, uint32_t hint) {
  constexpr bool kOnRecord = kFilter != 0;
  if (knote.disabled_ || knote.delivered_in_scan_ == serial_) return false;
  struct kevent& out = out_[count_];
  EV_SET(&out, knote.ident_, knote.filter_, knote.flags_, 0, 0, knote.udata_);
  if (!queue_.ext_.empty()) [[unlikely]] copy_ext(knote, out);
  // EV_FORCEONESHOT: returned as it stands, without asking the filter (which may drop a knote), as BSD copies out a
  // one-shot knote.
  if (!knote.forced_) [[likely]] {
    const bool fires = kFilter == EVFILT_READ ? read_evaluate(queue_, knote, hint, out)
                                              : ops.evaluate(queue_, knote, hint, out);
    if (!fires) return false;
  }
  ++count_;
  knote.delivered_in_scan_ = serial_;
  if (!(knote.flags_ & (EV_ONESHOT | EV_DISPATCH | EV_CLEAR))) {
    // Level-triggered: BSD re-queues the knote at the tail, to look again at the next call, unless the source
    // itself reports again (a level epoll entry).
    const bool on_record = kOnRecord || knote.hangs_on_record();
    if (!(on_record ? fd_source_is_level(knote) : ops.source_is_level(knote))) queue_.queue_pending(knote);
    return true;
  }
  if (knote.flags_ & EV_ONESHOT) {
    destroy(knote, false);  // epoll's entry is trimmed lazily, if it ever reports again
    return true;
  }
  if (knote.flags_ & EV_DISPATCH) knote.disabled_ = true;  // likewise lazy: no epoll_ctl per event
  if ((knote.flags_ & EV_CLEAR) && ops.clear) ops.clear(knote);
  return true;
}

// Re-evaluates the activations queued before this call started, in order, while there is room.
int Call::take_pending() {
  const int before = count_;
  size_t budget = 0;
  for (Knote* knote = queue_.pending_head_; knote; knote = knote->pending_next_) ++budget;
  for (; budget > 0 && queue_.pending_head_ && count_ < room_; --budget) {
    Knote& knote = *queue_.pending_head_;
    queue_.unqueue_pending(knote);
    if (knote.delivered_in_scan_ == serial_) {
      queue_.queue_pending(knote);  // returned already in this call; keep it for the next one
      continue;
    }
    WatchedFd* record = knote.hangs_on_record() ? &record_of(knote) : nullptr;
    if (record && record->generation_ != fd_generation(record->fd())) {
      queue_.purge_stale(*record);  // closed since: BSD removed it at close()
      continue;
    }
    if (closed_since_created(knote)) {
      queue_.drop_knote(knote);
      continue;
    }
    deliver(knote, knote.ops(), 0);
    if (record && record->lost_) queue_.purge_stale(*record);
  }
  return count_ - before;
}

// One epoll batch, each event dispatched in order. When the batch brings many readable sockets, their byte counts
// (BSD's `data`) are asked for first, in one io_uring submission instead of a FIONREAD each
// (readable_queries.hpp), and each event's record is decoded once for both.
void Call::take_batch(const epoll_event* events, int n) {
  WatchedFd* records[kBatch];
  int readable[kBatch];  // per event: its socket's byte count if asked already, else negative
  const bool decoded = n >= kWorthBatching;  // a smaller batch cannot be worth a submission: decode as we go
  if (decoded) ask_readable(events, n, records, readable);
  for (int i = 0; i < n; ++i) {
    WatchedFd* record = decoded ? records[i] : record_from_epoll_data(events[i].data.u64);
    if (record) {
      const int known = decoded ? readable[i] : -1;
      if (known == -EOPNOTSUPP) record->ring_refused_ = true;  // a Unix-domain socket, say
      dispatch(*record, events[i].events, known);
    } else if (InternalSource* source = source_from_epoll_data(events[i].data.u64)) {
      source->on_ready(queue_, *source);
    }  // else a notification for a record dropped since
  }
}

// Decodes each event's record into `records` and, when enough of them are readable sockets whose read knote will
// look, asks for their byte counts in one submission: readable[i] is event i's count, or negative (not asked, or
// the ring could not answer: FIONREAD then).
void Call::ask_readable(const epoll_event* events, int n, WatchedFd** records, int* readable) {
  int fds[kBatch];
  int asked_for[kBatch];  // the event index of each of fds
  int asking = 0;
  for (int i = 0; i < n; ++i) {
    WatchedFd* record = record_from_epoll_data(events[i].data.u64);
    records[i] = record;
    readable[i] = -1;
    if (!record || !(events[i].events & EPOLLIN) || record->ring_refused_) continue;
    if (record->kind_ != WatchedFd::Kind::stream && record->kind_ != WatchedFd::Kind::datagram) continue;
    const Knote* read = record->read();
    if (!read || read->disabled_ || read->delivered_in_scan_ == serial_) continue;  // (a level entry, again)
    fds[asking] = record->fd();
    asked_for[asking++] = i;
  }
  if (asking >= kWorthBatching) ask_readable_counts(fds, asked_for, asking, readable);
}

void Call::dispatch(WatchedFd& record, uint32_t events, int64_t readable) {
  // Closed since it was registered? Only a close since the wait began can say yes (see closes_so_far()).
  if (closes_so_far() != closes_before_wait_ && record.generation_ != fd_generation(record.fd())) {
    queue_.purge_stale(record);
    return;
  }
  bool stale_interest = false;
  if (events & kReadInterest) {
    queue_.readable_known_ = readable;
    dispatch_fd_knote<EVFILT_READ>(record.read(), events, &stale_interest);
    queue_.readable_known_ = -1;
  }
  if (events & kWriteInterest) dispatch_fd_knote<EVFILT_WRITE>(record.write(), events, &stale_interest);
  if (queue_.counted_) [[unlikely]] queue_.counted_ = nullptr;  // this report's TCP counts (fd_filter.hpp)
  if (record.lost_) {
    queue_.purge_stale(record);  // the safety net: closed by a raw system call the layer could not see
    return;
  }
  if (stale_interest && (record.registered_ & EPOLLET)) {
    // A trim made by whichever thread scans, not by the program: if the number was closed meanwhile the close
    // wrapper has emptied the entry already, and the record goes instead (purge_stale names no number to epoll).
    if (record.generation_ != fd_generation(record.fd())) {
      queue_.purge_stale(record);
      return;
    }
    {
      const IgnoreDescriptorRace benign;  // a close may be starting in another thread: see tsan_annotations.hpp
      epoll_sync(queue_, record);
    }
    queue_.drop_fd_record_if_empty(record);  // the rest of settle(), watched by ThreadSanitizer as ever
  }
}

template <short kFilter>
void Call::dispatch_fd_knote(Knote* knote, uint32_t events, bool* stale_interest) {
  if (!knote || knote->disabled_) {
    *stale_interest = true;  // left in epoll by a one-shot or dispatch delivery
  } else if (count_ == room_) {
    queue_.queue_pending(*knote);  // no room this time; an edge would otherwise be lost
  } else {
    deliver<kFilter>(*knote, kFilter == EVFILT_READ ? read_filter : write_filter, events);
  }
}

int Call::scan(const timespec* timeout, std::unique_lock<QueueLock>& lock) {
  const Deadline deadline(timeout);
  if (++queue_.scan_serial_ == 0) queue_.restart_scan_serials();
  serial_ = queue_.scan_serial_;
  epoll_event events[kBatch];
  for (;;) {
    if (queue_.pending_head_) take_pending();
    if (count_ == room_) break;
    timespec left;
    const timespec zero{0, 0};
    const timespec* wait = (count_ > 0 || deadline.poll_only) ? &zero : deadline.remaining(left);
    const int room = std::min(room_ - count_, kBatch);
    int n;
    const SignalMarks marks_before = signal_marks();
    closes_before_wait_ = closes_so_far();
    if (wait && wait->tv_sec == 0 && wait->tv_nsec == 0) {
      n = epoll_wait(queue_.epoll_fd_, events, room, 0);  // no need to let go of the lock for a poll
    } else {
      queue_.update_wake();
      ++queue_.waiters_;
      lock.unlock();
      n = wait_for_events(queue_.epoll_fd_, events, room, wait);
      const int saved_errno = errno;
      lock.lock();
      --queue_.waiters_;
      errno = saved_errno;
    }
    if (n < 0) {
      // epoll fails with EINTR for any handler, the layer's own too (a watched signal the program ignores or
      // leaves at its default), and after a stop and continue even with no handler at all. Only a handler of
      // the program's that ran may end the wait, as on BSD: else wait on (signal_hooks.hpp, signal_marks).
      if (errno == EINTR && signal_marks().passed == marks_before.passed &&
          (signal_marks().absorbed != marks_before.absorbed || !program_catches_unwatched_signal()))
        continue;
      if (count_ > 0) break;
      queue_.update_wake();
      return -1;  // EINTR included: a signal the program catches ends the wait, as on BSD
    }
    const int before = count_;
    take_batch(events, n);
    if (queue_.pending_head_ && count_ < room_) take_pending();
    // A full batch may not be all that epoll holds ready: fill the event list (BSD returns up to nevents), with
    // more batches polled without waiting, as long as each brings something new (a level entry comes back).
    if (n == room && count_ > before && count_ < room_) continue;
    if (count_ > 0 || deadline.poll_only) break;
    if (n == 0 && wait) break;  // the timeout ran out (epoll returns 0 for nothing else)
    if (wait && wait->tv_sec == 0 && wait->tv_nsec == 0) break;  // it had run out already
  }
  queue_.update_wake();
  return count_;
}

Kqueue* resolve_queue(int kq) {
  Kqueue* queue = queue_of(kq);
  if (!queue) errno = fcntl(kq, F_GETFD) == -1 ? EBADF : EINVAL;  // FreeBSD: EINVAL for a non-kqueue
  return queue;
}

}  // namespace

Kqueue::Kqueue(int epoll_fd) : epoll_fd_(epoll_fd) {
  wake_.fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  wake_.on_ready = wake_source_ready;
}

Kqueue::~Kqueue() {
  // Filters release what their knotes hold (a pidfd, a signal's handler, an inotify watch) before the queue's
  // own state goes. The regular-file inotify instance goes first: closing it drops its watches at once, and
  // a fork child must not remove watches from the instance it shares with its parent.
  if (files_) files_->close_instance();
  fds_.for_each_live([this](WatchedFd& record) {
    if (record.registered_) {
      if (FdFacts* facts = fd_facts_find(record.fd())) facts->watchers.fetch_sub(1);
    }
    for (Knote* knote : {record.read(), record.write()})
      if (knote) knote->ops().detach(*this, *knote);
  });
  for (auto& entry : knotes_) entry.second->ops().detach(*this, *entry.second);
  knotes_.clear();
  for (auto& state : filter_states_) state.reset();
  if (wake_.fd_ >= 0) ::close(wake_.fd_);
}

// After 2^32 scans the serial starts again at 1: no knote may still carry an old serial that the new ones reach.
void Kqueue::restart_scan_serials() {
  scan_serial_ = 1;
  fds_.for_each_live([](WatchedFd& record) {
    for (Knote* knote : {record.read(), record.write()})
      if (knote) knote->delivered_in_scan_ = 0;
  });
  for (auto& entry : knotes_) entry.second->delivered_in_scan_ = 0;
}

void Kqueue::drop_knote(Knote& knote) {
  unqueue_pending(knote);
  knote.ops().detach(*this, knote);
  forget_ext(knote);
  knotes_.erase(knote_key(knote.filter_, knote.ident_));
}

void Kqueue::queue_pending(Knote& knote) {
  if (knote.pending_) return;
  knote.pending_ = true;
  knote.pending_prev_ = pending_tail_;
  knote.pending_next_ = nullptr;
  (pending_tail_ ? pending_tail_->pending_next_ : pending_head_) = &knote;
  pending_tail_ = &knote;
}

int Kqueue::add_source(InternalSource& source) {
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = epoll_data_for(source);
  return epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, source.fd_, &event) == 0 ? 0 : errno;
}

int64_t Kqueue::collect_pending() {
  // Each ready descriptor's knotes are queued for a fresh look (evaluate with hint 0) instead of being
  // delivered: the next scan of this queue re-evaluates them, as BSD's scan re-evaluates its active queue.
  epoll_event events[64];
  int n;
  do {
    n = epoll_wait(epoll_fd_, events, 64, 0);
    for (int i = 0; i < n; ++i) {
      if (InternalSource* source = source_from_epoll_data(events[i].data.u64)) {
        source->on_ready(*this, *source);
        continue;
      }
      WatchedFd* record = record_from_epoll_data(events[i].data.u64);
      if (!record) continue;
      if (record->generation_ != fd_generation(record->fd())) {
        purge_stale(*record);
        continue;
      }
      Knote* read = record->read();
      Knote* write = record->write();
      if (read && !read->disabled_ && (events[i].events & kReadInterest)) queue_pending(*read);
      if (write && !write->disabled_ && (events[i].events & kWriteInterest)) queue_pending(*write);
    }
  } while (n == 64);
  int64_t count = 0;
  for (const Knote* knote = pending_head_; knote; knote = knote->pending_next_) ++count;
  update_wake();
  return count;
}

void Kqueue::unqueue_pending(Knote& knote) {
  if (!knote.pending_) return;
  (knote.pending_prev_ ? knote.pending_prev_->pending_next_ : pending_head_) = knote.pending_next_;
  (knote.pending_next_ ? knote.pending_next_->pending_prev_ : pending_tail_) = knote.pending_prev_;
  knote.pending_ = false;
  knote.pending_prev_ = knote.pending_next_ = nullptr;
}

void Kqueue::signal_wake() {
  if (pending_head_) {
    const uint64_t one = 1;
    if (write(wake_.fd_, &one, sizeof one) == sizeof one) wake_signalled_ = true;
  } else {
    uint64_t value;
    if (read(wake_.fd_, &value, sizeof value) == sizeof value || errno == EAGAIN) wake_signalled_ = false;
  }
}

WatchedFd* Kqueue::find_fd(int fd) {
  WatchedFd* record = fds_.slot(fd);
  if (!record || !record->live_) return nullptr;
  if (record->generation_ != fd_generation(fd)) {
    purge_stale(*record);
    return nullptr;
  }
  return record;
}

WatchedFd& FdTable::make_slot(int fd) {
  const auto block = static_cast<size_t>(fd) >> kBlockBits;
  if (block >= blocks_.size()) blocks_.resize(std::max(block + 1, blocks_.size() * 2));
  if (!blocks_[block]) blocks_[block] = std::make_unique<WatchedFd[]>(kBlockSize);
  return blocks_[block][fd & (kBlockSize - 1)];
}

WatchedFd& Kqueue::fd_record(int fd) {
  if (WatchedFd* record = find_fd(fd)) return *record;
  WatchedFd& record = fds_.make_slot(fd);
  // The serial survives in the slot: it tells this record from the slot's earlier ones in epoll's data.
  const uint16_t serial = static_cast<uint16_t>(record.serial_ + 1);
  record.~WatchedFd();
  new (&record) WatchedFd();
  record.serial_ = serial;
  record.read_knote_.ident_ = static_cast<uintptr_t>(fd);
  record.generation_ = fd_generation(fd);
  record.live_ = true;
  return record;
}

Knote& Kqueue::make_fd_knote(WatchedFd& record, short filter) {
  if (filter == EVFILT_READ) {
    record.reset_read_knote();
    return record.read_knote_;
  }
  record.write_knote_ = std::make_unique<WriteKnote>();
  record.write_knote_->record_ = &record;
  return *record.write_knote_;
}

void Kqueue::free_fd_knote(WatchedFd& record, Knote& knote) {
  forget_ext(knote);
  if (&knote == &record.read_knote_) {
    record.reset_read_knote();
    record.read_hung_ = false;
  } else {
    record.write_knote_.reset();
    record.write_hung_ = false;
  }
}

void Kqueue::drop_fd_record_if_empty(WatchedFd& record) {
  if (!record.has_knotes() && !record.registered_) drop_fd_record(record);
}

void Kqueue::drop_fd_record(WatchedFd& record) {
  if (record.write_knote_) forget_ext(*record.write_knote_);
  record.write_knote_.reset();
  record.live_ = false;
}

// The number was closed (and maybe reused) since the record was made: BSD removed its knotes at close(), so
// they vanish now, queued activations included. Detach lets go of what else the filter holds (a regular file's
// inotify watch).
//
// Epoll: a close the wrapper saw (the generation moved) took the number out of every epoll set while it still
// named the old file. The number is not the record's any more: another thread may have been given it by accept()
// or open() this instant, so the layer must not name it to epoll again (it would act on the new file, and
// ThreadSanitizer rightly calls it a race). Only the count of epoll sets holding the number is the record's to
// settle. After a raw close the layer could not see (lost_, the generation unchanged), a delete is all it can
// try, as before.
void Kqueue::purge_stale(WatchedFd& record) {
  for (Knote* knote : {record.read(), record.write()}) {
    if (!knote) continue;
    unqueue_pending(*knote);
    knote->ops().detach(*this, *knote);
    free_fd_knote(record, *knote);
  }
  if (record.registered_) {
    const bool closed_by_wrapper = record.generation_ != fd_generation(record.fd());
    if (!closed_by_wrapper) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, record.fd(), nullptr);
    if (FdFacts* facts = fd_facts_find(record.fd())) facts->watchers.fetch_sub(1);
  }
  drop_fd_record(record);
}

// Around fork(): see kqueue.hpp. Lock order everywhere: all_queues_lock, then queue locks, then the signal
// registry (signal_hooks.cpp), which filters take under a queue lock.
void queues_fork_prepare() {
  all_queues_lock.lock();
  for (Kqueue* queue : all_queues) queue->lock_.lock();
}

void queues_fork_parent() {
  for (Kqueue* queue : all_queues) queue->lock_.unlock();
  all_queues_lock.unlock();
}

void queues_fork_child() {
  // First make every parent queue unreachable, so that no close() below (or by the program) removes anything from
  // an epoll set the child shares with the parent.
  for (Kqueue* queue : all_queues) {
    if (queue->closed_.load()) continue;
    take_queue_of(queue->epoll_fd_);
    live_queue_remove(queue->epoll_fd_);
  }
  for (Kqueue* queue : all_queues) {
    if (!queue->closed_.exchange(true)) ::close(queue->epoll_fd_);  // the child's copy; the parent keeps its own
    queue->epoll_fd_ = -1;
    queue->lock_.unlock();
    delete queue;  // filters see closed_ and only close the child's copies of their descriptors
  }
  all_queues.clear();
  all_queues_lock.unlock();
}

}  // namespace kqcompat

using namespace kqcompat;

extern "C" int kqueuex(unsigned int flags) {
  if (flags & ~KQUEUE_CLOEXEC) {
    errno = EINVAL;
    return -1;
  }
  free_closed_queues();
  const int epoll_fd = epoll_create1((flags & KQUEUE_CLOEXEC) ? EPOLL_CLOEXEC : 0);
  if (epoll_fd < 0) return -1;
  auto queue = std::make_unique<Kqueue>(epoll_fd);
  FdFacts* facts = fd_facts_create(epoll_fd);
  if (queue->wake_.fd_ < 0 || !facts || queue->add_source(queue->wake_) != 0 || !live_queue_add(epoll_fd)) {
    const int error = queue->wake_.fd_ < 0 ? errno : EMFILE;
    queue.reset();
    ::close(epoll_fd);
    errno = error;
    return -1;
  }
  {
    std::lock_guard guard(all_queues_lock);
    all_queues.push_back(queue.get());
  }
  readable_queries_open();  // the process's one ring, with its first queue: see readable_queries.hpp
  set_queue_of(epoll_fd, queue.release());
  return epoll_fd;
}

extern "C" int kqueue(void) { return kqueuex(0); }

extern "C" int kqueue1(int flags) {
  if (flags & ~O_CLOEXEC) {
    errno = EINVAL;
    return -1;
  }
  return kqueuex((flags & O_CLOEXEC) ? KQUEUE_CLOEXEC : 0);
}

extern "C" int kevent(int kq, const struct kevent* changelist, int nchanges, struct kevent* eventlist, int nevents,
                      const struct timespec* timeout) {
  Kqueue* queue = resolve_queue(kq);
  if (!queue) return -1;
  trace_call(kq, nchanges, nevents, timeout);
  queue->callers_.fetch_add(1);
  struct Leave {
    Kqueue* queue;
    ~Leave() { queue->callers_.fetch_sub(1); }
  } leave{queue};
  if (nchanges < 0 || nevents < 0) {
    errno = EINVAL;
    return -1;
  }
  if ((nchanges > 0 && !changelist) || (nevents > 0 && !eventlist)) {
    errno = EFAULT;  // FreeBSD's copyin/copyout of a NULL list; checked before any change is applied
    return -1;
  }

  std::unique_lock lock(queue->lock_);
  Call call(*queue, eventlist, nevents);
  int written = 0;
  for (int i = 0; i < nchanges; ++i) {
    struct kevent change = changelist[i];  // a copy: the same array may serve as changelist and eventlist
    change.flags &= static_cast<unsigned short>(~EV_SYSFLAGS);
    trace_change(kq, change);
    if (change.filter == 0) continue;  // FreeBSD skips these silently
    int error = injected_fault(change);  // KQLAB_FAULT, for tests: see fault.hpp
    if (!error) error = call.apply(change);
    if (!error && !(change.flags & EV_RECEIPT)) continue;
    if (written == nevents) {
      queue->update_wake();
      if (!error) return trace_result(kq, eventlist, written);  // FreeBSD stops here as well
      errno = error;
      return trace_failure(kq, error);
    }
    struct kevent& entry = eventlist[written++];
    entry = change;
    entry.flags = EV_ERROR;
    entry.data = error;
    if (!error) entry.fflags = 0;
  }
  if (written > 0 || nevents == 0) {
    queue->update_wake();
    return trace_result(kq, eventlist, written);  // receipts and errors are returned without a scan
  }
  if (!valid_timespec(timeout)) {
    queue->update_wake();
    errno = EINVAL;
    return trace_failure(kq, EINVAL);
  }
  const int count = call.scan(timeout, lock);
  if (count < 0) return trace_failure(kq, errno);
  return trace_result(kq, eventlist, count);
}
