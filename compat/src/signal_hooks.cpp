// EVFILT_SIGNAL's process-wide machinery (see signal_hooks.hpp): the layer's handler, the program's dispositions
// it chains to, and the interposed sigaction() and signal().
//
// The state the handler shares is plain integers in static tables, read and written with the compiler's __atomic
// builtins: the handler is compiled without ThreadSanitizer's instrumentation (see on_signal), and std::atomic's
// member functions are instrumented out-of-line calls in a debug build.
#include "signal_hooks.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

#include "fd_table.hpp"

// The kernel calls the layer's handler directly, at any instruction, even inside a sanitizer's runtime (the layer
// sits behind the sanitizers' sigaction interceptors, so they never see it). What it runs is therefore left
// uninstrumented by ThreadSanitizer and calls nothing a sanitizer intercepts: raw system calls, __atomic builtins.
#define KQ_IN_HANDLER __attribute__((no_sanitize("thread")))

namespace kqcompat {
namespace {

constexpr int kMaxSignal = 64;  // Linux numbers its signals 1..64 (_NSIG - 1)

KQ_IN_HANDLER uint64_t bit(int sig) { return uint64_t{1} << (sig - 1); }

// The program's disposition of one signal. The handler reads handler/flags/mask through a sequence lock (`seq` is
// odd while a writer is inside); writers hold the registry lock, with every signal blocked in their thread, so
// the handler never waits for a writer it interrupted.
struct Disposition {
  uint32_t seq = 0;
  uintptr_t handler = 0;   // SIG_DFL, SIG_IGN or the program's function
  int flags = 0;
  uint64_t mask = 0;       // sa_mask, one bit per signal
  uint32_t reset_seq = 0;  // the last `seq` whose SA_RESETHAND handler ran: the disposition is SIG_DFL since
  bool installed = false;  // the kernel's disposition is the layer's handler
  // Under the registry lock only.
  struct sigaction action {};  // as the program set it: sigaction()'s old action while the layer holds the kernel's
  int watchers = 0;            // knotes watching the signal, in every queue
};

constinit Disposition dispositions[kMaxSignal + 1];
constinit uint64_t deliveries[kMaxSignal + 1];
// 1 while a signal counted as pending (signals_record_pending) awaits its delivery, which is then not counted.
constinit uint32_t recorded_pending[kMaxSignal + 1];
constinit int wake_fd = -1;
constinit int wake_writers = 0;  // handlers between reading wake_fd and writing to it
constinit std::mutex registry_mutex;
[[gnu::tls_model("initial-exec")]] constinit thread_local SignalMarks marks_here = {0, 0};
sigset_t fork_saved_mask;

using SigactionFn = int (*)(int, const struct sigaction*, struct sigaction*);
constinit SigactionFn next_sigaction_fn = nullptr;

// Set by the layer's constructor. A sanitizer's runtime installs its own handlers through the next sigaction in
// the link order, this one, while it initializes and before its per-thread state exists: until the layer is
// ready the wrapper forwards them without running any instrumented code.
constinit bool layer_ready = false;

// The next sigaction in the link order (libc's): resolved before main, or at first use by an earlier constructor.
KQ_IN_HANDLER SigactionFn next_sigaction() {
  SigactionFn next = __atomic_load_n(&next_sigaction_fn, __ATOMIC_ACQUIRE);
  if (!next) {
    next = reinterpret_cast<SigactionFn>(dlsym(RTLD_NEXT, "sigaction"));
    __atomic_store_n(&next_sigaction_fn, next, __ATOMIC_RELEASE);
  }
  return next;
}

__attribute__((constructor)) void find_next_sigaction() {
  next_sigaction();
  __atomic_store_n(&layer_ready, true, __ATOMIC_RELEASE);
}

// Writers block every signal in their thread first: no handler (the layer's, or the program's calling sigaction()
// from a handler) can then run on a thread that holds the lock.
class RegistryLock {
 public:
  RegistryLock() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved_);
    registry_mutex.lock();
  }
  ~RegistryLock() {
    registry_mutex.unlock();
    pthread_sigmask(SIG_SETMASK, &saved_, nullptr);
  }
  RegistryLock(const RegistryLock&) = delete;
  RegistryLock& operator=(const RegistryLock&) = delete;

