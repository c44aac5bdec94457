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

// The facts for `fd` if they were ever created, else null. Lock-free, async-signal-safe.
FdFacts* fd_facts_find(int fd);

// The current generation of `fd` (0 for a number never seen). Lock-free, async-signal-safe.
uint32_t fd_generation(int fd);

// The queue whose descriptor `fd` is, if any (a table of its own: few numbers are queues). queue_of and
// take_queue_of are lock-free and async-signal-safe; set_queue_of (from kqueue() only) returns false when `fd`
// is beyond the table's reach.
Kqueue* queue_of(int fd);
bool set_queue_of(int fd, Kqueue* queue);
Kqueue* take_queue_of(int fd);

// Queues register their epoll descriptor here so that close() of a watched number can remove it from every
// epoll set before the real close. Returns false when the table is full (then kqueue() fails with EMFILE).
bool live_queue_add(int epoll_fd);
void live_queue_remove(int epoll_fd);

// What the close wrapper calls before the real close of `fd`. Async-signal-safe; keeps errno.
void forget_descriptor(int fd);

}  // namespace kqcompat
