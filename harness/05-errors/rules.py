"""Lesson 05's rule register: every rule lessons/05-errors/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="error-bit-room-and-expected-errors",
         rule="flags & EV_ERROR, never ==; room in the eventlist for every receipt; expected errors listed, with a "
              "reason.",
         section="When kevent() says no: EV_ERROR and EV_RECEIPT",
         unprovable="FreeBSD and kqlab's Linux layer return exactly EV_ERROR (only macOS adds the change's flags), "
                    "receipts lack room only when more changes are made at once than this server ever makes, and "
                    "the only error it expects (ENOENT for a one-shot timer, lesson 04) cannot occur in it: no test "
                    "can tell the mistakes apart on every system."),
    Rule(name="orderly-end-is-not-gone",
         rule="EV_EOF with fflags 0 means 'finished sending', not 'gone': serve the rest, then close. An error in "
              "fflags means gone.",
         section="Step 1: orderly end or reset",
         mutants=("closes-at-eof", "ignores-eof", "reset-taken-for-orderly-end")),
    Rule(name="linux-reset-once",
         rule="On Linux the reset is reported once, in fflags; read() then returns 0. Do not wait for ECONNRESET.",
         section="How a connection ends: EV_EOF and fflags",
         unprovable="A server that waits for ECONNRESET still closes the connection when read() returns 0 or its "
                    "next write fails; no client can tell when, or why, the server closed its side."),
    Rule(name="ignore-sigpipe",
         rule="Ignore SIGPIPE; handle EPIPE and ECONNRESET from write() by closing that one connection.",
         section="Step 2: writing to a client that is gone",
         mutants=("dies-of-sigpipe",)),
    Rule(name="eintr-is-not-an-error",
         rule="EINTR from kevent() is not an error. Signal handlers set flags; the loop does the work.",
         section="Step 3: signals and EINTR",
         mutants=("eintr-is-fatal",)),
    Rule(name="look-at-the-flag-after-every-return",
         rule="Look at a signal handler's flag after every return of kevent(), not only after EINTR.",
         section="Step 3: signals and EINTR",
         unprovable="Only a signal that arrives while the loop is busy between two waits is missed by a loop that "
                    "looks only after EINTR, and no test can be sure to make a signal land there: the one moment "
                    "a test can choose, by waiting until the server blocks, is in the wait, which the signal "
                    "interrupts."),
    Rule(name="spare-descriptor-at-the-limit",
         rule="At the descriptor limit, turn connections away with a spare descriptor: returning spins, EV_CLEAR "
              "hangs, failing dies.",
         section="Step 4: out of descriptors",
         mutants=("spins-at-descriptor-limit", "dies-at-descriptor-limit")),
    Rule(name="take-the-spare-back",
         rule="After turning a client away, take the spare descriptor back: the next time at the limit needs it.",
         section="Step 4: out of descriptors",
         mutants=("spare-not-taken-back",)),
    Rule(name="limit-what-a-client-can-make-you-hold",
         rule="Limit what a client can make you hold: line length (even of a line that has not ended), and what "
              "you owe it.",
         section="Step 5: input limits",
         mutants=("limits-only-whole-lines", "no-back-pressure", "refuses-a-line-at-the-limit")),
    Rule(name="answers-in-order",
         rule="Each request is answered in order: requests that arrive while a GET is being sent wait for it.",
         section="The program you are finishing",
         mutants=("answers-out-of-order",)),
]