 private:
  sigset_t saved_;
};

struct Snapshot {
  uintptr_t handler;
  int flags;
  uint64_t mask;
  uint32_t seq;
};

KQ_IN_HANDLER uintptr_t address(void (*handler)(int)) { return reinterpret_cast<uintptr_t>(handler); }
KQ_IN_HANDLER bool is_function(uintptr_t handler) {
  return handler != address(SIG_DFL) && handler != address(SIG_IGN);
}

KQ_IN_HANDLER Snapshot snapshot(const Disposition& d) {
  for (int attempt = 0;; ++attempt) {
    const uint32_t seq = __atomic_load_n(&d.seq, __ATOMIC_ACQUIRE);
    const Snapshot s{__atomic_load_n(&d.handler, __ATOMIC_ACQUIRE), __atomic_load_n(&d.flags, __ATOMIC_ACQUIRE),
                     __atomic_load_n(&d.mask, __ATOMIC_ACQUIRE), seq};
    if (!(seq & 1) && __atomic_load_n(&d.seq, __ATOMIC_ACQUIRE) == seq) return s;
    if (attempt > 8) sched_yield();  // the writer runs on another thread with signals blocked: it will finish
  }
}

// The handler the disposition stands for now: an SA_RESETHAND handler that already ran counts as SIG_DFL.
uintptr_t effective_handler(const Disposition& d, const Snapshot& s) {
  const bool spent = (s.flags & SA_RESETHAND) && __atomic_load_n(&d.reset_seq, __ATOMIC_ACQUIRE) >= s.seq;
  return is_function(s.handler) && spent ? address(SIG_DFL) : s.handler;
}

void on_caught_signal(int sig, siginfo_t* info, void* context);

// Registry lock held.
void publish(Disposition& d, const struct sigaction& action) {
  uint64_t mask = 0;
  for (int sig = 1; sig <= kMaxSignal; ++sig) mask |= sigismember(&action.sa_mask, sig) == 1 ? bit(sig) : 0;
  const uintptr_t handler = (action.sa_flags & SA_SIGINFO) ? reinterpret_cast<uintptr_t>(action.sa_sigaction)
                                                            : address(action.sa_handler);
  // The kernel's copy of a handler behind the trampoline (signal_watch reads the kernel's disposition): the
  // program's own action is recorded here already.
  if (handler == reinterpret_cast<uintptr_t>(&on_caught_signal)) return;
  const uint32_t seq = __atomic_load_n(&d.seq, __ATOMIC_RELAXED);
  __atomic_store_n(&d.seq, seq + 1, __ATOMIC_RELAXED);
  __atomic_store_n(&d.handler, handler, __ATOMIC_RELEASE);
  __atomic_store_n(&d.flags, action.sa_flags, __ATOMIC_RELEASE);
  __atomic_store_n(&d.mask, mask, __ATOMIC_RELEASE);
  __atomic_store_n(&d.seq, seq + 2, __ATOMIC_RELEASE);
  d.action = action;
}

// What sigaction() reports as the program's disposition (registry lock held). After an SA_RESETHAND handler ran,
// SIG_DFL, as the kernel would have reset it (sigaction(2)).
struct sigaction program_view(const Disposition& d) {
  struct sigaction view = d.action;
  if (effective_handler(d, snapshot(d)) == address(SIG_DFL)) {
    view.sa_flags &= ~SA_SIGINFO;
    view.sa_handler = SIG_DFL;
  }
  return view;
}

void on_signal(int sig, siginfo_t* info, void* context);

