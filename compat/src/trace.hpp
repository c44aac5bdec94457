// KQLAB_TRACE=1: every kevent() call prints its changes and what it returns, decoded, on stderr, so a student
// can watch their own event loop. Off, it costs one branch per call.
#pragma once

#include <sys/event.h>

namespace kqcompat {

void trace_change(int kq, const struct kevent& change);
// Return `count` / -1 unchanged (and errno kept), after printing them when tracing.
int trace_result(int kq, const struct kevent* events, int count);
int trace_failure(int kq, int error);

}  // namespace kqcompat
