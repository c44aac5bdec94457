// EVFILT_USER: an event the program triggers itself, with kevent(), typically from another thread to wake the
// one blocked in kevent(). Nothing in the kernel stands behind it: a trigger puts the knote on the pending list,
// and the queue's wake-up eventfd, kept readable while that list is not empty, wakes a blocked thread (the core
// calls update_wake() at the end of every kevent() call).
//
// FreeBSD's contract (kqueue(2), kern_event.c's filt_user*): NOTE_TRIGGER fires the event; the top two bits of
// fflags say what to do with the 24 user flags (NOTE_FFNOP, NOTE_FFAND, NOTE_FFOR, NOTE_FFCOPY with the operand
// in NOTE_FFLAGSMASK); the returned fflags are the stored user flags and `data` the data of the latest change.
// EV_ADD stores fflags as given and does not fire, even with NOTE_TRIGGER (FreeBSD; macOS fires). Without
// EV_CLEAR a triggered event stays triggered; a change carrying EV_CLEAR resets it. A trigger made while the
// event is disabled is kept and delivered by EV_ENABLE.
#include "kqueue.hpp"

namespace kqcompat {
namespace {

// The knote's `count_` is 1 while the event is triggered (triggers before a delivery coalesce); `sfflags_` holds the
// user flags and `sdata_` the data of the latest change (the core sets both from EV_ADD).
int attach(Kqueue&, Knote& knote) {
  source_knote(knote).count_ = 0;
  return 0;
}

// filt_usertouch(EVENT_REGISTER), applied to every change that is not a delete, re-EV_ADD included.
int modify(Kqueue&, Knote& knote, const struct kevent& change) {
  if (change.fflags & NOTE_TRIGGER) source_knote(knote).count_ = 1;
  const unsigned operand = change.fflags & NOTE_FFLAGSMASK;
  switch (change.fflags & NOTE_FFCTRLMASK) {
    case NOTE_FFAND:
      knote.sfflags_ &= operand;
      break;
    case NOTE_FFOR:
      knote.sfflags_ |= operand;
      break;
    case NOTE_FFCOPY:
      knote.sfflags_ = operand;
      break;
    default:  // NOTE_FFNOP
      break;
  }
  knote.sdata_ = change.data;
  if (change.flags & EV_CLEAR) source_knote(knote).count_ = 0;
  return 0;
}

bool enable_changed(Kqueue&, Knote&) {
  return false;  // the core re-evaluates on EV_ENABLE: a trigger kept while disabled fires then
}

void detach(Kqueue&, Knote&) {}

bool evaluate(Kqueue&, Knote& knote, uint32_t, struct kevent& out) {
  if (source_knote(knote).count_ == 0) return false;
  out.fflags = knote.sfflags_;
  out.data = knote.sdata_;
  return true;
}

void clear(Knote& knote) { source_knote(knote).count_ = 0; }

// Nothing reports a trigger again: the core re-queues a triggered event without EV_CLEAR after each delivery.
bool source_is_level(const Knote&) { return false; }

}  // namespace

const FilterOps user_filter = {
    .attach = attach,
    .modify = modify,
    .enable_changed = enable_changed,
    .detach = detach,
    .evaluate = evaluate,
    .clear = clear,
    .source_is_level = source_is_level,
};

}  // namespace kqcompat