// The kernel's disposition while the layer watches: its handler with every signal blocked (the program's mask is
// set before chaining), the program's flags that matter to the kernel, and SA_RESTART when it stands in for
// SIG_IGN or SIG_DFL so that a slow call the program makes is restarted rather than failing with EINTR.
struct sigaction layer_action(const Disposition& d, const Snapshot& program) {
  struct sigaction action {};
  action.sa_sigaction = on_signal;
  sigfillset(&action.sa_mask);
  const int passed = SA_ONSTACK | SA_NOCLDSTOP | SA_NOCLDWAIT;
  const bool handler = is_function(effective_handler(d, program));
  action.sa_flags = SA_SIGINFO | (program.flags & passed) | (handler ? (program.flags & SA_RESTART) : SA_RESTART);
  return action;
}

// Signals raised by a faulting instruction: never the ones that interrupt a wait, and their handlers (a crash
// reporter, a sanitizer's) are left exactly as installed.
bool raised_by_faults(int sig) {
  return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGTRAP || sig == SIGSYS;
}

// The kernel's disposition for a signal nobody watches: the program's, except that a handler of its own runs
// behind on_caught_signal, which marks the run for kevent() (see signal_marks). Everything else (the mask,
// SA_RESTART, SA_RESETHAND, SA_NODEFER, SA_ONSTACK) stays the kernel's to apply.
struct sigaction kernel_view(int sig, const struct sigaction& program) {
  struct sigaction kernel = program;
  const uintptr_t handler = (program.sa_flags & SA_SIGINFO) ? reinterpret_cast<uintptr_t>(program.sa_sigaction)
                                                             : address(program.sa_handler);
  if (!is_function(handler) || raised_by_faults(sig)) return kernel;
  kernel.sa_sigaction = on_caught_signal;
  kernel.sa_flags |= SA_SIGINFO;
  return kernel;
}

// Makes the kernel's disposition match: the layer's handler while watched, the program's otherwise (lock held).
void reconcile(int sig, Disposition& d) {
  // kqueue(2): a signal is recorded even if ignored, "except for the SIGCHLD signal, which, if ignored, won't be
  // recorded". Keeping SIG_IGN in the kernel then also keeps its other meaning: children are reaped at once.
  const bool chld_ignored = sig == SIGCHLD && effective_handler(d, snapshot(d)) == address(SIG_IGN);
  const bool want = d.watchers > 0 && sig != SIGKILL && sig != SIGSTOP && !chld_ignored;
  if (want) {
    const struct sigaction action = layer_action(d, snapshot(d));
    next_sigaction()(sig, &action, nullptr);
    __atomic_store_n(&d.installed, true, __ATOMIC_RELEASE);
  } else if (__atomic_load_n(&d.installed, __ATOMIC_ACQUIRE)) {
    const struct sigaction view = kernel_view(sig, program_view(d));
    next_sigaction()(sig, &view, nullptr);
    __atomic_store_n(&d.installed, false, __ATOMIC_RELEASE);
  }
}

// ---- The handler. Runs with every signal blocked, so never re-entered on its thread.

KQ_IN_HANDLER void wake_queues() {
  __atomic_fetch_add(&wake_writers, 1, __ATOMIC_SEQ_CST);
  const int fd = __atomic_load_n(&wake_fd, __ATOMIC_SEQ_CST);
  if (fd >= 0) {
    const uint64_t one = 1;
    syscall(SYS_write, fd, &one, sizeof one);  // cannot fill up: an eventfd holds 2^64 - 2
  }
  __atomic_fetch_sub(&wake_writers, 1, __ATOMIC_SEQ_CST);
}

