// fork(): FreeBSD's child gets no kqueue (fdcopy skips them); kevent() and close() on the parent's queue number
// fail with EBADF there, and the parent's queues and knotes are untouched.
//
// Linux copies every descriptor, the epoll and inotify instances behind a queue included, and the child's copies
// share those instances with the parent: an epoll_ctl or inotify_rm_watch in the child would change the parent's
// queue. One pthread_atfork registration orders the layer's locks around fork (queues, then the shared io_uring
// ring, the signal registry and the process-event registry, as everywhere else), and the child handler releases
// every queue and the ring by closing the child's copies only, and reports the fork to whoever follows this
// process (proc_events.hpp).
#include <pthread.h>

#include "kqueue.hpp"
#include "proc_events.hpp"
#include "readable_queries.hpp"
#include "signal_hooks.hpp"

namespace {

void prepare() {
  kqcompat::queues_fork_prepare();
  kqcompat::readable_queries_fork_prepare();
  kqcompat::signals_fork_prepare();
  kqcompat::proc_events_fork_prepare();
}

void parent() {
  kqcompat::proc_events_fork_parent();
  kqcompat::signals_fork_parent();
  kqcompat::readable_queries_fork_parent();
  kqcompat::queues_fork_parent();
}

// The process-event registry and the signal registry first: releasing the queues drops their process and signal
// knotes, which takes those locks (the child follows no process and watches no signal).
void child() {
  kqcompat::proc_events_fork_child();
  kqcompat::signals_fork_child();
  kqcompat::readable_queries_fork_child();
  kqcompat::queues_fork_child();
}

__attribute__((constructor)) void register_fork_handlers() { pthread_atfork(prepare, parent, child); }

}  // namespace
