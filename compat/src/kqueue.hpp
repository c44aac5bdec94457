// The queue and its knotes: what one kqueue descriptor stands for.
//
// A kqueue is an epoll instance (its descriptor is the kqueue descriptor, so it is closable, pollable and
// nestable for free) plus the bookkeeping epoll lacks: knotes keyed by (ident, filter), the per-descriptor
// record that read and write knotes share (epoll takes a descriptor once), and a pending list of activations
// found in user space (BSD's active queue) whose conditions are re-evaluated at scan time.
#pragma once

#include <sys/event.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "filter.hpp"

namespace kqcompat {

struct WatchedFd;
class TimerQueue;
class FileWatch;

// What a filter keeps beyond the fields below, for one knote (a pidfd, an inotify watch) or for one queue (an
// inotify instance, the signal wake-up source). Owned by the knote or the queue and destroyed with it, after the
// filter's detach.
struct FilterState {
  virtual ~FilterState() = default;
};

struct Knote {
  // What the program registered. `flags_` keeps only the behaviour chosen at creation (EV_ONESHOT, EV_CLEAR,
  // EV_DISPATCH, EV_RECEIPT): BSD never changes it afterwards.
  uintptr_t ident_ = 0;
  short filter_ = 0;
  unsigned short flags_ = 0;
  unsigned int sfflags_ = 0;
  int64_t sdata_ = 0;
  void* udata_ = nullptr;
  const FilterOps* ops_ = nullptr;

  bool disabled_ = false;
  uint64_t delivered_in_scan_ = 0;  // a knote is returned at most once per kevent call

  // Intrusive links of the queue's pending list; `pending_` says whether the knote is on it.
  bool pending_ = false;
  Knote* pending_prev_ = nullptr;
  Knote* pending_next_ = nullptr;

  // Filter state. Read/write knotes point at their descriptor's shared record; counting filters accumulate.
  WatchedFd* fd_ = nullptr;
  int64_t count_ = 0;
  unsigned int fired_fflags_ = 0;

  // EVFILT_TIMER: the next expiry on CLOCK_MONOTONIC (ns), the period (0: fires once), and the knote's slot in
  // the queue's timer heap (kNoTimerSlot while it is not armed). See timer_queue.hpp.
  static constexpr size_t kNoTimerSlot = static_cast<size_t>(-1);
  int64_t timer_next_ns_ = 0;
  int64_t timer_period_ns_ = 0;
  size_t timer_slot_ = kNoTimerSlot;
  // A knote keyed by a descriptor number but not hung on a WatchedFd (EVFILT_VNODE) remembers the number's
  // fd_table generation at creation: a different one means the number was closed since, and the core drops the
  // knote as BSD did at close().
  uint32_t fd_generation_ = 0;
  std::unique_ptr<FilterState> state_;
};

// "epoll accepts a descriptor once": the one epoll entry that a descriptor's read and write knotes share. Its
// mask is the union of what its enabled knotes want; it is edge-triggered as soon as any of its knotes is not
// level-triggered (EV_CLEAR, EV_DISPATCH, EV_ONESHOT), and level knotes on an edge entry are then re-queued in
// user space after each delivery, as BSD re-queues them.
struct WatchedFd {
  // `file`: a regular file, which epoll refuses (EPERM): never in the epoll set, woken by the queue's inotify
  // watch instead (file_watch.hpp). `queue`: another kqueue's descriptor (an epoll descriptor, so nestable).
  enum class Kind : uint8_t { stream, datagram, listener, pipe, file, queue, other };

  int fd_ = -1;
  uint32_t generation_ = 0;  // fd_table generation at registration: a different one means closed since
  uint32_t serial_ = 0;      // tells this record from an earlier one for the same number in epoll's data
  Kind kind_ = Kind::other;
  bool never_connected_ = false;  // a stream socket epoll reports as hung up before it ever connected
  bool lost_ = false;             // a filter found the number closed behind the layer's back (raw close)
  int capacity_ = 0;              // send buffer or pipe size, for EVFILT_WRITE's data
  uint32_t registered_ = 0;       // the mask epoll holds now; 0 = not in the epoll set
  int watch_ = -1;                // a regular file's inotify watch descriptor in the queue's FileWatch
  Knote* read_ = nullptr;
  Knote* write_ = nullptr;
};

// An internal descriptor the queue itself puts in its epoll set (its wake-up eventfd; later a timer or signal
// source). Its callback moves knotes to the pending list.
struct InternalSource {
  int fd_ = -1;
  void (*on_ready)(Kqueue& queue, InternalSource& source) = nullptr;
};

// Knotes are keyed by (ident, filter) within one queue, as on FreeBSD.
struct KnoteKey {
  uintptr_t ident;
  short filter;
  bool operator==(const KnoteKey&) const = default;
};
struct KnoteKeyHash {
  size_t operator()(const KnoteKey& key) const { return std::hash<uintptr_t>()(key.ident * 31 + static_cast<uint16_t>(key.filter)); }
};

struct Kqueue {
  explicit Kqueue(int epoll_fd);
  ~Kqueue();

