"""Lesson 04's mutants: the solution with one classic timer mistake put back (see
docs/mistakes.md). `./kqlab test` builds each and checks that the test named in caught_by fails against it (see
kqlab/mutants.py)."""
from kqlab.mutants import Mutant

ARM = "  EV_SET(&change, ident, EVFILT_TIMER, EV_ADD | (repeat ? 0 : EV_ONESHOT), 0, ms, &conn);\n"

MUTANTS = [
    Mutant(
        name="timer-in-whole-seconds",
        mistake="Wrong timer unit: milliseconds turned into whole seconds (NOTE_SECONDS, ms / 1000), so most "
                "replies come early and out of order.",
        caught_by="test_after_replies_in_deadline_order",
        file="timer_server.cpp",
        replacements=((ARM, "  EV_SET(&change, ident, EVFILT_TIMER, EV_ADD | (repeat ? 0 : EV_ONESHOT), NOTE_SECONDS, "
                            "ms / 1000, &conn);  // MUTANT\n"),),
    ),
    Mutant(
        name="one-shot-timers-repeat",
        mistake="EV_ONESHOT forgotten: a timer meant to fire once fires every period until deleted, and nobody "
                "deletes it.",
        caught_by="test_no_timer_or_descriptor_left_behind",
        file="timer_server.cpp",
        replacements=((ARM, "  EV_SET(&change, ident, EVFILT_TIMER, EV_ADD | (repeat ? 0 : 0), 0, ms, &conn);  // MUTANT\n"),),
    ),
    Mutant(
        name="one-tick-per-event",
        mistake="A timer event taken as one expiration: the count in data is ignored, so ticks missed during a "
                "stall are sent late, one per period, instead of at once.",
        caught_by="test_every_catches_up_after_a_stall",
        file="timer_server.cpp",
        replacements=(("std::min<std::int64_t>(event.data, job.ticks_total - job.ticks_sent)",
                       "std::min<std::int64_t>(1, job.ticks_total - job.ticks_sent) /* MUTANT */"),),
    ),
    Mutant(
        name="periodic-timer-left-running",
        mistake="A periodic timer not deleted after its last tick: it fires for nothing, forever.",
        caught_by="test_no_timer_or_descriptor_left_behind",
        file="timer_server.cpp",
        replacements=(("    struct kevent change;\n    EV_SET(&change, event.ident, EVFILT_TIMER, EV_DELETE, 0, 0, &conn);\n"
                       "    must(change);\n", "    // MUTANT: the periodic timer is not deleted\n"),),
    ),
    Mutant(
        name="idle-timer-ignores-activity",
        mistake="The idle timeout counted from the connection's start, not from its last words: a client that "
                "talks is closed all the same.",
        caught_by="test_activity_postpones_idle_close",
        file="timer_server.cpp",
        replacements=(("  if (silent >= idle_) {\n", "  if (silent >= idle_ || true) {  // MUTANT\n"),),
    ),
    Mutant(
        name="sleeps-instead-of-a-timer",
        mistake="A blocking wait inside the loop: AFTER sleeps, and every other client waits with it.",
        caught_by="test_echo_stays_responsive_while_timers_pend",
        file="timer_server.cpp",
        replacements=(("    add_job(conn, ms, Job{std::string(rest) + \"\\n\", 0, 0});\n",
                       "    usleep(static_cast<useconds_t>(ms * 1000));  // MUTANT: the whole server sleeps\n"
                       "    send(conn, std::string(rest) + \"\\n\");\n"),),
    ),
    Mutant(
        name="timers-outlive-their-connection",
        mistake="close() taken to end everything: the connection's timers are never deleted, and fire later "
                "with a pointer to a freed connection.",
        caught_by="test_disconnect_with_timers_pending",
        file="timer_server.cpp",
        replacements=(("  for (const std::uintptr_t ident : timers) {\n",
                       "  timers.clear();  // MUTANT: cancels nothing\n  for (const std::uintptr_t ident : timers) {\n"),),
    ),
    Mutant(
        name="frees-connection-mid-batch",
        mistake="The connection freed as soon as it is closed, while later events of the same batch still point "
                "at it.",
        caught_by="test_timer_and_close_in_one_batch",
        file="timer_server.cpp",
        replacements=(("  closed_.push_back(std::move(found->second));\n", "  // MUTANT: freed right away\n"),),
    ),
    Mutant(
        name="expected-enoent-is-fatal",
        mistake="Every error in a receipt taken as fatal, even ENOENT for a one-shot timer that has already fired "
                "and deleted itself.",
        caught_by="test_idle_connection_closed_on_time",
        file="timer_server.cpp",
        replacements=(("error != 0 && error != ENOENT", "error != 0 /* MUTANT */"),),
    ),
    Mutant(
        name="one-ident-for-every-job",
        mistake="One timer ident for every job: adding an ident in use restarts that timer, so each AFTER or EVERY "
                "replaces the one before, which never fires.",
        caught_by="test_after_replies_in_deadline_order",
        file="timer_server.cpp",
        replacements=(("  const std::uintptr_t ident = next_timer_++;\n",
                       "  const std::uintptr_t ident = 1'000'000;  // MUTANT: the same ident for every job\n"),),
    ),
    Mutant(
        name="idle-rearmed-for-the-full-period",
        mistake="The idle timer re-armed for the whole idle time instead of what is left of it: a client that "
                "spoke just after the timer was armed is closed up to twice the idle time after its last words.",
        caught_by="test_idle_timer_rearmed_for_what_is_left",
        file="timer_server.cpp",
        replacements=(("  start_timer(conn, conn.idle_timer_, (idle_ - silent).count(), false);\n",
                       "  start_timer(conn, conn.idle_timer_, idle_.count(), false);  // MUTANT: the whole period\n"),),
    ),
]
