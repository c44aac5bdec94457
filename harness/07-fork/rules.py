"""Lesson 07's rule register: every rule lessons/07-fork/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="a-kqueue-is-not-inherited",
         rule="A kqueue is not inherited by fork(): the child makes its own and registers everything again.",
         section="Step 2: the child's own queue",
         mutants=("worker-uses-the-supervisors-queue",)),
    Rule(name="dispositions-are-inherited",
         rule="Signal dispositions are inherited: a child of a program that ignores SIGTERM ignores it too.",
         section="fork(), and what the child gets",
         mutants=("workers-keep-sig-ign",)),
    Rule(name="flush-before-fork",
         rule="Flush stdio before fork(), or buffered output is printed twice.",
         section="fork(), and what the child gets",
         unprovable="The copy of a line left in stdio's buffer comes out only when a child flushes it, at exit(); "
                    "the workers end by SIGTERM's default action, which flushes nothing, so no test can count on "
                    "seeing the line twice."),
    Rule(name="the-child-never-returns",
         rule="The child never returns into the parent's code.",
         section="fork(), and what the child gets",
         mutants=("child-returns-into-the-parent",)),
    Rule(name="watch-and-reap",
         rule="EVFILT_PROC tells, waitpid() reaps: both, or zombies pile up. Take the exit status from waitpid().",
         section="Step 3: reap, and replace",
         mutants=("never-reaps", "watches-the-wrong-note")),
    Rule(name="never-ignore-sigchld",
         rule="Never set SIGCHLD to SIG_IGN in a supervisor: the kernel then reaps children by itself, and "
              "waitpid() fails with ECHILD, telling nothing of how they ended.",
         section="Step 3: reap, and replace",
         mutants=("ignores-sigchld",)),
    Rule(name="register-a-fresh-child-at-once",
         rule="Register a fresh child right away, and be ready for it to be dead already (ESRCH on macOS).",
         section="Step 1: fork a worker, watch it",
         unprovable="A worker that dies between fork() and its registration cannot be arranged from outside, and "
                    "ESRCH for it is macOS's answer only (FreeBSD and kqlab's layer report its exit at once)."),
    Rule(name="replace-but-not-in-a-tight-loop",
         rule="Replace a dead worker, but not in a tight loop.",
         section="Step 3: reap, and replace",
         mutants=("never-replaces",)),
    Rule(name="sleep-in-kevent",
         rule="Sleep in kevent(); never poll for dead children.",
         section="The supervisor's loop",
         mutants=("polls-for-dead-workers",)),
    Rule(name="accept-eagain-is-no-error",
         rule="Every idle worker wakes for a new connection and all but one get EAGAIN from accept(): someone else "
              "serves that client, which is no error.",
         section="Many workers, one listening socket",
         mutants=("herd-loser-gives-up",)),
    Rule(name="stopping-replaces-nobody",
         rule="Once stopping, a worker that ends is reaped but not replaced, and the supervisor exits when the last "
              "one is reaped.",
         section="Step 4: stop them all",
         mutants=("replaces-while-stopping",)),
    Rule(name="sigterm-or-sigint-stops-all",
         rule="SIGTERM or SIGINT stops every worker, and the supervisor exits 0 once all are reaped.",
         section="Step 4: stop them all",
         mutants=("watches-sigterm-only",)),
    Rule(name="bound-the-wait-for-workers",
         rule="Bound the wait for the workers with a one-shot timer: a worker that ignores SIGTERM gets SIGKILL "
              "when it fires.",
         section="Step 4: stop them all",
         unprovable="Only a worker that ignores SIGTERM needs the timer, and a correct worker never does, except "
                    "in the instant between fork() and its resetting SIGTERM, which no test can aim at; a stopped "
                    "worker (SIGSTOP) would provoke it, but only after kStopDeadlineMs (10 s), which the program "
                    "does not let a test shorten and the suite's time cannot pay for."),
]
