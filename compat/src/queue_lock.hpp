// The lock a queue takes in every kevent() call: one atomic word, locked and unlocked inline.
//
// A kevent() call that waits takes its queue's lock twice (for the changes and the scan, and again after the
// wait) and lets go twice. With glibc's pthread_mutex_lock and unlock, whose general code first asks what kind of
// mutex it has, those four calls were about 110 of the 500 instructions the layer spent per call (callgrind,
// lesson 01's server at one connection). Uncontended, this lock is one compare-and-swap to take and one exchange
// to let go. Contended, a thread sleeps on the word with futex(2): the mutex of Drepper's "Futexes Are Tricky"
// (its third version). States: 0 free, 1 taken, 2 taken and a thread may be asleep on it (whoever lets go of a 2
// wakes one).
//
// The process's io_uring ring (readable_queries.cpp), which queues try to take once per epoll batch, has one too.
//
// ThreadSanitizer sees the acquire and release of the word and orders the queue's data by them, as it would a
// mutex's.
#pragma once

#include <atomic>

namespace kqcompat {

class QueueLock {
 public:
  void lock() {
    int expected = 0;
    if (!state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed))
      lock_contended(expected);
  }
  bool try_lock() {
    int expected = 0;
    return state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed);
  }
  void unlock() {
    if (state_.exchange(0, std::memory_order_release) == 2) wake_one();
  }

 private:
  void lock_contended(int seen);
  void wake_one();
  std::atomic<int> state_{0};
};

}  // namespace kqcompat
