// KQLAB_FAULT: make one chosen change fail, so that a test can see what a program does with a failed registration.
//
// On FreeBSD and macOS a registration fails for reasons a test cannot arrange from outside (the kernel out of
// memory for knotes, ENOMEM; a descriptor closed by another thread, EBADF), and on a working machine it never
// does: a program that ignores its receipts passes every test. The switch is the layer's, so it exists only on
// Linux; tests that need it skip natively, saying so.
//
//     KQLAB_FAULT=FILTER:ERRNO[:N]      e.g. KQLAB_FAULT=EVFILT_READ:ENOMEM:2
//
// The N-th change (from 1; 1 if not given) that adds (EV_ADD) a knote of FILTER, counted across the process, is
// not applied, and fails with ERRNO: as for any failed change, its EV_ERROR entry carries the errno if there is
// room in the eventlist, else kevent() returns -1 with errno set (kqueue(2), RETURN VALUES). FILTER is a filter's
// name (EVFILT_READ, EVFILT_WRITE, EVFILT_TIMER, ...), ERRNO an errno's name (ENOMEM, EBADF, ...) or its number.
// An unreadable value is reported on stderr once and ignored.
#pragma once

#include <sys/event.h>

namespace kqcompat {

// 0 when `change` should be applied; the errno it must fail with when it is the change KQLAB_FAULT chose.
int injected_fault(const struct kevent& change);

}  // namespace kqcompat
