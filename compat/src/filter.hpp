// The contract every filter fills in, written once here (one file per filter implements it).
//
// The core (kqueue.cpp) owns knotes, applies changes in order, and runs the scan; a filter only knows how to
// attach its knote to a Linux source, how to take a later change, how to detach, and how to turn "something
// happened" into a returned event. All callbacks run with the queue's lock held.
#pragma once

#include <sys/event.h>

#include <cstdint>

namespace kqcompat {

struct Kqueue;
struct Knote;

struct FilterOps {
  // Set up the Linux source for a new knote (`knote` holds ident, sfflags, sdata, udata and the creation
  // flags). Returns 0, or an errno with nothing left registered.
  int (*attach)(Kqueue& queue, Knote& knote);

  // A change to an existing knote, not a delete (udata already replaced; `change` is the entry as given). The
  // filter decides what becomes of sfflags and sdata, as FreeBSD's f_touch does: descriptor filters replace
  // them, the timer only on EV_ADD, the user filter applies the NOTE_FF* operation. Returns 0, or an errno with
  // the knote left as it was.
  int (*modify)(Kqueue& queue, Knote& knote, const struct kevent& change);

  // EV_ENABLE / EV_DISABLE changed `knote.disabled_`: start or stop the Linux source as needed. Returns true when
  // the source will itself report a condition that already holds (so the core need not queue a probe).
  bool (*enable_changed)(Kqueue& queue, Knote& knote);

  // Undo attach. Cannot fail.
  void (*detach)(Kqueue& queue, Knote& knote);

  // Decide whether the knote fires and fill `out.data`, `out.fflags` and `EV_EOF` in `out.flags`. `hint` holds
  // the epoll bits of a notification, or 0 when the core asks for a fresh look (a queued activation, a level
  // knote after delivery). Returning false drops the activation silently, as BSD does when a filter's
  // condition no longer holds at retrieval time. A filter whose knote can never fire again may free it
  // (Kqueue::drop_knote, FreeBSD's EV_DROP) and return false: the core does not touch it after a false return.
  bool (*evaluate)(Kqueue& queue, Knote& knote, uint32_t hint, struct kevent& out);

  // After an EV_CLEAR delivery: forget what accumulated (counts, fflags). May be null.
  void (*clear)(Knote& knote);

  // True when the Linux source itself reports again while the condition holds (a level-triggered epoll entry),
  // so the core need not re-queue a level knote after delivering it.
  bool (*source_is_level)(const Knote& knote);
};

// The filters, one per file, and the table that names them (filters.cpp).
extern const FilterOps read_filter;
extern const FilterOps write_filter;
extern const FilterOps timer_filter;
extern const FilterOps user_filter;
extern const FilterOps signal_filter;
extern const FilterOps proc_filter;
extern const FilterOps vnode_filter;

// The filters by -filter (EVFILT_* are small negative numbers); null where the layer has none (filters.cpp).
constexpr int kFilterSlots = 16;
extern const FilterOps* const filter_table[kFilterSlots];

// The operations of `filter`, or null for a filter the layer does not have (the change fails with EINVAL).
// Inline: the core asks for every event it delivers.
inline const FilterOps* filter_ops(short filter) {
  return filter < 0 && filter > -kFilterSlots ? filter_table[-filter] : nullptr;
}

// True for the filters whose ident is a descriptor number: read and write (their knotes hang on the descriptor's
// shared epoll entry, WatchedFd, looked up through Kqueue::fds_) and vnode (its knotes remember the number's
// generation, Knote::fd_generation_). A change to such a knote on a closed number fails with EBADF.
bool is_descriptor_filter(short filter);

}  // namespace kqcompat
