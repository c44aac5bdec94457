"""Lesson 11's rules: what the lesson teaches, one sentence each, the README section that teaches it, and the
mutants that break it (kqlab.rules checks that each mutant exists and is caught by its test)."""
from kqlab.rules import Rule

RULES = [
    Rule(name="dispatch-shared-registrations",
         rule="On a queue that several threads wait on, register each connection with EV_DISPATCH, so that one "
              "thread at a time hears of it.",
         section="Why EV_DISPATCH", mutants=("no-dispatch", "write-without-dispatch")),
    Rule(name="re-enable-when-done",
         rule="Re-enable a dispatched registration only when the handler is done with the connection, with the "
              "same udata.",
         section="Step 2: re-enable when done", mutants=("enables-before-done", "enable-without-udata")),
    Rule(name="enable-what-it-waits-on",
         rule="Re-enable the filter the connection now waits on: EVFILT_WRITE when its answers wait for room, "
              "EVFILT_READ otherwise.",
         section="Step 2: re-enable when done", mutants=("always-waits-to-read",)),
    Rule(name="restart-the-timeout",
         rule="Restart the connection's timeout each time it is re-enabled: it closes a connection idle for that "
              "long, not one that has lived that long.",
         section="Step 2: re-enable when done", mutants=("timeout-never-restarted",)),
    Rule(name="hold-what-you-serve",
         rule="An event names its connection by a number that is never reused, and a thread holds a reference to "
              "the connection while it works on it, so that closing it elsewhere never frees it under the thread.",
         section="Step 3: closing a connection another thread holds", mutants=("frees-a-held-connection",)),
    Rule(name="one-event-per-call",
         rule="Threads sharing a queue take one event per kevent() call, so that no event waits behind another "
              "in a busy thread's batch.",
         section="One queue, many threads",
         unprovable="a thread that takes a batch delays the batch's other events only while the other threads "
                    "are busy too; no loopback test can make that delay certain rather than likely"),
    Rule(name="stop-event-stays-triggered",
         rule="A user event that must stop every worker is registered without EV_CLEAR, so that it stays "
              "triggered for all of them.",
         section="Step 4: stopping the workers", mutants=("stop-reaches-one-worker",)),
    Rule(name="share-the-port",
         rule="One listening socket per thread shares its port through SO_REUSEPORT_LB on FreeBSD and "
              "SO_REUSEPORT on Linux, set before bind().",
         section="Step 5: many listening sockets on one port", mutants=("port-not-shared",)),
    Rule(name="register-reading-last",
         rule="Register a new connection's writing and timeout before its reading: once reading is registered, "
              "another thread may serve the connection and enable writing, which must exist by then.",
         section="Step 1: one connection, one thread at a time",
         unprovable="The window is between two changes of one kevent() call: another thread must take the read "
                     "event, serve the request and re-enable writing inside it. No loopback client can aim at "
                     "that instant, so a test could only make the failure possible, never certain."),
]
