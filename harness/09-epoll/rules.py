"""Lesson 09's rule register: every rule lessons/09-epoll/README.md teaches, with the mutants that break it (see
mutants.py) or the reason no portable test can provoke it. Checked by harness/test_rules.py; docs/mistakes.md is
made from it."""
from kqlab.rules import Rule

RULES = [
    Rule(name="edge-triggered-drains",
         rule="Edge-triggered: read, and accept, until EAGAIN. What is left behind is not reported again.",
         section="Edge-triggered: drain to EAGAIN",
         mutants=("reads-once-per-edge", "accepts-once-per-edge")),
    Rule(name="filters-are-not-bits",
         rule="kqueue filters are numbers, epoll conditions are bits: EVFILT_READ | EVFILT_WRITE is EVFILT_READ.",
         section="kqueue and epoll, side by side",
         mutants=("ors-filters-like-epoll-bits",)),
    Rule(name="ev-add-modifies-epoll-ctl-add-does-not",
         rule="EV_ADD modifies; EPOLL_CTL_ADD on a registered descriptor fails with EEXIST: change it with "
              "EPOLL_CTL_MOD, giving the whole mask and the data again.",
         section="Step 4: changing the mask",
         mutants=("adds-instead-of-modifying",)),
    Rule(name="end-of-stream-is-not-an-error",
         rule="EV_EOF and EPOLLRDHUP are not errors: read what came with them. Errors are in fflags, or behind "
              "EPOLLERR in SO_ERROR.",
         section="End of stream and errors",
         mutants=("takes-ev-eof-for-an-error", "takes-hangup-for-an-error")),
    Rule(name="epoll-data-names-the-descriptor",
         rule="An epoll event carries no descriptor: put it in data.",
         section="Step 5: what an epoll_event says",
         mutants=("epoll-data-without-descriptor",)),
    Rule(name="drop-changes-for-a-closed-descriptor",
         rule="A change collected for the next wait must go when its descriptor is closed first.",
         section="Closing, and fork",
         mutants=("keeps-changes-for-closed-descriptors",)),
    Rule(name="hand-out-what-does-not-fit",
         rule="The eventlist needs room for one entry per change, whatever the caller's batch: entries that do not "
              "fit this time are handed out by the next wait(), before the kernel is asked again.",
         section="Step 1: changes ride with the wait",
         mutants=("drops-what-does-not-fit",)),
    Rule(name="queue-after-fork",
         rule="fork(): a kqueue is not inherited, an epoll instance is shared. Create the queue after forking.",
         section="Closing, and fork",
         unprovable="Lesson 09's programs never fork, so no mistake of theirs can break the rule; lesson 07 proves "
                    "its kqueue half (worker-uses-the-supervisors-queue)."),
    Rule(name="turn-away-at-the-descriptor-limit",
         rule="At the descriptor limit, turn away the connections that do not fit (lesson 05's spare descriptor): "
              "edge-triggered, a listener that returns at EMFILE is not reported again for those waiting.",
         section="Edge-triggered: drain to EAGAIN",
         mutants=("stops-accepting-at-the-limit", "stops-accepting-at-the-limit-on-epoll")),
]
