#include "fd_table.hpp"

#include <sys/epoll.h>

#include <cerrno>
#include <mutex>

#include "kqueue.hpp"
#include "proc_events.hpp"
#include "readable_queries.hpp"
#include "signal_hooks.hpp"
#include "socket_errors.hpp"

namespace kqcompat {

std::atomic<FdFacts*> fd_tables::facts[fd_tables::kChunks];
std::atomic<std::atomic<Kqueue*>*> fd_tables::queues[fd_tables::kChunks];
std::atomic<uint32_t> fd_tables::closes{0};

namespace {

using namespace fd_tables;

std::mutex chunks_lock;

// The chunk a slot of `facts` or `queues` points at, made if needed (under chunks_lock; never freed).
template <typename T>
T* make_chunk(std::atomic<T*>& slot) {
  if (!slot.load(std::memory_order_acquire)) {
    std::lock_guard guard(chunks_lock);
    if (!slot.load(std::memory_order_relaxed)) slot.store(new T[kChunkSize](), std::memory_order_release);
  }
  return slot.load(std::memory_order_acquire);
}

// Epoll descriptors of the live queues. A slot holds -1 when free; `live_high` bounds the scan.
constexpr int kMaxQueues = 4096;
std::atomic<int> live_fds[kMaxQueues];
std::atomic<int> live_high{0};
std::once_flag live_init;

void init_live() {
  for (auto& slot : live_fds) slot.store(-1, std::memory_order_relaxed);
}

}  // namespace

FdFacts* fd_facts_create(int fd) {
  if (!in_reach(fd)) return nullptr;
  return &make_chunk(facts[fd >> kChunkBits])[fd & (kChunkSize - 1)];
}

bool set_queue_of(int fd, Kqueue* queue) {
  if (!in_reach(fd)) return false;
  make_chunk(queues[fd >> kChunkBits])[fd & (kChunkSize - 1)].store(queue, std::memory_order_release);
  return true;
}

Kqueue* take_queue_of(int fd) {
  if (!in_reach(fd)) return nullptr;
  std::atomic<Kqueue*>* chunk = queues[fd >> kChunkBits].load(std::memory_order_acquire);
  return chunk ? chunk[fd & (kChunkSize - 1)].exchange(nullptr, std::memory_order_acq_rel) : nullptr;
}

bool live_queue_add(int epoll_fd) {
  std::call_once(live_init, init_live);
  for (int i = 0; i < kMaxQueues; ++i) {
    int expected = -1;
    if (live_fds[i].compare_exchange_strong(expected, epoll_fd)) {
      int high = live_high.load();
      while (high < i + 1 && !live_high.compare_exchange_weak(high, i + 1)) {
      }
      return true;
    }
  }
  return false;
}

void live_queue_remove(int epoll_fd) {
  const int high = live_high.load();
  for (int i = 0; i < high; ++i) {
    int expected = epoll_fd;
    if (live_fds[i].compare_exchange_strong(expected, -1)) return;
  }
}

bool any_live_queue() {
  const int high = live_high.load(std::memory_order_acquire);
  for (int i = 0; i < high; ++i)
    if (live_fds[i].load(std::memory_order_acquire) >= 0) return true;
  return false;
}

void forget_descriptor(int fd) {
  FdFacts* facts = fd_facts_find(fd);
  if (!facts) return;  // never watched, never a queue: the common case costs one load
  const int saved_errno = errno;
  forget_socket_error(fd);  // an error the layer kept for the program (only watched numbers have one)
  signal_descriptor_closing(fd);  // the layer's own signal wake-up descriptor: its handler must stop writing there
  readable_queries_descriptor_closing(fd);  // the layer's io_uring ring: it must never submit to a reused number
  proc_events_descriptor_closing(fd);       // a child side of NOTE_EXEC's pairs: closed on purpose, not by exec
  // Read before the generation moves: a queue that sees the new generation purges its record without touching
  // epoll (Kqueue::purge_stale) and only then lets go of its count, so the count read here still includes every
  // queue that holds the number, and the loop below takes it out of each of them.
  const bool watched = facts->watchers.load(std::memory_order_acquire) > 0;
  facts->generation.fetch_add(1, std::memory_order_acq_rel);
  if (Kqueue* queue = take_queue_of(fd)) {
    queue->closed_.store(true, std::memory_order_release);  // freed later by kqueue(), never here
    live_queue_remove(fd);
  }
  if (watched) {
    // Which queues watch this number is not known without a lock, so ask every live one; epoll answers ENOENT
    // where it is not registered. Only closes of watched numbers pay for this.
    const int high = live_high.load(std::memory_order_acquire);
    for (int i = 0; i < high; ++i) {
      const int epoll_fd = live_fds[i].load(std::memory_order_acquire);
      if (epoll_fd >= 0) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    }
  }
  fd_tables::closes.fetch_add(1, std::memory_order_acq_rel);  // after the epoll sets: see closes_so_far()
  errno = saved_errno;
}

}  // namespace kqcompat
