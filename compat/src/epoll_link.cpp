// The one epoll entry per watched descriptor, and how epoll's 64-bit data names what woke up.
//
// epoll's data for a descriptor is its record's address with the record's serial in the top bits (kqueue.hpp):
// the serial tells a live record from an earlier record in the same slot, so a notification that was already in
// flight when a record was dropped is ignored. Internal sources (the wake-up eventfd, timer and signal sources)
// carry their own address with the top bit set.
#include <sys/epoll.h>

#include <cerrno>

#include "fd_table.hpp"
#include "kqueue.hpp"

namespace kqcompat {
namespace {

constexpr uint32_t kReadBits = EPOLLIN | EPOLLRDHUP;
constexpr uint32_t kWriteBits = EPOLLOUT;

bool is_level(const Knote* knote) { return !(knote->flags_ & (EV_CLEAR | EV_DISPATCH | EV_ONESHOT)); }

// What epoll should hold for this record now: the union of its enabled knotes' interests, edge-triggered as soon
// as one knote is not level-triggered (a level knote there is re-queued in user space after delivery).
uint32_t wanted_mask(const WatchedFd& record) {
  uint32_t mask = 0;
  bool edge = record.never_connected_;
  for (const Knote* knote : {record.read(), record.write()}) {
    if (!knote) continue;
    edge = edge || !is_level(knote);
    if (knote->disabled_ || record.inert(knote->filter_)) continue;
    mask |= knote->filter_ == EVFILT_READ ? kReadBits : kWriteBits;
  }
  return mask && edge ? mask | EPOLLET : mask;
}

}  // namespace

int epoll_sync(Kqueue& queue, WatchedFd& record, bool* touched) {
  if (touched) *touched = false;
  if (record.kind_ == WatchedFd::Kind::file) return 0;  // epoll refuses regular files; FileWatch stands in
  const uint32_t want = wanted_mask(record);
  if (want == record.registered_) return 0;
  FdFacts* facts = fd_facts_create(record.fd());
  if (!facts) return EBADF;
  if (want == 0) {
    // Not MOD to an empty mask: epoll reports EPOLLHUP/EPOLLERR whatever the mask, which would spin.
    epoll_ctl(queue.epoll_fd_, EPOLL_CTL_DEL, record.fd(), nullptr);
    record.registered_ = 0;
    facts->watchers.fetch_sub(1, std::memory_order_acq_rel);
    return 0;
  }
  if (reinterpret_cast<uintptr_t>(&record) > kAddressMask) return ENOMEM;  // epoll's data could not name it
  epoll_event event{};
  event.events = want;
  event.data.u64 = epoll_data_for(record);
  const int op = record.registered_ ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(queue.epoll_fd_, op, record.fd(), &event) != 0) return errno;
  if (op == EPOLL_CTL_ADD) {
    if (record.generation_ != facts->generation.load(std::memory_order_acquire)) {
      // Another thread closed the number between the caller's check and this ADD, which may have put a new
      // file given the number into the set under this stale record. A purge will not name the number to epoll
      // (Kqueue::purge_stale), so undo it now, under the queue's lock: the number's next registration must find
      // the set without it.
      epoll_ctl(queue.epoll_fd_, EPOLL_CTL_DEL, record.fd(), nullptr);
      return EBADF;
    }
    facts->watchers.fetch_add(1, std::memory_order_acq_rel);
  }
  record.registered_ = want;
  if (touched) *touched = true;
  return 0;
}

uint64_t epoll_data_for(const WatchedFd& record) {
  return (uint64_t{static_cast<uint16_t>(record.serial_ & kSerialMask)} << kAddressBits) |
         reinterpret_cast<uintptr_t>(&record);
}

uint64_t epoll_data_for(const InternalSource& source) {
  return kInternalTag | reinterpret_cast<uintptr_t>(&source);
}

}  // namespace kqcompat
