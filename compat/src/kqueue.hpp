// The queue and its knotes: what one kqueue descriptor stands for.
//
// A kqueue is an epoll instance (its descriptor is the kqueue descriptor, so it is closable, pollable and
// nestable for free) plus the bookkeeping epoll lacks: knotes keyed by (ident, filter), the per-descriptor
// record that read and write knotes share (epoll takes a descriptor once), and a pending list of activations
// found in user space (BSD's active queue) whose conditions are re-evaluated at scan time.
#pragma once

#include <sys/event.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "filter.hpp"
#include "queue_lock.hpp"

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

// Read and write knotes hang on their descriptor's WatchedFd, which owns them; the others are SourceKnotes in the
// queue's hash map.
inline bool filter_hangs_on_record(short filter) { return filter == EVFILT_READ || filter == EVFILT_WRITE; }

// What every knote has: what the program registered, and the queue's bookkeeping. Kept small because a server
// has one per connection: 56 bytes (read knotes live inside their descriptor's WatchedFd, see below).
struct Knote {
  // What the program registered. `flags_` keeps only the behaviour chosen at creation (EV_ONESHOT, EV_CLEAR,
  // EV_DISPATCH, EV_RECEIPT): BSD never changes it afterwards.
  uintptr_t ident_ = 0;
  void* udata_ = nullptr;
  int64_t sdata_ = 0;

  // Intrusive links of the queue's pending list; `pending_` says whether the knote is on it.
  Knote* pending_prev_ = nullptr;
  Knote* pending_next_ = nullptr;

  short filter_ = 0;
  unsigned short flags_ = 0;
  unsigned int sfflags_ = 0;
  uint32_t delivered_in_scan_ = 0;  // the number of the kevent call that returned it last (Kqueue::scan_serial_)
  bool disabled_ = false;
  bool pending_ = false;
  bool forced_ = false;  // EV_FORCEONESHOT: returned once, condition or not

  const FilterOps& ops() const { return *filter_ops(filter_); }
  bool hangs_on_record() const { return filter_hangs_on_record(filter_); }
};

// A knote whose source is not a descriptor's epoll entry (timer, user, signal, proc, vnode): what those filters
// accumulate and keep. Owned by the queue's knotes_ map.
struct SourceKnote : Knote {
  int64_t count_ = 0;
  unsigned int fired_fflags_ = 0;
  // EVFILT_VNODE's ident is a descriptor number: its fd_table generation at creation. A different one means the
  // number was closed since, and the core drops the knote as BSD did at close().
  uint32_t fd_generation_ = 0;

  // EVFILT_TIMER: the next expiry on CLOCK_MONOTONIC (ns), the period (0: fires once), and the knote's slot in
  // the queue's timer heap (kNoTimerSlot while it is not armed). See timer_queue.hpp.
  static constexpr size_t kNoTimerSlot = static_cast<size_t>(-1);
  int64_t timer_next_ns_ = 0;
  int64_t timer_period_ns_ = 0;
  size_t timer_slot_ = kNoTimerSlot;
  std::unique_ptr<FilterState> state_;
};

inline SourceKnote& source_knote(Knote& knote) { return static_cast<SourceKnote&>(knote); }
inline const SourceKnote& source_knote(const Knote& knote) { return static_cast<const SourceKnote&>(knote); }

// A write knote: kept apart from its record (most connections never have one), so it points back to it.
struct WriteKnote : Knote {
  // An EV_CLEAR knote on a TCP socket whose epoll entry it shares with a read knote: the bytes the peer had
  // acknowledged when it last fired (filter_write.cpp, room_made), or one of these.
  static constexpr uint64_t kNeverFired = ~uint64_t{0};
  static constexpr uint64_t kUncountable = ~uint64_t{0} - 1;  // not TCP: no count to compare
  WatchedFd* record_ = nullptr;
  uint64_t acked_when_fired_ = kNeverFired;
  // The mirror, for an EV_CLEAR read knote on the same entry (filter_read.cpp, data_arrived): the bytes received
  // when it last fired. Kept here because only an entry shared with a write knote needs it.
  uint64_t received_when_read_fired_ = kNeverFired;
};

