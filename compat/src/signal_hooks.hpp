// The process-wide half of EVFILT_SIGNAL: the layer's own signal handler, and the program's dispositions it
// chains to.
//
// kqueue(2) records a signal "even if the signal has been marked as SIG_IGN" and lets it be delivered normally.
// Linux has nothing that counts a delivery without taking it (signalfd needs the signal blocked, which stops the
// program's handler), so while any knote watches a signal the kernel's disposition is the layer's handler: it
// counts the delivery, wakes the queues, and then does what the program's disposition says (runs its handler,
// ignores, or performs the default action). sigaction() and signal() are interposed so that the program sets and
// reads its own disposition, never the layer's. Everything the handler touches is atomics in static tables; it
// never locks or allocates. compat/README.md lists what this cannot reproduce.
#pragma once

#include <cstdint>

namespace kqcompat {

// 0 when a knote may watch `sig`, else the errno for its registration: EINVAL for numbers Linux does not have
// (FreeBSD takes 1..127, Linux 1..64) and for the two glibc keeps for itself (32 and 33).
int signal_check(uintptr_t sig);

// A knote starts or stops watching `sig`. The first watcher installs the layer's handler (taking the program's
// current disposition as its record); the last one gives the kernel the program's disposition back. Not
// async-signal-safe. signal_watch returns 0 or an errno.
int signal_watch(int sig);
void signal_unwatch(int sig);

// How many times `sig` reached the layer's handler since the process started. A knote remembers the value it
// last reported; the difference is its `data`.
uint64_t signal_deliveries(int sig);

// A signal blocked in every thread stays pending and never reaches the handler; FreeBSD records it when it is
// sent. Each queue with signal knotes also holds a signalfd (never read, so it takes nothing) that becomes
// readable when a watched signal is left pending, and then calls this: every signal of `watched` pending and
// blocked in the calling thread is counted now, once. A mark tells the handler not to count it again when it is
// finally delivered (the program unblocks it). The queues are woken when anything was counted.
void signals_record_pending(uint64_t watched);

// One bit per signal, as signals_record_pending takes them.
inline uint64_t signal_bit(int sig) { return uint64_t{1} << (sig - 1); }

// The eventfd the handler writes after each delivery, or -1 before the first watch. Each queue with signal knotes
// has it in its epoll set, edge-triggered: a write wakes every such queue, and nobody ever drains it.
int signal_wake_fd();

// What the layer's handlers did on the calling thread so far: deliveries they absorbed (the program's disposition
// was SIG_IGN, or a default action that lets the process go on) and runs of a handler of the program's. kevent()
// compares them around its wait: only a handler of the program's that ran may end it with EINTR, as on BSD. A
// handler the program sets through sigaction() or signal() for a signal nobody watches is handed to the kernel
// behind a small trampoline that counts its runs (its mask and flags the program's own), so that an EINTR Linux
// reports after a stop and continue, with no handler run, is told apart. Handlers for the fault signals
// (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS) are left as installed.
struct SignalMarks {
  uint64_t absorbed;
  uint64_t passed;
};
SignalMarks signal_marks();

// True when some asynchronous signal has a handler of the program's that leaves no mark: one set behind
// sigaction()'s back (a raw system call, glibc's sigset(), a library's constructor before the layer's). kevent()
// asks on an EINTR that left no mark: when there is none, that EINTR came from being stopped and continued
// (SIGSTOP/SIGTSTP, then SIGCONT: signal(7), "Interruption of system calls ... by stop signals"), which BSD never
// reports, so the wait goes on. Makes up to 64 sigaction() queries: for the rare EINTR path only.
bool program_catches_unwatched_signal();

// The close wrapper calls this before any close of a number the layer knows: if it is the wake-up eventfd, the
// handler stops writing to it (and any handler already past its check finishes) before the number can be reused.
// Async-signal-safe.
void signal_descriptor_closing(int fd);

// exec: the kernel resets caught signals to SIG_DFL and keeps SIG_IGN. The layer's handler standing in for the
// program's SIG_IGN would come out as SIG_DFL, so the exec wrappers put SIG_IGN back first, and the layer's
// handler back if the exec fails. Lock-free; safe in a vfork child (changes the kernel's table only).
void signals_before_exec();
void signals_after_exec_failed();

// fork (see fork_hooks.cpp): the registry is locked around fork; the child gets a fresh wake-up eventfd at the
// same number, so that the handler never writes into the parent's.
void signals_fork_prepare();
void signals_fork_parent();
void signals_fork_child();

}  // namespace kqcompat
