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

struct FdFacts {
  std::atomic<uint32_t> generation{0};  // bumped by every close of this number
  std::atomic<uint32_t> watchers{0};    // how many queues have this number in their epoll set
  std::atomic<Kqueue*> queue{nullptr};  // the queue whose descriptor this number is, if any
};

// The facts for `fd`, created if needed (not signal-safe: call from kqueue()/kevent() only). Null when `fd` is
// negative or beyond the table's reach (2^20 descriptors).
FdFacts* fd_facts_create(int fd);

// The facts for `fd` if they were ever created, else null. Lock-free, async-signal-safe.
FdFacts* fd_facts_find(int fd);

// The current generation of `fd` (0 for a number never seen). Lock-free, async-signal-safe.
uint32_t fd_generation(int fd);

// Queues register their epoll descriptor here so that close() of a watched number can remove it from every
// epoll set before the real close. Returns false when the table is full (then kqueue() fails with EMFILE).
bool live_queue_add(int epoll_fd);
void live_queue_remove(int epoll_fd);

// What the close wrapper calls before the real close of `fd`. Async-signal-safe; keeps errno.
void forget_descriptor(int fd);

}  // namespace kqcompat