// SA_RESETHAND: the first delivery for this disposition runs the handler, later ones see SIG_DFL.
KQ_IN_HANDLER bool claim_one_shot(Disposition& d, uint32_t seq) {
  uint32_t ran = __atomic_load_n(&d.reset_seq, __ATOMIC_ACQUIRE);
  while (ran < seq) {
    if (__atomic_compare_exchange_n(&d.reset_seq, &ran, seq, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return true;
  }
  return false;
}

// The default action (signal(7)), done by the kernel itself so that it is exact (core dump, wait status, stop
// notification): the default disposition, the signal raised again and unblocked. A terminating signal ends the
// process there; a stop returns at SIGCONT and the layer's handler goes back. (A sigaction() call for the same
// signal in another thread during the stop would be overwritten: the handler cannot take the registry lock.)
KQ_IN_HANDLER void default_action(int sig) {
  if (sig == SIGCHLD || sig == SIGCONT || sig == SIGURG || sig == SIGWINCH) return;  // ignored by default
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  struct sigaction layer {};
  const SigactionFn next = __atomic_load_n(&next_sigaction_fn, __ATOMIC_ACQUIRE);
  next(sig, &fallback, &layer);
  syscall(SYS_tgkill, syscall(SYS_getpid), syscall(SYS_gettid), sig);
  uint64_t unblock = bit(sig), before = 0;
  syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, &unblock, &before, sizeof before);
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &before, nullptr, sizeof before);
  next(sig, &layer, nullptr);
}

KQ_IN_HANDLER void run_program_handler(int sig, siginfo_t* info, void* context, const Snapshot& program) {
  // The mask the kernel would have given it (sigaction(2)): the interrupted one, sa_mask, and the signal itself
  // unless SA_NODEFER.
  uint64_t mask = static_cast<ucontext_t*>(context)->uc_sigmask.__val[0] | program.mask;
  if (!(program.flags & SA_NODEFER)) mask |= bit(sig);
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &mask, nullptr, sizeof mask);
  ++marks_here.passed;
  if (program.flags & SA_SIGINFO)
    reinterpret_cast<void (*)(int, siginfo_t*, void*)>(program.handler)(sig, info, context);
  else
    reinterpret_cast<void (*)(int)>(program.handler)(sig);
}

KQ_IN_HANDLER void on_signal(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  if (__atomic_exchange_n(&recorded_pending[sig], 0, __ATOMIC_SEQ_CST) == 0)
    __atomic_fetch_add(&deliveries[sig], 1, __ATOMIC_SEQ_CST);  // else counted when it was left pending
  wake_queues();
  Disposition& d = dispositions[sig];
  const Snapshot program = snapshot(d);
  uintptr_t handler = program.handler;
  if (is_function(handler) && (program.flags & SA_RESETHAND) && !claim_one_shot(d, program.seq))
    handler = address(SIG_DFL);
  errno = saved_errno;
  if (is_function(handler)) {
    run_program_handler(sig, info, context, program);
    return;
  }
  ++marks_here.absorbed;
  if (handler == address(SIG_DFL)) default_action(sig);
  errno = saved_errno;
}

// The kernel's handler for a signal nobody watches that the program catches (kernel_view): the kernel has
// already applied the program's mask and flags, so this only marks the run and calls the program's handler.
KQ_IN_HANDLER void on_caught_signal(int sig, siginfo_t* info, void* context) {
  const Snapshot program = snapshot(dispositions[sig]);
  ++marks_here.passed;
  if (!is_function(program.handler)) return;  // a sigaction() in another thread got there first
  if (program.flags & SA_SIGINFO)
    reinterpret_cast<void (*)(int, siginfo_t*, void*)>(program.handler)(sig, info, context);
  else
    reinterpret_cast<void (*)(int)>(program.handler)(sig);
}

// ---- sigaction() and signal() as the program sees them.

bool managed(int sig) { return signal_check(static_cast<uintptr_t>(sig)) == 0 && sig != SIGKILL && sig != SIGSTOP; }

// Not watched: the kernel holds the program's disposition (kernel_view); the registry records the program's
// action, which the trampoline calls and which stands for the trampoline when the kernel's is read back.
int unwatched_sigaction(int sig, Disposition& d, const struct sigaction* action, struct sigaction* old) {
  const struct sigaction before = d.action;
  if (action) publish(d, *action);
  struct sigaction kernel {}, current {};
  if (action) kernel = kernel_view(sig, *action);
  if (next_sigaction()(sig, action ? &kernel : nullptr, &current) != 0) {
    const int error = errno;
    if (action) publish(d, before);
    errno = error;
    return -1;
  }
  if (old) *old = current.sa_sigaction == on_caught_signal ? before : current;
  return 0;
}

