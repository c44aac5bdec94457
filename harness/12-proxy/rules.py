"""Lesson 12's rule register: every rule lessons/12-proxy/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="writable-is-not-connected",
         rule="Writable is not connected: read the socket's error (SO_ERROR, and fflags with EV_EOF) before using an "
              "upstream connection.",
         section="Step 1: connecting without blocking",
         mutants=("ignores-connect-error",)),
    Rule(name="tell-the-client-why",
         rule="Tell the client why its upstream cannot be reached, in one line, then close.",
         section="Step 1: connecting without blocking",
         mutants=("refuses-silently", "ignores-connect-error")),
    Rule(name="drain-before-refusing",
         rule="Read the client's input before closing on it: a close with unread input is a reset, which can "
              "destroy the line in flight.",
         section="Step 1: connecting without blocking",
         unprovable="The reset destroys the line only when it reaches the client before the client has read the "
                    "line, a race no loopback test can force on every system: on loopback the line is usually read "
                    "first."),
    Rule(name="deadline-for-connect",
         rule="Give connect() a deadline of your own: a one-shot EVFILT_TIMER per pair, deleted when the answer "
              "comes (ENOENT expected).",
         section="Step 2: a deadline for connect()",
         mutants=("no-connect-timeout", "timer-leads-nowhere")),
    Rule(name="bounded-buffer-per-direction",
         rule="Bound each direction's buffer: EV_DISABLE the fast side's reading while the slow side's buffer is "
              "full, EV_ENABLE when it drains.",
         section="Step 3: flow control",
         mutants=("unbounded-buffering", "never-resumes-reading")),
    Rule(name="lowat-on-writes",
         rule="NOTE_LOWAT on a write filter wakes the proxy only for room worth writing into.",
         section="NOTE_LOWAT: waking for enough room",
         unprovable="A performance matter: without the low-water mark every byte still arrives, only with more "
                    "wake-ups and smaller writes, whose number depends on the kernel's acknowledgement pattern. "
                    "The bench's figures show the cost, not a test."),
    Rule(name="no-lowat-on-reads",
         rule="Never put NOTE_LOWAT on a read filter: a short request would wait for bytes that never come.",
         section="NOTE_LOWAT: waking for enough room",
         mutants=("lowat-on-reads",)),
    Rule(name="eof-ends-one-direction",
         rule="An EOF ends one direction: pass it on with shutdown(SHUT_WR) after the last byte, and close the pair "
              "only when both directions are finished.",
         section="Step 4: passing a half-close on",
         mutants=("closes-at-first-eof", "swallows-the-eof", "closes-before-both-directions-finish",
                  "shuts-both-directions", "forgets-the-direction-is-shut")),
    Rule(name="reset-ends-the-pair",
         rule="A reset ends the pair: close both sockets, and pass the reset on (SO_LINGER 0).",
         section="Step 5: when one side vanishes",
         mutants=("leaks-upstream", "ends-in-order-on-reset")),
    Rule(name="close-once-acknowledged",
         rule="EVFILT_EMPTY, where it exists, to close once every byte is acknowledged; where it does not, an "
              "orderly close, never with unread input.",
         section="Closing once everything is sent: EVFILT_EMPTY",
         unprovable="Linux's layer and macOS have no EVFILT_EMPTY, and where FreeBSD has it, closing at once loses "
                    "nothing in this proxy (both sources were read to their EOF, so the close is orderly and the "
                    "kernel sends the rest): no client can tell the two apart."),
    Rule(name="spare-descriptor-at-the-limit",
         rule="At the descriptor limit, turn clients away with lesson 05's spare descriptor: a pair costs two.",
         section="Out of descriptors",
         mutants=("spins-at-descriptor-limit",)),
]
