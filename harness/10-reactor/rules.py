"""Lesson 10's rule register: every rule lessons/10-reactor/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="one-edge-triggered-registration",
         rule="One registration per descriptor, for both directions, edge-triggered (EV_CLEAR), for as long as it "
              "is open.",
         section="Step 1: one registration per descriptor",
         mutants=("level-triggered-registration", "registers-reading-only")),
    Rule(name="try-first-then-drain",
         rule="Edge-triggered registrations need a speculative attempt (step 2) and draining (step 3), or "
              "operations wait for reports that never come.",
         section="Step 2: try first, then wait",
         mutants=("waits-without-trying", "one-operation-per-report")),
    Rule(name="operations-finish-in-order",
         rule="Operations of one direction finish in the order they were started: try at once only when nothing "
              "waits.",
         section="Step 3: one report, every operation it allows",
         mutants=("jumps-the-queue",)),
    Rule(name="handlers-run-from-the-loop",
         rule="Never call a handler from inside the call that started its operation, nor during the kernel's "
              "batch.",
         section="Handlers run after the batch",
         mutants=("calls-back-from-inside", "calls-back-during-the-batch")),
    Rule(name="closing-aborts",
         rule="Closing aborts what waits: every handler is called exactly once.",
         section="Step 4: closing cancels",
         mutants=("close-drops-handlers",)),
    Rule(name="aborted-is-no-success",
         rule="An operation that close() aborts completes with kAborted, never as if it had succeeded.",
         section="Step 4: closing cancels",
         mutants=("abort-without-error",)),
    Rule(name="close-forgets-the-descriptor",
         rule="close() forgets the descriptor before the socket is closed: a new socket given the same number "
              "starts with nothing of the old one's.",
         section="Step 4: closing cancels",
         mutants=("close-keeps-the-descriptor",)),
    Rule(name="timers-bound-the-sleep",
         rule="The earliest timer bounds kevent()'s sleep; round the timeout up.",
         section="Step 5: timers decide how long to sleep",
         mutants=("sleeps-through-timers",)),
    Rule(name="the-shorter-limit-wins",
         rule="kevent()'s timeout is the shorter of max_wait and the time to the next deadline: zero if that has "
              "passed, never negative.",
         section="Step 5: timers decide how long to sleep",
         mutants=("timer-ignores-max-wait", "past-deadline-negative-timeout")),
    Rule(name="post-wakes-the-loop",
         rule="Another thread posts under a lock and triggers the user event; the user event needs EV_CLEAR.",
         section="Step 6: post() from any thread",
         mutants=("post-without-wake-up", "user-event-never-reset")),
    Rule(name="turn-away-at-the-descriptor-limit",
         rule="At the descriptor limit the echo server turns away what does not fit (lesson 05's spare "
              "descriptor): returning stops it accepting for good, retrying at once spins.",
         section="The servers on top",
         mutants=("stops-accepting-at-the-limit", "retries-at-once-at-the-limit")),
]
