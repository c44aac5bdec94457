"""Lesson 02's mutants: the solution with one classic mistake put back (see docs/mistakes.md).
`./kqlab test` builds each and checks that the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="accepts-one-per-event",
        mistake="Edge-triggered listener, one accept() per event: a burst of connects is half served, the rest "
                "wait in the listen queue for an event that never comes.",
        caught_by="test_burst_of_connects_all_served",
        file="echo_server.cpp",
        replacements=(("    change(fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, serial);\n  }\n",
                       "    change(fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, serial);\n"
                       "    return;  // MUTANT: one connection per event\n  }\n"),),
    ),
    Mutant(
        name="reads-once-per-event",
        mistake="Edge-triggered socket, one read() per event: bytes left in the buffer wait for an event that "
                "never comes, and the transfer stalls.",
        caught_by="test_upload_of_one_mebibyte",
        file="echo_server.cpp",
        replacements=(("      client.unsent_.append(buffer, static_cast<std::size_t>(got));\n",
                       "      client.unsent_.append(buffer, static_cast<std::size_t>(got));\n"
                       "      break;  // MUTANT: one read per event\n"),),
    ),
    Mutant(
        name="ignores-end-of-stream",
        mistake="read() returning 0 taken as 'nothing for now': under EV_CLEAR the end of the stream is "
                "reported once, so the finished client is never closed.",
        caught_by="test_last_words_then_eof",
        file="echo_server.cpp",
        replacements=(("      client.peer_done_ = true;  // the client will send nothing more; flush() closes once all "
                       "is echoed\n",
                       "      // MUTANT: end of stream not noticed\n"),),
    ),
    Mutant(
        name="level-triggered-write-interest",
        mistake="EVFILT_WRITE registered for good without EV_CLEAR: a socket with room is writable, so every "
                "wait returns at once and the loop spins at 100% CPU.",
        caught_by="test_no_spinning_while_idle",
        file="echo_server.cpp",
        replacements=(("    change(fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, serial);\n",
                       "    change(fd, EVFILT_WRITE, EV_ADD, serial);  // MUTANT: level-triggered, for good\n"),),
    ),
    Mutant(
        name="registers-in-separate-calls",
        mistake="A kevent() call of its own for every change (lesson 01's way): two system calls per new client "
                "on top of the wait, instead of riding in it.",
        caught_by="test_registrations_ride_in_the_wait",
        file="echo_server.cpp",
        replacements=(("  struct kevent& change = changes_.emplace_back();\n"
                       "  EV_SET(&change, fd, filter, flags, 0, 0, udata_of(serial));\n",
                       "  struct kevent change;\n"
                       "  EV_SET(&change, fd, filter, flags, 0, 0, udata_of(serial));\n"
                       "  register_now({change});  // MUTANT: applied at once, in a call of its own\n"),),
        linux_only=True,  # the test reads the trace of kqlab's Linux layer; it is skipped elsewhere
    ),
    Mutant(
        name="treats-error-entries-as-events",
        mistake="EV_ERROR entries taken for events: a change that failed in the wait is handled as if it had "
                "fired, and the failure goes unnoticed.",
        caught_by="test_failed_change_in_the_wait_is_not_ignored",
        file="echo_server.cpp",
        replacements=(("  if (event.flags & EV_ERROR) {\n    // A change handed",
                       "  if (false) {  // MUTANT: never looks for EV_ERROR\n    // A change handed"),),
        linux_only=True,  # the test needs KQLAB_FAULT, kqlab's Linux layer's fault switch
    ),
    Mutant(
        name="never-clears-changes",
        mistake="The changelist never cleared after the wait: every change is handed over again with every wait, "
                "re-arming edge-triggered registrations and waking the loop for nothing.",
        caught_by="test_no_spinning_while_idle",
        file="echo_server.cpp",
        replacements=(("  changes_.clear();\n", "  // MUTANT: the changes stay in the list, for the next wait too\n"),),
    ),
    Mutant(
        name="receipts-in-the-wait",
        mistake="EV_RECEIPT on the changes handed to the wait: the call returns their receipts instead of waiting, "
                "so every change costs a kevent() call of its own after all.",
        caught_by="test_registrations_ride_in_the_wait",
        file="echo_server.cpp",
        replacements=(("  if (events.size() < changes_.size()) events.resize(changes_.size());\n",
                       "  if (events.size() < changes_.size()) events.resize(changes_.size());\n"
                       "  for (struct kevent& change : changes_) change.flags |= EV_RECEIPT;  // MUTANT\n"),),
        linux_only=True,  # the test reads the trace of kqlab's Linux layer; it is skipped elsewhere
    ),
    Mutant(
        name="closes-when-the-socket-is-full",
        mistake="EAGAIN from write() taken as an error like EPIPE: a client whose socket is full for a moment is "
                "closed, and what it was owed is lost.",
        caught_by="test_partial_writes",
        file="echo_server.cpp",
        replacements=(("    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // full: EVFILT_WRITE "
                       "fires when not\n", "    // MUTANT: EAGAIN falls through to the errors that close\n"),),
    ),
]