// "epoll accepts a descriptor once": the one epoll entry that a descriptor's read and write knotes share. Its
// mask is the union of what its enabled knotes want; it is edge-triggered as soon as any of its knotes is not
// level-triggered (EV_CLEAR, EV_DISPATCH, EV_ONESHOT), and level knotes on an edge entry are then re-queued in
// user space after each delivery, as BSD re-queues them.
//
// It is also the layer's memory per connection, so it is packed: 80 bytes, the read knote inside, in a table
// indexed by descriptor number (Kqueue::fds_). Numbers are small and dense, as BSD's kq_knlist relies on too.
struct WatchedFd {
  // `file`: a regular file, which epoll refuses (EPERM): never in the epoll set, woken by the queue's inotify
  // watch instead (file_watch.hpp). `queue`: another kqueue's descriptor (an epoll descriptor, so nestable).
  // `unknown`: not looked at yet (fd_filter.cpp learns it when the first knote is attached).
  enum class Kind : uint8_t { unknown, stream, datagram, listener, pipe, file, queue, eventfd, other };

  // First, so that a read knote's address is its record's (both are standard-layout).
  Knote read_knote_;
  std::unique_ptr<WriteKnote> write_knote_;  // allocated with the write knote, freed with it
  uint32_t generation_ = 0;  // fd_table generation at registration: a different one means closed since
  uint32_t registered_ = 0;  // the mask epoll holds now; 0 = not in the epoll set
  // A pipe's capacity, for EVFILT_WRITE's data; a regular file's inotify watch in the queue's FileWatch (-1: none).
  union {
    int capacity_;
    int watch_;
  };
  uint16_t serial_ = 0;  // tells this record from an earlier one for the same number in epoll's data
  Kind kind_ = Kind::unknown;
  bool live_ : 1 = false;             // the slot holds a record
  bool read_hung_ : 1 = false;        // read_knote_ is a registered knote
  bool write_hung_ : 1 = false;       // write_knote_ is a registered knote
  bool never_connected_ : 1 = false;  // a stream socket epoll reports as hung up before it ever connected
  bool ring_refused_ : 1 = false;     // io_uring cannot ask this socket for its byte count (readable_queries.hpp)
  bool lost_ : 1 = false;             // a filter found the number closed behind the layer's back (raw close)
  bool read_only_ : 1 = false;        // a pipe or FIFO opened for reading only: EVFILT_WRITE is inert
  bool write_only_ : 1 = false;       // ... for writing only: EVFILT_READ is inert

  WatchedFd() : capacity_(0) {}
  int fd() const { return static_cast<int>(read_knote_.ident_); }
  Knote* read() { return read_hung_ ? &read_knote_ : nullptr; }
  Knote* write() { return write_hung_ ? write_knote_.get() : nullptr; }
  const Knote* read() const { return read_hung_ ? &read_knote_ : nullptr; }
  const Knote* write() const { return write_hung_ ? write_knote_.get() : nullptr; }
  bool has_knotes() const { return read_hung_ || write_hung_; }
  // Whether the read or write knote is registered (its filter's attach and detach say so).
  void set_hung(short filter, bool hung) { (filter == EVFILT_READ ? read_hung_ : write_hung_) = hung; }
  // A filter this descriptor's direction does not support: registered, never fires (FreeBSD's pipe_nfiltops).
  bool inert(short filter) const { return filter == EVFILT_READ ? write_only_ : read_only_; }
  // A blank read knote that still carries the record's number (fd() reads it there).
  void reset_read_knote() {
    const uintptr_t fd = read_knote_.ident_;
    read_knote_ = Knote();
    read_knote_.ident_ = fd;
  }
};

// The memory target (under 100 bytes per idle connection, bench/layer_memory.cpp) rests on these sizes, and
// record_of on the record's layout.
static_assert(sizeof(Knote) <= 56 && sizeof(WatchedFd) <= 80, "a watched connection must stay small");
static_assert(std::is_standard_layout_v<WatchedFd> && offsetof(WatchedFd, read_knote_) == 0);

// The record of a read knote, which lives inside it (EVFILT_READ's own code knows it has one).
inline WatchedFd& record_of_read_knote(Knote& knote) { return *reinterpret_cast<WatchedFd*>(&knote); }

// The record a read or write knote hangs on.
inline WatchedFd& record_of(Knote& knote) {
  if (knote.filter_ == EVFILT_READ) return record_of_read_knote(knote);
  return *static_cast<WriteKnote&>(knote).record_;
}
inline const WatchedFd& record_of(const Knote& knote) { return record_of(const_cast<Knote&>(knote)); }

// Kqueue::fds_: records by descriptor number, in blocks that never move (knotes on the pending list are pointed
// at), made as numbers are first watched and kept until the queue goes, as BSD keeps its kq_knlist.
class FdTable {
 public:
  static constexpr int kBlockBits = 6;
  static constexpr int kBlockSize = 1 << kBlockBits;

