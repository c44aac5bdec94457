"""Lesson 02's rule register: every rule lessons/02-registration/README.md teaches, with the mutants that break it
(see mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md
is made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="accept-until-eagain",
         rule="Under EV_CLEAR, accept until EAGAIN: connections left in the queue are not reported again.",
         section="Step 3: accept until EAGAIN",
         mutants=("accepts-one-per-event",)),
    Rule(name="read-until-eagain",
         rule="Under EV_CLEAR, read until EAGAIN: bytes left in the buffer are not reported again.",
         section="Step 4: read until EAGAIN",
         mutants=("reads-once-per-event",)),
    Rule(name="write-until-eagain",
         rule="Under EV_CLEAR, write until EAGAIN or nothing is left.",
         section="Edge-triggered writing",
         unprovable="A non-blocking write() takes all the room the send buffer has, so after a partial write the "
                    "next write() fails with EAGAIN on every kernel the course runs on: a server that stops after "
                    "one write leaves nothing behind that a test could see."),
    Rule(name="eagain-means-full-not-gone",
         rule="write() failing with EAGAIN means the socket is full for now: keep what is left for the next "
              "EVFILT_WRITE event; only other errors (EPIPE, ECONNRESET) mean the client is gone.",
         section="Edge-triggered writing",
         mutants=("closes-when-the-socket-is-full",)),
    Rule(name="eof-once-under-ev-clear",
         rule="EV_EOF under EV_CLEAR is reported once: meet it as read() returning 0.",
         section="Step 4: read until EAGAIN",
         mutants=("ignores-end-of-stream",)),
    Rule(name="edge-triggered-write-interest",
         rule="EVFILT_WRITE registered for good must be edge-triggered (EV_CLEAR): level-triggered, it fires on "
              "every wait and the loop spins.",
         section="Edge-triggered writing",
         mutants=("level-triggered-write-interest",)),
    Rule(name="changes-ride-in-the-wait",
         rule="Changes ride in the wait: handlers collect them, and the loop's one kevent() call hands them over.",
         section="Changes ride in the wait",
         mutants=("registers-in-separate-calls",)),
    Rule(name="clear-changes-after-the-call",
         rule="Clear the changelist after the call: never hand a change over twice.",
         section="Step 2: hand the changes to the wait",
         mutants=("never-clears-changes",)),
    Rule(name="clear-changes-even-on-eintr",
         rule="Clear the changelist even when the call failed with EINTR: kqueue(2) applied the changes before "
              "the signal interrupted the wait.",
         section="Step 2: hand the changes to the wait",
         unprovable="Lesson 02's server catches no signal, so its wait never ends with EINTR (a stop and continue "
                    "never interrupts kevent() on BSD, and kqlab's Linux layer hides it too); and a loop that "
                    "cleared its list only on success would hand the same EV_ADD changes again at once, with "
                    "nothing done between, which changes nothing a client can see."),
    Rule(name="room-for-one-entry-per-change",
         rule="Leave room in the eventlist for one entry per change.",
         section="Step 2: hand the changes to the wait",
         unprovable="Only failed changes take room in the eventlist, so the rule shows only when more changes fail "
                    "in one call than the eventlist holds (64 here); no server of this lesson makes changes that "
                    "can fail, and no test can make 64 fail at once on every system."),
    Rule(name="error-entries-are-not-events",
         rule="A failed change comes back in the batch as an EV_ERROR entry: check that bit before treating an "
              "entry as an event.",
         section="Where a failed change is reported",
         mutants=("treats-error-entries-as-events",)),
    Rule(name="no-receipt-in-the-wait",
         rule="EV_RECEIPT is for registering now; in the wait it stops the waiting.",
         section="Where a failed change is reported",
         mutants=("receipts-in-the-wait",)),
    Rule(name="check-receipts-when-registering-now",
         rule="Registering now, read every receipt, and stop, naming the change, if one carries an errno.",
         section="Step 1: register now, and read every receipt",
         unprovable="Lesson 02 registers only its listening socket now, at startup, where nothing can make the "
                    "registration fail; lesson 01's test_failed_registration_is_not_ignored proves the rule on a "
                    "client's registration."),
    Rule(name="changes-replace-udata-flags-fixed",
         rule="Every change replaces udata; behaviour flags are fixed at creation.",
         section="Pitfalls, in short",
         unprovable="Lesson 02's server makes each registration once, with its udata and flags, and never changes "
                    "it, so no mistake of this server can break the rule; lesson 03, which enables and disables, "
                    "proves its udata half (enable-without-udata)."),
]
