// KQLAB_TRACE=1: every kevent() call prints its changes and what it returns, decoded, on stderr, so a student
// can watch their own event loop. Off, it costs one branch per call.
#pragma once

#include <sys/event.h>

#include <cerrno>

namespace kqcompat {

// Whether KQLAB_TRACE asks for it, read once at load time.
extern const bool tracing;

void print_call(int kq, int nchanges, int nevents, const struct timespec* timeout);
void print_change(int kq, const struct kevent& change);
int print_result(int kq, const struct kevent* events, int count);
int print_failure(int kq, int error);

// A call's first line, before its changes: what it brings and when it began (./kqlab trace draws from it).
inline void trace_call(int kq, int nchanges, int nevents, const struct timespec* timeout) {
  if (tracing) print_call(kq, nchanges, nevents, timeout);
}
inline void trace_change(int kq, const struct kevent& change) {
  if (tracing) print_change(kq, change);
}
// Return `count` / -1 unchanged (and errno kept), after printing them when tracing.
inline int trace_result(int kq, const struct kevent* events, int count) {
  return tracing ? print_result(kq, events, count) : count;
}
inline int trace_failure(int kq, int error) {
  errno = error;
  return tracing ? print_failure(kq, error) : -1;
}

}  // namespace kqcompat