  int epoll_fd_;
  // Set by the close wrapper (the object is freed later by kqueue()) and in a fork child. A filter detaching from a
  // closed queue only closes its own descriptors: the epoll set's number may be reused, or the set the parent's.
  std::atomic<bool> closed_{false};
  std::atomic<int> callers_{0};      // kevent() calls inside; a closed queue is freed only at zero
  std::mutex lock_;
  uint64_t scan_serial_ = 0;

  std::unordered_map<KnoteKey, std::unique_ptr<Knote>, KnoteKeyHash> knotes_;
  std::vector<std::unique_ptr<WatchedFd>> fds_;                  // by descriptor number
  uint32_t next_serial_ = 1;

  // Pending list (FIFO) and the eventfd that stays readable while it is not empty, so that poll() on the queue
  // and a thread blocked in kevent() both see activations made in user space.
  Knote* pending_head_ = nullptr;
  Knote* pending_tail_ = nullptr;
  InternalSource wake_;
  bool wake_signalled_ = false;
  int waiters_ = 0;  // threads blocked in epoll_wait on this queue

  // EVFILT_TIMER's one timerfd and ordered timers, and the one inotify instance for regular files: made on
  // first use, so a queue without timers or files costs no extra descriptor.
  std::unique_ptr<TimerQueue> timers_;
  std::unique_ptr<FileWatch> files_;

  void queue_pending(Knote& knote);
  void unqueue_pending(Knote& knote);
  // Makes the wake-up eventfd match the pending list (called where the lock is about to be released).
  void update_wake();

  // FreeBSD's kq_count, for EVFILT_READ on this queue's descriptor from another queue: moves what epoll holds
  // ready onto the pending list (internal sources run their callbacks; nothing is delivered) and returns the
  // pending list's length. Caller holds `lock_`. Lock order: a queue takes another queue's lock only while it
  // holds an epoll entry on that queue's descriptor; epoll refuses cycles (ELOOP), so no two threads can wait
  // for each other's queue.
  int64_t collect_pending();

  // Adds an internal source to the epoll set (level-triggered, readable). Returns 0 or an errno.
  int add_source(InternalSource& source);
  // Per-queue state of the filters that need one, indexed by -filter (EVFILT_* are small negative numbers); made
  // by the filter on first use, destroyed with the queue after its knotes.
  std::unique_ptr<FilterState> filter_states_[16];
  std::unique_ptr<FilterState>& filter_state(short filter) { return filter_states_[-filter]; }

  // Removes a knote the program did not delete because its object went away (its descriptor was closed, the
  // process it watched exited with nothing to report): off the pending list, detached, freed. Not for knotes on
  // a WatchedFd (purge_stale removes those with their record).
  void drop_knote(Knote& knote);

  // The record for `fd`, purged first when the number was closed since it was registered.
  WatchedFd* find_fd(int fd);
  WatchedFd& fd_record(int fd);
  void drop_fd_record(WatchedFd& record);
  void purge_stale(WatchedFd& record);
};

// fork(): queues are not inherited (FreeBSD's fdcopy skips them). The prepare handler takes every queue's lock so
// that the child finds each queue consistent; the parent handler lets go; the child handler closes the child's
// copies of every queue's descriptors (never calling epoll_ctl or inotify_rm_watch: those kernel objects are
// shared with the parent) and frees the queues. Registered by fork_hooks.cpp.
void queues_fork_prepare();
void queues_fork_parent();
void queues_fork_child();

// Epoll plumbing for WatchedFd (epoll_link.cpp).
// Makes epoll's entry match what the record's knotes want now. Returns 0 or an errno; sets `*touched` when it
// changed the kernel's entry (epoll then re-checks readiness by itself).
int epoll_sync(Kqueue& queue, WatchedFd& record, bool* touched = nullptr);
uint64_t epoll_data_for(const WatchedFd& record);
uint64_t epoll_data_for(const InternalSource& source);
// Decodes epoll's data: the record (null when stale) or the internal source.
WatchedFd* record_from_epoll_data(Kqueue& queue, uint64_t data);
InternalSource* source_from_epoll_data(uint64_t data);

}  // namespace kqcompat