int program_sigaction(int sig, const struct sigaction* action, struct sigaction* old) {
  if (!managed(sig)) return next_sigaction()(sig, action, old);  // the kernel's answer (EINVAL...)
  RegistryLock lock;
  Disposition& d = dispositions[sig];
  if (d.watchers == 0) return unwatched_sigaction(sig, d, action, old);
  if (old) *old = program_view(d);
  if (action) {
    publish(d, *action);
    reconcile(sig, d);
  }
  return 0;
}

}  // namespace

int signal_check(uintptr_t sig) {
  if (sig == 0 || sig > kMaxSignal) return EINVAL;
  const int number = static_cast<int>(sig);
  return number >= __SIGRTMIN && number < SIGRTMIN ? EINVAL : 0;
}

int signal_watch(int sig) {
  RegistryLock lock;
  if (__atomic_load_n(&wake_fd, __ATOMIC_ACQUIRE) < 0) {
    const int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return errno;
    fd_facts_create(fd);  // so that the close wrapper tells signal_descriptor_closing about this number
    __atomic_store_n(&wake_fd, fd, __ATOMIC_RELEASE);
  }
  Disposition& d = dispositions[sig];
  if (d.watchers++ == 0) {
    // Nobody watched: whatever the program set went straight to the kernel, which holds its disposition.
    struct sigaction current {};
    if (next_sigaction()(sig, nullptr, &current) == 0 && current.sa_sigaction != on_signal) publish(d, current);
    // Sent before anything watched it: FreeBSD did not record it, so neither its delivery nor its pending counts.
    sigset_t pending;
    const bool already = sigpending(&pending) == 0 && sigismember(&pending, sig) == 1;
    __atomic_store_n(&recorded_pending[sig], already ? 1u : 0u, __ATOMIC_SEQ_CST);
  }
  reconcile(sig, d);
  return 0;
}

void signal_unwatch(int sig) {
  RegistryLock lock;
  Disposition& d = dispositions[sig];
  if (d.watchers > 0 && --d.watchers == 0) {
    reconcile(sig, d);
    __atomic_store_n(&recorded_pending[sig], 0u, __ATOMIC_SEQ_CST);
  }
}

