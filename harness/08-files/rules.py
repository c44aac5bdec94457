"""Lesson 08's rule register: every rule lessons/08-files/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="read-0-is-not-closed",
         rule="read() returning 0 on a file means 'nothing more yet', not 'closed'.",
         section="Step 2: read what was appended",
         mutants=("stops-at-end-of-file",)),
    Rule(name="a-knote-follows-the-file",
         rule="A knote follows the file (the descriptor), not the name. To follow a name, watch its directory and "
              "compare st_dev and st_ino.",
         section="Step 4: follow the name through a rotation",
         mutants=("never-reopens", "reopens-the-same-file")),
    Rule(name="finish-the-old-file-first",
         rule="On a rotation, read the old file to its end before switching: lines are still written to it.",
         section="Step 4: follow the name through a rotation",
         mutants=("reads-the-path-not-the-descriptor", "skips-the-rest-of-the-old-file")),
    Rule(name="the-old-files-last-line-counts",
         rule="On a rotation, broadcast the old file's last line even if it never got its newline: it is part of "
              "the log.",
         section="Step 4: follow the name through a rotation",
         mutants=("rotation-drops-the-unfinished-line",)),
    Rule(name="a-new-log-from-its-start",
         rule="Follow the new log from its start: what it holds when you notice it is part of the log.",
         section="Step 4: follow the name through a rotation",
         mutants=("new-log-from-its-end",)),
    Rule(name="close-the-old-file",
         rule="Close the old file once it is read to its end: its knotes go with it, and a rotation costs no "
              "descriptor.",
         section="Step 4: follow the name through a rotation",
         mutants=("keeps-the-old-file-open",)),
    Rule(name="notice-a-truncation",
         rule="A file shorter than your offset was truncated: start again from 0. Nothing tells you but the size.",
         section="Step 3: notice a truncation",
         mutants=("ignores-truncation", "truncation-off-by-one", "truncation-skips-to-the-end")),
    Rule(name="a-truncation-cuts-the-unfinished-line",
         rule="After a truncation, drop the unfinished line read before it: its end was cut off.",
         section="Step 3: notice a truncation",
         mutants=("truncation-keeps-the-partial-line",)),
    Rule(name="vnode-needs-ev-clear",
         rule="EVFILT_VNODE needs EV_CLEAR, or it fires forever.",
         section="Step 1: watch the descriptor",
         mutants=("vnode-without-clear",)),
    Rule(name="read-brings-you-back",
         rule="Watch EVFILT_READ, level-triggered, beside EVFILT_VNODE: after a bounded read it brings the follower "
              "back for the rest, with no further write to the file.",
         section="Step 1: watch the descriptor",
         mutants=("vnode-only",)),
    Rule(name="a-write-is-not-a-line",
         rule="A write is not a line: keep the unfinished one.",
         section="Step 2: read what was appended",
         mutants=("takes-a-write-for-a-line",)),
]
