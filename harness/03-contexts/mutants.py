"""Lesson 03's mutants: the solution with one classic mistake put back (see docs/mistakes.md).
`./kqlab test` builds each and checks that the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="frees-connection-at-once",
        mistake="The connection object is freed when it is closed, while later events of the same batch still "
                "carry its address in udata: a use-after-free.",
        caught_by="test_hundred_clients_send_and_close_at_once",
        file="chat_server.cpp",
        replacements=(("  connection.closed_ = true;\n}\n",
                       "  connection.closed_ = true;\n"
                       "  free_closed();  // MUTANT: freed at once, events of this batch may still point at it\n}\n"),),
    ),
    Mutant(
        name="leaves-write-interest-on",
        mistake="EVFILT_WRITE enabled when output is pending and never disabled: once the output is written, the "
                "socket is writable on every wait and the loop spins at 100% CPU.",
        caught_by="test_no_spinning_while_output_waits",
        file="chat_server.cpp",
        replacements=(("  if (pending != connection.writing_) {\n",
                       "  if (pending && !connection.writing_) {  // MUTANT: never disabled again\n"),),
    ),
    Mutant(
        name="never-enables-write-interest",
        mistake="Output that the socket did not take waits for EVFILT_WRITE, which is never enabled: a slow "
                "reader's backlog is stuck, whenever it reads again.",
        caught_by="test_slow_reader_delays_nobody",
        file="chat_server.cpp",
        replacements=(("  const bool pending = !connection.output_.empty();\n",
                       "  const bool pending = false;  // MUTANT: never asks to hear when there is room\n"),),
    ),
    Mutant(
        name="no-backlog-limit",
        mistake="No limit on what a connection may be owed: a client that stops reading makes the server buffer "
                "without end.",
        caught_by="test_too_slow_reader_is_disconnected",
        file="chat_server.cpp",
        replacements=(("  if (connection.output_.size() + text.size() > max_backlog_) {\n",
                       "  if (false) {  // MUTANT: no limit\n"),),
    ),
    Mutant(
        name="keeps-changes-of-closed-connections",
        mistake="A connection is closed with changes for it still queued: the next wait hands the kernel a change "
                "for a closed descriptor (EBADF), or for the new connection that accept() gave the same number.",
        caught_by="test_close_with_changes_still_queued",
        file="chat_server.cpp",
        replacements=(("  std::erase_if(changes_, [&connection](const struct kevent& change) { return change.udata == "
                       "&connection; });\n",
                       "  // MUTANT: the changes queued for it stay queued\n"),),
    ),
    Mutant(
        name="dispatch-without-stale-check",
        mistake="No check for a connection closed earlier in the batch: its stale event is handled as its own, on a "
                "descriptor number that accept() may already have given to someone else.",
        caught_by="test_stale_event_for_a_reused_descriptor",
        file="chat_server.cpp",
        replacements=(("  if (connection.closed_) return;  // a stale event\n",
                       "  // MUTANT: no check for a connection closed earlier in this batch\n"),),
    ),
    Mutant(
        name="enable-without-udata",
        mistake="EV_ENABLE and EV_DISABLE passed without the connection's address: a change replaces udata, so "
                "the next EVFILT_WRITE event points at nothing.",
        caught_by="test_slow_reader_delays_nobody",
        file="chat_server.cpp",
        replacements=(("  EV_SET(&change, connection.fd_, filter, flags, 0, 0, &connection);\n",
                       "  EV_SET(&change, connection.fd_, filter, flags, 0, 0,\n"
                       "         (flags & EV_ADD) ? &connection : nullptr);  // MUTANT: udata only when adding\n"),),
    ),
]
