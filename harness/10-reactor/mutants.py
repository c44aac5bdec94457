"""Lesson 10's mutants: the reactor with one classic mistake put back (see docs/mistakes.md).
`./kqlab test` builds each and checks that the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="level-triggered-registration",
        mistake="Descriptors registered level-triggered: the interest in writing, on for good, reports a writable "
                "socket on every wait, and the loop never sleeps.",
        caught_by="test_unit_registration",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("  EV_SET(&changes[0], fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, descriptor);\n",
                       "  EV_SET(&changes[0], fd, EVFILT_READ, EV_ADD, 0, 0, descriptor);  // MUTANT: no EV_CLEAR\n"),
                      ("  EV_SET(&changes[1], fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, descriptor);\n",
                       "  EV_SET(&changes[1], fd, EVFILT_WRITE, EV_ADD, 0, 0, descriptor);  // MUTANT: no EV_CLEAR\n")),
    ),
    Mutant(
        name="waits-without-trying",
        mistake="Edge-triggered without a speculative attempt: an operation started after its report came and went "
                "waits for a report that never comes.",
        caught_by="test_unit_speculative",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("  if (queue.empty() && operation->perform(fd)) {\n",
                       "  if (false) {  // MUTANT: never tries first, always waits for a report\n"),),
    ),
    Mutant(
        name="calls-back-from-inside",
        mistake="A handler called from inside the call that started its operation, when it finishes at once: the "
                "caller is re-entered half-way through its own work.",
        caught_by="test_unit_speculative",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("    completed_.push_back(std::move(operation));  // its handler runs later, from the loop, "
                       "never from in here\n",
                       "    operation->complete();  // MUTANT: calls back at once\n"),),
    ),
    Mutant(
        name="jumps-the-queue",
        mistake="A speculative attempt made while operations of the same direction wait: a second write goes out "
                "before the rest of the first.",
        caught_by="test_unit_ordering",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("  if (queue.empty() && operation->perform(fd)) {\n",
                       "  if (operation->perform(fd)) {  // MUTANT: tries even behind waiting operations\n"),),
    ),
    Mutant(
        name="one-operation-per-report",
        mistake="Edge-triggered without draining: one report finishes one operation, and the others wait for a "
                "report that never comes.",
        caught_by="test_unit_ordering",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("  while (!queue.empty() && queue.front()->perform(descriptor->fd_)) {\n",
                       "  if (!queue.empty() && queue.front()->perform(descriptor->fd_)) {  // MUTANT: just one\n"),),
    ),
    Mutant(
        name="calls-back-during-the-batch",
        mistake="Handlers run while the batch is being handled: one that closes a descriptor frees the state a later "
                "event of the batch points at (use after free).",
        caught_by="test_unit_batch",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("    completed_.push_back(std::move(queue.front()));\n    queue.pop_front();\n",
                       "    std::unique_ptr<Operation> operation = std::move(queue.front());\n"
                       "    queue.pop_front();\n"
                       "    operation->complete();  // MUTANT: calls back in the middle of the batch\n"),),
    ),
    Mutant(
        name="close-drops-handlers",
        mistake="close() forgets the operations still waiting: their handlers are never called, and whoever waits "
                "for them (to free a buffer, to clean up) waits forever.",
        caught_by="test_unit_cancellation",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("      operation->error_ = kAborted;\n      completed_.push_back(std::move(operation));\n",
                       "      operation.reset();  // MUTANT: dropped, never called\n"),),
    ),
    Mutant(
        name="sleeps-through-timers",
        mistake="The timers do not shorten kevent()'s timeout: an idle loop sleeps past their deadlines.",
        caught_by="test_unit_timers",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("    if (!limit || until < *limit) limit = until;\n",
                       "    static_cast<void>(until);  // MUTANT: the timers do not shorten the wait\n"),),
    ),
    Mutant(
        name="user-event-never-reset",
        mistake="The user event registered without EV_CLEAR: after the first trigger it stays on, and every wait "
                "returns at once.",
        caught_by="test_unit_post",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("  EV_SET(&change, kWakeUp, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);\n",
                       "  EV_SET(&change, kWakeUp, EVFILT_USER, EV_ADD, 0, 0, nullptr);  // MUTANT: no EV_CLEAR\n"),),
    ),
    Mutant(
        name="post-without-wake-up",
        mistake="post() queues the handler but does not trigger the user event: a loop asleep in kevent() never "
                "hears of it.",
        caught_by="test_unit_threads",
        file="reactor.cpp",
        program="unit_tests",
        replacements=(("  if (was_empty) wake();\n",
                       "  static_cast<void>(was_empty);  // MUTANT: no wake-up\n"),),
    ),
    Mutant(
        name="stops-accepting-at-the-limit",
        mistake="EMFILE on accept() taken as the end of accepting: the server serves the clients it has, and no "
                "other, ever again.",
        caught_by="test_descriptor_limit_flood",
        file="echo/echo_server.cpp",
        replacements=(("      ::close(spare);\n      spare = -1;\n      accept_clients(reactor, listener);\n",
                       "      // MUTANT: accepts no more\n"
                       "      std::fprintf(stderr, \"accept: %s\\n\", std::strerror(error));\n"),),
        program="echo",
    ),
    Mutant(
        name="retries-at-once-at-the-limit",
        mistake="EMFILE on accept() answered by accepting again at once: the connection is still waiting, so the "
                "accept fails again at once, and the loop spins at 100% CPU for as long as the limit lasts.",
        caught_by="test_descriptor_limit_flood",
        file="echo/echo_server.cpp",
        replacements=(("      ::close(spare);\n      spare = -1;\n      accept_clients(reactor, listener);\n",
                       "      accept_clients(reactor, listener);  // MUTANT: again, at once, without a spare\n"),),
        program="echo",
    ),
    Mutant(
        name="timer-ignores-max-wait",
        mistake="The next timer's deadline replaces the caller's limit even when it is later: the loop sleeps "
                "past the wait it was asked for.",
        caught_by="test_unit_timers",
        file="reactor.cpp",
        replacements=(("    if (!limit || until < *limit) limit = until;", "    limit = until;  // MUTANT"),),
        program="unit_tests",
    ),
    Mutant(
        name="past-deadline-negative-timeout",
        mistake="A deadline already past gives a negative timeout, which kevent() refuses.",
        caught_by="test_unit_timers",
        file="reactor.cpp",
        replacements=(("std::max(*limit, Clock::duration::zero())", "*limit /* MUTANT */"),),
        program="unit_tests",
    ),
    Mutant(
        name="abort-without-error",
        mistake="Operations cancelled by close() finish as if they had succeeded.",
        caught_by="test_unit_cancellation",
        file="reactor.cpp",
        replacements=(("      operation->error_ = kAborted;\n", "      // MUTANT: no error\n"),),
        program="unit_tests",
    ),
    Mutant(
        name="close-keeps-the-descriptor",
        mistake="close() closes the socket but keeps its Descriptor: a later socket with the same number finds "
                "the old one's state.",
        caught_by="test_chat_member_leaving_disturbs_nobody",
        file="reactor.cpp",
        replacements=(("  descriptors_.erase(found);\n", "  // MUTANT: kept\n"),),
        program="chat",
    ),
    Mutant(
        name="registers-reading-only",
        mistake="Only EVFILT_READ registered: a write that cannot finish at once waits for a report that never "
                "comes.",
        caught_by="test_unit_operations",
        file="reactor.cpp",
        replacements=(("  EV_SET(&changes[1], fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, descriptor);",
                       "  EV_SET(&changes[1], fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, descriptor);  // MUTANT"),),
        program="unit_tests",
    ),
]
