// Process-wide facts about descriptor numbers that the interposed close() must reach without a lock.
//
// BSD removes every knote of a descriptor number the moment that number is closed (knote_fdclose), even when a
// dup() keeps the file open. epoll cannot see close(), so the layer interposes it (close_hooks.cpp). The wrapper
// may run inside a signal handler: it takes no lock and allocates nothing. It only bumps the number's
// generation (knotes registered under an older generation are stale and are purged lazily by their queue) and
// removes the number from every live queue's epoll set. Everything here is atomics in tables that are allocated
// once and never freed.
#pragma once

#include <atomic>
#include <cstdint>

namespace kqcompat {

struct Kqueue;

// 8 bytes per number: part of the layer's memory per connection.
struct FdFacts {
  std::atomic<uint32_t> generation{0};  // bumped by every close of this number
  std::atomic<uint32_t> watchers{0};    // how many queues have this number in their epoll set
};

// The facts for `fd`, created if needed (not signal-safe: call from kqueue()/kevent() only). Null when `fd` is
// negative or beyond the table's reach (2^20 descriptors).
FdFacts* fd_facts_create(int fd);

// The tables behind the lookups below, which are inline because every delivered event makes them. Two levels:
// 1024 chunks of 1024 numbers. Chunks are created under a mutex and never freed, so a lock-free reader that sees
// a chunk pointer can use it forever.
namespace fd_tables {
constexpr int kChunkBits = 10;
constexpr int kChunkSize = 1 << kChunkBits;
constexpr int kChunks = 1024;
extern std::atomic<FdFacts*> facts[kChunks];
extern std::atomic<std::atomic<Kqueue*>*> queues[kChunks];
extern std::atomic<uint32_t> closes;
inline bool in_reach(int fd) { return fd >= 0 && fd < kChunks * kChunkSize; }
}  // namespace fd_tables

// The facts for `fd` if they were ever created, else null. Lock-free, async-signal-safe.
inline FdFacts* fd_facts_find(int fd) {
  using namespace fd_tables;
  if (!in_reach(fd)) return nullptr;
  FdFacts* chunk = facts[fd >> kChunkBits].load(std::memory_order_acquire);
  return chunk ? &chunk[fd & (kChunkSize - 1)] : nullptr;
}

// The current generation of `fd` (0 for a number never seen). Lock-free, async-signal-safe.
inline uint32_t fd_generation(int fd) {
  const FdFacts* found = fd_facts_find(fd);
  return found ? found->generation.load(std::memory_order_acquire) : 0;
}

// The queue whose descriptor `fd` is, if any (a table of its own: few numbers are queues). queue_of and
// take_queue_of are lock-free and async-signal-safe; set_queue_of (from kqueue() only) returns false when `fd`
// is beyond the table's reach.
inline Kqueue* queue_of(int fd) {
  using namespace fd_tables;
  if (!in_reach(fd)) return nullptr;
  std::atomic<Kqueue*>* chunk = queues[fd >> kChunkBits].load(std::memory_order_acquire);
  return chunk ? chunk[fd & (kChunkSize - 1)].load(std::memory_order_acquire) : nullptr;
}
bool set_queue_of(int fd, Kqueue* queue);
Kqueue* take_queue_of(int fd);

// Queues register their epoll descriptor here so that close() of a watched number can remove it from every
// epoll set before the real close. Returns false when the table is full (then kqueue() fails with EMFILE).
bool live_queue_add(int epoll_fd);
void live_queue_remove(int epoll_fd);
// Whether any queue is open in this process now.
bool any_live_queue();

// What the close wrapper calls before the real close of `fd`. Async-signal-safe; keeps errno.
void forget_descriptor(int fd);

// How many closes of numbers the layer knows have completed their part in the layer (forget_descriptor bumps it
// after taking the number out of every epoll set). A scan that finds it unchanged since before its epoll wait
// knows that no event of the batch is for a number closed since, without looking up each number's generation.
inline uint32_t closes_so_far() { return fd_tables::closes.load(std::memory_order_acquire); }

}  // namespace kqcompat
