// QueueLock's slow paths: sleeping on the word while another thread holds it, and waking a sleeper.
#include "queue_lock.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace kqcompat {
namespace {

// std::atomic<int> holds exactly an int: the word futex(2) compares and sleeps on.
static_assert(sizeof(std::atomic<int>) == sizeof(int) && std::atomic<int>::is_always_lock_free);

int* word(std::atomic<int>& state) { return reinterpret_cast<int*>(&state); }

}  // namespace

void QueueLock::lock_contended(int seen) {
  const int saved_errno = errno;  // a lock taken is not a failure: the caller's errno stays as it was
  // Mark the lock as wanted (2) before sleeping, so that its holder wakes a sleeper when it lets go. Whoever finds
  // it free (0) while marking has it, still marked 2: at worst one wake-up for nobody.
  if (seen != 2) seen = state_.exchange(2, std::memory_order_acquire);
  while (seen != 0) {
    // Sleeps only if the word is still 2; EAGAIN (it changed) and EINTR (a signal) just look again. Private: the
    // word is in this process's memory only (a fork child has its own copy, and no waiter).
    syscall(SYS_futex, word(state_), FUTEX_WAIT_PRIVATE, 2, nullptr, nullptr, 0);
    seen = state_.exchange(2, std::memory_order_acquire);
  }
  errno = saved_errno;
}

void QueueLock::wake_one() {
  const int saved_errno = errno;
  syscall(SYS_futex, word(state_), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  errno = saved_errno;
}

}  // namespace kqcompat