void signals_record_pending(uint64_t watched) {
  sigset_t pending;
  if (sigpending(&pending) != 0) return;  // sigpending(2): pending and blocked in this thread, or process-wide
  bool counted = false;
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    if (!(watched & bit(sig)) || sigismember(&pending, sig) != 1) continue;
    uint32_t unmarked = 0;
    if (!__atomic_compare_exchange_n(&recorded_pending[sig], &unmarked, 1, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      continue;  // counted already, and still waiting for its delivery
    // Marked. The handler may have run meanwhile (a thread unblocked it): if the signal is gone and the mark
    // with it, the handler left the count to us; if the mark is still there, the delivery came before the mark
    // and the handler counted it.
    sigset_t now;
    const bool still_pending = sigpending(&now) == 0 && sigismember(&now, sig) == 1;
    uint32_t marked = 1;
    if (!still_pending &&
        __atomic_compare_exchange_n(&recorded_pending[sig], &marked, 0, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      continue;
    __atomic_fetch_add(&deliveries[sig], 1, __ATOMIC_SEQ_CST);
    counted = true;
  }
  if (counted) wake_queues();  // other queues watching the same signal may have looked before the count
}

uint64_t signal_deliveries(int sig) { return __atomic_load_n(&deliveries[sig], __ATOMIC_ACQUIRE); }

int signal_wake_fd() { return __atomic_load_n(&wake_fd, __ATOMIC_ACQUIRE); }

SignalMarks signal_marks() { return marks_here; }

bool program_catches_unwatched_signal() {
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    // Faults are raised by the faulting instruction, never while a thread sleeps in epoll_wait; the sanitizers'
    // own handlers for them must not count. glibc keeps 32 and 33 for itself.
    if (raised_by_faults(sig) || sig == SIGKILL || sig == SIGSTOP || sig == 32 || sig == 33) continue;
    struct sigaction current {};
    if (next_sigaction()(sig, nullptr, &current) != 0) continue;
    const uintptr_t handler = (current.sa_flags & SA_SIGINFO) ? reinterpret_cast<uintptr_t>(current.sa_sigaction)
                                                               : address(current.sa_handler);
    // The layer's handler and the trampoline leave marks; only a handler set behind sigaction()'s back does not.
    if (is_function(handler) && handler != reinterpret_cast<uintptr_t>(&on_signal) &&
        handler != reinterpret_cast<uintptr_t>(&on_caught_signal))
      return true;
  }
  return false;
}

void signal_descriptor_closing(int fd) {
  int expected = fd;
  if (__atomic_load_n(&wake_fd, __ATOMIC_RELAXED) != fd ||
      !__atomic_compare_exchange_n(&wake_fd, &expected, -1, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
    return;
  // A handler on another thread may have read the number just before: let its write land before the number can
  // be reused. Handlers run with every signal blocked, so none can be waiting on this thread.
  while (__atomic_load_n(&wake_writers, __ATOMIC_SEQ_CST) != 0) sched_yield();
}

void signals_before_exec() {
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    Disposition& d = dispositions[sig];
    if (!__atomic_load_n(&d.installed, __ATOMIC_ACQUIRE) || snapshot(d).handler != address(SIG_IGN)) continue;
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    next_sigaction()(sig, &ignore, nullptr);
  }
}

void signals_after_exec_failed() {
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    Disposition& d = dispositions[sig];
    const Snapshot program = snapshot(d);
    if (!__atomic_load_n(&d.installed, __ATOMIC_ACQUIRE) || program.handler != address(SIG_IGN)) continue;
    const struct sigaction action = layer_action(d, program);
    next_sigaction()(sig, &action, nullptr);
  }
}

void signals_fork_prepare() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &fork_saved_mask);
  registry_mutex.lock();
}

void signals_fork_parent() {
  registry_mutex.unlock();
  pthread_sigmask(SIG_SETMASK, &fork_saved_mask, nullptr);
}

void signals_fork_child() {
  registry_mutex.unlock();
  for (auto& mark : recorded_pending) __atomic_store_n(&mark, 0u, __ATOMIC_RELAXED);  // fork(2): none pending
  // The inherited eventfd is the parent's: a write would wake the parent's queues. A fresh one takes its number,
  // so the handler's copy of the number stays right throughout.
  if (const int fd = signal_wake_fd(); fd >= 0) {
    const int fresh = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fresh < 0 || syscall(SYS_dup3, fresh, fd, O_CLOEXEC) < 0) {
      __atomic_store_n(&wake_fd, -1, __ATOMIC_SEQ_CST);
      syscall(SYS_close, fd);
    }
    if (fresh >= 0) syscall(SYS_close, fresh);
  }
  pthread_sigmask(SIG_SETMASK, &fork_saved_mask, nullptr);
}

}  // namespace kqcompat

// glibc's signal() and sigaction() reach the kernel without passing here, so both are interposed. (Its older
// sigset(), sigignore(), siginterrupt() and sysv_signal() are not: see compat/README.md.)
extern "C" KQ_IN_HANDLER int sigaction(int sig, const struct sigaction* action, struct sigaction* old) noexcept {
  if (!__atomic_load_n(&kqcompat::layer_ready, __ATOMIC_ACQUIRE)) return kqcompat::next_sigaction()(sig, action, old);
  return kqcompat::program_sigaction(sig, action, old);
}

// As glibc's signal(): BSD semantics, the signal blocked in its handler, slow calls restarted.
extern "C" sighandler_t signal(int sig, sighandler_t handler) noexcept {
  if (handler == SIG_ERR) {
    errno = EINVAL;
    return SIG_ERR;
  }
  struct sigaction action {}, old {};
  action.sa_handler = handler;
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, sig);
  action.sa_flags = SA_RESTART;
  return kqcompat::program_sigaction(sig, &action, &old) == 0 ? old.sa_handler : SIG_ERR;
}
