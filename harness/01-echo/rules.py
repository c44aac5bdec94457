"""Lesson 01's rule register: every rule lessons/01-echo/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="check-every-receipt",
         rule="Check every registration's receipt, with flags & EV_ERROR, and stop (naming the change) when data "
              "holds an errno.",
         section="Step 1: register, and read the receipt",
         mutants=("ignores-failed-registration",)),
    Rule(name="error-bit-not-equality",
         rule="Test the bit, receipt.flags & EV_ERROR, never receipt.flags == EV_ERROR.",
         section="Step 1: register, and read the receipt",
         unprovable="FreeBSD and kqlab's Linux layer return exactly EV_ERROR, so the comparison works there; only "
                    "macOS, which adds the change's own flags, makes it miss an error."),
    Rule(name="non-blocking-sockets",
         rule="Non-blocking sockets only: one blocking call stops every client.",
         section="Step 2: accept every waiting client",
         mutants=("blocking-client-sockets",)),
    Rule(name="read-before-closing-at-eof",
         rule="EV_EOF can come with data still waiting: read it before closing.",
         section="Step 3: read, and what EV_EOF means",
         mutants=("closes-at-eof-dropping-data",)),
    Rule(name="close-a-finished-client",
         rule="EV_EOF with nothing left to read means the client is done: close it once all it is owed is sent, "
              "or its level-triggered EOF fires on every wait.",
         section="Step 3: read, and what EV_EOF means",
         mutants=("ignores-eof",)),
    Rule(name="stop-reading-a-finished-client",
         rule="A finished client still owed output: delete its EVFILT_READ, or its level-triggered EV_EOF fires on "
              "every wait.",
         section="Step 3: read, and what EV_EOF means",
         mutants=("keeps-reading-a-finished-client",)),
    Rule(name="a-half-closed-client-still-reads",
         rule="A client that is done sending still gets everything it is owed before the close.",
         section="Step 3: read, and what EV_EOF means",
         mutants=("closes-at-end-of-stream-owing-output",)),
    Rule(name="partial-writes",
         rule="A write() may take only part of what you give it: keep the rest, and write it when EVFILT_WRITE says "
              "there is room.",
         section="Step 4: write back, and partial writes",
         mutants=("stops-at-first-partial-write",)),
    Rule(name="write-interest-only-while-pending",
         rule="EVFILT_WRITE only while output is pending: left on, it spins; never turned on, the output is stuck.",
         section="Step 4: write back, and partial writes",
         mutants=("leaves-write-interest-on", "never-registers-write-interest")),
    Rule(name="close-removes-registrations",
         rule="close() removes a descriptor's registrations; forgetting it leaks the descriptor.",
         section="Step 5: close, and stale events",
         mutants=("forgets-to-close",)),
    Rule(name="stale-events",
         rule="A batch can hold events made stale by an earlier handler: look the client up, and compare udata.",
         section="Step 5: close, and stale events",
         unprovable="A stale event that harms lesson 01's server is a client's EVFILT_READ after its own "
                    "EVFILT_WRITE handler closed it and an accept() between them reused the number. kqlab's Linux "
                    "layer reports a descriptor's read and write events side by side, read first, so nothing can "
                    "fall between them there; native kqueue orders them by activation, which no test can choose. "
                    "Lesson 03 proves the same rule where one client's handler closes another "
                    "(test_stale_event_for_a_reused_descriptor)."),
    Rule(name="one-client-fails-alone",
         rule="An error on one connection (ECONNRESET, EPIPE) closes that client only; it never ends the server.",
         section="When a client vanishes",
         mutants=("write-error-is-fatal",)),
]
