"""Lesson 06's mutants: the solution with one classic mistake put back (see docs/mistakes.md).
`./kqlab test` builds each and checks that the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="watches-without-sig-ign",
        mistake="EVFILT_SIGNAL registered without SIG_IGN first: the queue hears SIGHUP, and the kernel's default "
                "action for it still ends the process.",
        caught_by="test_sighup_reloads_greeting_for_new_clients",
        file="signal_server.cpp",
        replacements=(("    std::signal(number, SIG_IGN);\n",
                       "    // MUTANT: no SIG_IGN: the default action still happens\n"),),
    ),
    Mutant(
        name="stops-in-the-signal-handler",
        mistake="The work done in a signal handler: SIGTERM's handler ends the process at once, and the replies "
                "in flight are lost.",
        caught_by="test_sigterm_finishes_replies_in_flight",
        file="signal_server.cpp",
        replacements=(("    std::signal(number, SIG_IGN);\n",
                       "    std::signal(number, number == SIGHUP ? SIG_IGN : [](int) { _exit(0); });  // MUTANT\n"),),
    ),
    Mutant(
        name="signal-registered-oneshot",
        mistake="The signal registered with EV_ONESHOT: the first SIGHUP is heard, every later one silently ignored.",
        caught_by="test_repeated_signals_are_counted",
        file="signal_server.cpp",
        replacements=(("    watch(static_cast<std::uintptr_t>(number), EVFILT_SIGNAL, EV_ADD);",
                       "    watch(static_cast<std::uintptr_t>(number), EVFILT_SIGNAL, EV_ADD | EV_ONESHOT);"
                       "  // MUTANT"),),
    ),
    Mutant(
        name="slow-work-in-the-loop",
        mistake="A call that blocks made in the event loop: while a slow request is worked on, every client waits.",
        caught_by="test_fifty_slow_requests_keep_echo_fast",
        file="signal_server.cpp",
        replacements=(("    ++client.jobs_;\n    worker_.submit(Job{fd, client.serial_, number, 0});\n",
                       "    static_cast<void>(fd);  // MUTANT: does the slow part right here, in the loop\n"
                       "    client.unsent_ += \"square \" + std::to_string(number) + \" = \" + "
                       "std::to_string(slow_square(number)) + \"\\n\";\n"),),
    ),
    Mutant(
        name="result-without-wake-up",
        mistake="The worker queues its result but never triggers the user event: the loop sleeps on, and the "
                "result waits for some unrelated event to wake it.",
        caught_by="test_fifty_slow_requests_keep_echo_fast",
        file="signal_server.cpp",
        replacements=(("  if (kevent(kq_, &trigger, 1, nullptr, 0, nullptr) == -1) kqlab::fail(",
                       "  if (false) kqlab::fail(  // MUTANT: never triggers\n"),),
    ),
    Mutant(
        name="counts-signal-events",
        mistake="Signals counted per event (++) instead of by event.data: signals that arrive while the loop is "
                "busy come as one event, and all but one are lost.",
        caught_by="test_signals_that_pile_up_are_all_counted",
        file="signal_server.cpp",
        replacements=(("    reloads_ += event.data;\n",
                       "    ++reloads_;  // MUTANT: one per event, whatever data says\n"),),
    ),
    Mutant(
        name="one-result-per-wake-up",
        mistake="One worker result taken per wake-up: triggers merge, so results finished while the loop was busy "
                "wait for a wake-up that never comes.",
        caught_by="test_results_that_pile_up_are_all_taken",
        file="signal_server.cpp",
        replacements=(("  return std::exchange(done_, {});\n",
                       "  std::deque<Job> one;  // MUTANT: one result per wake-up\n"
                       "  if (!done_.empty()) {\n"
                       "    one.push_back(done_.front());\n"
                       "    done_.pop_front();\n"
                       "  }\n"
                       "  return one;\n"),),
    ),
    Mutant(
        name="user-event-by-udata",
        mistake="The user event recognised by its udata: a trigger is a change, and a change replaces udata, so "
                "after the first trigger the event is not recognised, and the results it announces are never "
                "delivered.",
        caught_by="test_fifty_slow_requests_keep_echo_fast",
        file="signal_server.cpp",
        replacements=(("  watch(kResultsReady, EVFILT_USER, EV_ADD | EV_CLEAR);\n",
                       "  watch(kResultsReady, EVFILT_USER, EV_ADD | EV_CLEAR, kResultsReady);  // MUTANT: a udata\n"),
                      ("  } else if (event.filter == EVFILT_USER) {\n",
                       "  } else if (event.filter == EVFILT_USER &&\n"
                       "             event.udata == udata_of(kResultsReady)) {  // MUTANT: by udata\n")),
    ),
    Mutant(
        name="stop-keeps-reading",
        mistake="The stop leaves the clients' EVFILT_READ registered: their new requests are ignored, but their "
                "level-triggered read events fire on every wait, and the loop spins until the last reply is out.",
        caught_by="test_stopping_server_takes_nothing_new",
        file="signal_server.cpp",
        replacements=(("      watch(fd, EVFILT_READ, EV_DELETE, client.serial_);  // hear no new requests; flush() closes "
                       "when done\n", "      // MUTANT: still registered for reading\n"),),
    ),
    Mutant(
        name="listener-open-while-stopping",
        mistake="The listening socket left open by the stop: new clients are still accepted and greeted by a "
                "server on its way out.",
        caught_by="test_stopping_server_takes_nothing_new",
        file="signal_server.cpp",
        replacements=(("  close(listener_);\n  listener_ = -1;\n", "  // MUTANT: the listening socket stays open\n"),),
    ),
    Mutant(
        name="second-sigterm-stops-again",
        mistake="No guard against a second stop: a second SIGTERM deletes registrations already deleted, and the "
                "server dies on the ENOENT with replies still owed.",
        caught_by="test_stopping_server_takes_nothing_new",
        file="signal_server.cpp",
        replacements=(("  if (stopping_) return;  // a second SIGTERM while stopping: already on it\n",
                       "  // MUTANT: a second SIGTERM stops all over again\n"),),
    ),
    Mutant(
        name="result-by-descriptor-alone",
        mistake="A result matched to its client by descriptor number alone: a newcomer that got the number of a "
                "client that left receives that client's squares.",
        caught_by="test_results_of_a_client_gone_reach_nobody",
        file="signal_server.cpp",
        replacements=(("if (found == clients_.end() || found->second.serial_ != job.serial_) continue;",
                       "if (found == clients_.end()) continue;  /* MUTANT: no serial check */"),),
    ),
]
