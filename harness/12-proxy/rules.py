"""Lesson 12's rules: what the lesson teaches, one sentence each, the README section that teaches it, and the
mutants that break it (kqlab.rules checks that each mutant exists and is caught by its test)."""
from kqlab.rules import Rule

RULES = [
    Rule(name="read-so-error-after-connect",
         rule="A socket that becomes writable after a non-blocking connect() has ended its attempt, not "
              "necessarily succeeded: read SO_ERROR, and tell the client why when it failed.",
         section="Step 1: connecting without blocking", mutants=("ignores-connect-error",)),
    Rule(name="connect-timeout",
         rule="Give up on an upstream that does not answer with an EVFILT_TIMER of the connect timeout.",
         section="Step 1: connecting without blocking", mutants=("no-connect-timeout",)),
    Rule(name="bounded-buffer-per-direction",
         rule="Read from a side only while the other side's buffer has room: EV_DISABLE its reading when the "
              "buffer is full, EV_ENABLE it when there is room again.",
         section="Step 2: the slower side sets the pace", mutants=("unbounded-buffer",)),
    Rule(name="write-interest-only-while-waiting",
         rule="Keep a socket's EVFILT_WRITE on only while bytes wait for it, with NOTE_LOWAT for fewer, larger "
              "wake-ups.",
         section="Step 2: the slower side sets the pace",
         unprovable="a proxy that keeps writing on wakes for every event of a level-triggered writable socket "
                    "only while it has clients; the idle test catches the case without clients on every system, "
                    "but no mutant of this solution differs only there"),
    Rule(name="half-close-passes-through",
         rule="Pass one side's end of stream on with shutdown(SHUT_WR) once its bytes are written, and end the "
              "session only when both directions have ended or one side fails.",
         section="Step 3: passing on the end of the stream", mutants=("closes-at-first-eof",)),
    Rule(name="end-closes-both",
         rule="Ending a session closes both of its descriptors, whichever side ended it.",
         section="Step 4: ending a session", mutants=("leaks-upstream",)),
    Rule(name="close-once-sent",
         rule="Close a socket that carries last words only once they are sent: EVFILT_EMPTY where the system "
              "supports it, the peer's end of stream with a timeout elsewhere.",
         section="Step 5: closing once everything is sent",
         unprovable="losing the last words takes a reset racing the bytes in flight, which loopback delivers "
                    "before any reset can overtake them"),
]
