// What the layer tells ThreadSanitizer, in the one place where a race it reports is known to be benign.
//
// ThreadSanitizer treats a descriptor number as a memory location: a system call on it reads, close() writes.
// Its close() interceptor records the write before the layer's close wrapper runs, so nothing the layer does can
// order a close after another thread's earlier call on the number. A scan that trims an epoll entry (settle after
// a delivery, see kqueue.cpp) is such a call, made by whichever thread scans, on a number the program may be
// closing this instant in another thread. It is harmless by construction: it is a MOD or DEL on the queue's own
// epoll set, under the queue's lock; a new file given the number cannot be in that set under it (registering it
// takes the same lock and purges the old record first), so the call changes the old file's entry or fails with
// ENOENT/EBADF. IgnoreDescriptorRace keeps that one call out of ThreadSanitizer's reports (TSan ignores the
// thread's reads and writes while it lives, so it is scoped to that call and nothing else; locks and atomics are
// still seen).
#pragma once

#if defined(__SANITIZE_THREAD__)
#define KQCOMPAT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KQCOMPAT_TSAN 1
#endif
#endif

#if defined(KQCOMPAT_TSAN)
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
#endif

namespace kqcompat {

class IgnoreDescriptorRace {
 public:
  IgnoreDescriptorRace() {
#if defined(KQCOMPAT_TSAN)
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
#endif
  }
  ~IgnoreDescriptorRace() {
#if defined(KQCOMPAT_TSAN)
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
#endif
  }
  IgnoreDescriptorRace(const IgnoreDescriptorRace&) = delete;
  IgnoreDescriptorRace& operator=(const IgnoreDescriptorRace&) = delete;
};

}  // namespace kqcompat
