"""Lesson 04's rule register: every rule lessons/04-timers/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="never-wait-in-a-handler",
         rule="Never wait in a handler (sleep, a blocking call): arm a timer and return.",
         section="Timers are events too",
         mutants=("sleeps-instead-of-a-timer",)),
    Rule(name="timer-units",
         rule="A timer's unit is milliseconds unless fflags says otherwise; write unit names, never their values.",
         section="EVFILT_TIMER, field by field",
         mutants=("timer-in-whole-seconds",)),
    Rule(name="one-shot-or-delete",
         rule="EV_ONESHOT for a timer that fires once; a periodic timer runs until you delete it.",
         section="Step 1: arm a timer",
         mutants=("one-shot-timers-repeat", "periodic-timer-left-running")),
    Rule(name="data-counts-expirations",
         rule="data on a timer event counts expirations: several may be reported at once.",
         section="Step 2: when a timer fires",
         mutants=("one-tick-per-event",)),
    Rule(name="an-ident-is-a-timer",
         rule="An ident is a timer: adding an ident in use restarts that timer instead of making a second one.",
         section="Step 1: arm a timer",
         mutants=("one-ident-for-every-job",)),
    Rule(name="idle-counts-from-the-last-words",
         rule="The idle timeout counts from what the client last sent: activity restarts its timer.",
         section="Step 3: idle connections",
         mutants=("idle-timer-ignores-activity",)),
    Rule(name="rearm-idle-for-what-is-left",
         rule="A one-shot idle timer that fires for a client that has spoken is armed again for what is left of "
              "the idle time, so that it fires when the client will have been silent that long.",
         section="Step 3: idle connections",
         mutants=("idle-rearmed-for-the-full-period",)),
    Rule(name="close-does-not-delete-timers",
         rule="close() does not delete timers. Delete them, and expect ENOENT for one-shot timers that have fired.",
         section="Step 4: when a connection goes, its timers go",
         mutants=("timers-outlive-their-connection", "expected-enoent-is-fatal")),
    Rule(name="keep-the-object-until-the-batch-is-done",
         rule="Keep a closed connection's object until the batch is done: events already handed out still point "
              "at it.",
         section="Who owns a timer: udata and lifetimes",
         mutants=("frees-connection-mid-batch",)),
]
