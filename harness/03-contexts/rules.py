"""Lesson 03's rule register: every rule lessons/03-contexts/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="udata-on-every-change",
         rule="Every change replaces udata: pass the connection's address on each one, enable and disable "
              "included.",
         section="Step 1: a connection object, and its address in udata",
         mutants=("enable-without-udata",)),
    Rule(name="skip-stale-events",
         rule="An event of the batch for a connection closed earlier in the batch is stale: check closed_ before "
              "touching anything else.",
         section="Step 2: from the event to the connection",
         mutants=("dispatch-without-stale-check",)),
    Rule(name="free-after-the-batch",
         rule="Never free a connection while an event of the current batch may point at it; mark it, and free it "
              "after.",
         section="Step 5: close now, free later",
         mutants=("frees-connection-at-once",)),
    Rule(name="drop-queued-changes-on-close",
         rule="Closing a descriptor does not remove your own queued changes for it: drop them.",
         section="Step 5: close now, free later",
         mutants=("keeps-changes-of-closed-connections",)),
    Rule(name="write-interest-follows-output",
         rule="EVFILT_WRITE enabled only while output is pending: left on, it spins; never on, the output is "
              "stuck.",
         section="Step 4: write what the socket takes, and only then ask for EVFILT_WRITE",
         mutants=("leaves-write-interest-on", "never-enables-write-interest")),
    Rule(name="pending-output-means-full",
         rule="Output pending means the socket is full: append, and let EVFILT_WRITE say when to write.",
         section="Step 3: an output buffer per connection, and its limit",
         unprovable="Writing at once although output is pending only makes a write() that fails with EAGAIN: no "
                    "client can see the extra system call, and the order of the bytes is kept either way."),
    Rule(name="limit-what-a-client-is-owed",
         rule="A client that does not read must not cost unbounded memory: limit what it may be owed.",
         section="Step 3: an output buffer per connection, and its limit",
         mutants=("no-backlog-limit",)),
]
