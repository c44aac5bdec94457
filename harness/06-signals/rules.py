"""Lesson 06's rule register: every rule lessons/06-signals/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="no-work-in-a-handler",
         rule="A handler runs in the middle of anything: do no work there. Let EVFILT_SIGNAL bring the signal to "
              "the loop.",
         section="Signals, and why a handler must not do the work",
         mutants=("stops-in-the-signal-handler",)),
    Rule(name="ignore-then-watch",
         rule="EVFILT_SIGNAL only watches: SIG_IGN first, or the default action still ends the process.",
         section="Step 1: ignore the signal, then watch it",
         mutants=("watches-without-sig-ign",)),
    Rule(name="watch-for-good",
         rule="A signal is watched for good (EV_ADD, not EV_ONESHOT): every later signal must be heard too.",
         section="Step 1: ignore the signal, then watch it",
         mutants=("signal-registered-oneshot",)),
    Rule(name="data-counts-signals",
         rule="data counts the signals since the last event: add it, do not count events.",
         section="Step 2: act on a signal in the loop",
         mutants=("counts-signal-events",)),
    Rule(name="graceful-stop",
         rule="Graceful means: no new work, every promised reply sent, a deadline, and exit status 0.",
         section="Step 3: stop gracefully",
         mutants=("stops-in-the-signal-handler",)),
    Rule(name="blocking-work-off-the-loop",
         rule="Work that blocks goes to a worker thread, never into the loop.",
         section="Work that blocks, and a worker thread",
         mutants=("slow-work-in-the-loop",)),
    Rule(name="results-wake-the-loop",
         rule="A worker's result must wake the loop: EVFILT_USER with NOTE_TRIGGER, after the result is queued.",
         section="Step 4: wake the loop with EVFILT_USER",
         mutants=("result-without-wake-up",)),
    Rule(name="take-every-result",
         rule="Triggers merge: take every result on each wake-up.",
         section="Step 5: take every result",
         mutants=("one-result-per-wake-up",)),
    Rule(name="user-event-by-ident",
         rule="A trigger replaces udata: recognise a user event by its ident.",
         section="Step 4: wake the loop with EVFILT_USER",
         mutants=("user-event-by-udata",)),
]