  // The slot for `fd` (live or not), or null when its block was never made.
  WatchedFd* slot(int fd) const {
    const auto block = static_cast<size_t>(fd) >> kBlockBits;
    return fd >= 0 && block < blocks_.size() && blocks_[block] ? &blocks_[block][fd & (kBlockSize - 1)] : nullptr;
  }
  // The slot for `fd`, its block made if needed.
  WatchedFd& make_slot(int fd);
  template <typename Visit>
  void for_each_live(Visit visit) {
    for (auto& block : blocks_) {
      if (!block) continue;
      for (int i = 0; i < kBlockSize; ++i)
        if (block[i].live_) visit(block[i]);
    }
  }

 private:
  std::vector<std::unique_ptr<WatchedFd[]>> blocks_;
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
  QueueLock lock_;  // see queue_lock.hpp
  uint32_t scan_serial_ = 0;  // never 0 in a scan: a new knote has delivered_in_scan_ 0
  void restart_scan_serials();

  // Knotes not on a descriptor's record (those are in fds_), keyed as on FreeBSD.
  std::unordered_map<KnoteKey, std::unique_ptr<SourceKnote>, KnoteKeyHash> knotes_;
  FdTable fds_;

  // The ext[] a knote was added with, returned in its events as FreeBSD returns its kn_kevent (kqueue(2): "ext[2]
  // and ext[3] are always passed through the kernel as-is"). Only knotes given a non-zero one are here, so the
  // usual knote (EV_SET zeroes ext) costs nothing. Erased whenever a knote is freed (forget_ext).
  std::unordered_map<const Knote*, std::array<uint64_t, 4>> ext_;
  void forget_ext(const Knote& knote) {
    if (!ext_.empty()) ext_.erase(&knote);
  }

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

  // The byte count (BSD's `data`) already asked for the read knote being delivered now, with the rest of its
  // epoll batch (readable_queries.hpp); -1: ask with FIONREAD.
  int64_t readable_known_ = -1;

  // TCP_INFO's counts for the record whose epoll report is being dispatched now, asked for by the first of its
  // knotes that needs them and shared with the other (fd_filter.hpp, tcp_counts); null outside such a report.
  const WatchedFd* counted_ = nullptr;
  uint64_t counted_acked_ = 0;
  uint64_t counted_received_ = 0;

  void queue_pending(Knote& knote);
  void unqueue_pending(Knote& knote);
  // Makes the wake-up eventfd match the pending list (called where the lock is about to be released). Inline:
  // every kevent() call asks, and it rarely has anything to do.
  void update_wake() {
    if ((pending_head_ != nullptr) != wake_signalled_) signal_wake();
  }
  void signal_wake();

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
  // A new knote for `filter` (read or write) in `record`, not hung yet: the filter's attach hangs it. Its
  // memory is the record's; free_fd_knote gives it back (after detach).
  Knote& make_fd_knote(WatchedFd& record, short filter);
  void free_fd_knote(WatchedFd& record, Knote& knote);
  // Frees the record once nothing is left in it: no knote and no epoll entry.
  void drop_fd_record_if_empty(WatchedFd& record);
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

// epoll's data names what woke up without a lookup: a record's address (records never move while their queue
// lives, see FdTable) with its serial in the top bits, so that a notification already in flight for an earlier
// record in the same slot is recognised; or an internal source's address with the top bit set. Linux hands user
// space addresses below 2^47 (x86-64, arm64) unless an mmap() call asks for higher ones; epoll_sync refuses a
// record above 2^48 rather than misread it.
constexpr int kAddressBits = 48;
constexpr uint64_t kAddressMask = (uint64_t{1} << kAddressBits) - 1;
constexpr uint64_t kInternalTag = uint64_t{1} << 63;
constexpr uint16_t kSerialMask = 0x7fff;  // the serial bits epoll's data holds, below the tag

// Decodes epoll's data: the record (null when stale or internal) or the internal source. Inline: once per event.
inline WatchedFd* record_from_epoll_data(uint64_t data) {
  if (data & kInternalTag) return nullptr;
  WatchedFd* record = reinterpret_cast<WatchedFd*>(data & kAddressMask);
  return record->live_ && (record->serial_ & kSerialMask) == (data >> kAddressBits) ? record : nullptr;
}
inline InternalSource* source_from_epoll_data(uint64_t data) {
  return (data & kInternalTag) ? reinterpret_cast<InternalSource*>(data & ~kInternalTag) : nullptr;
}

}  // namespace kqcompat
