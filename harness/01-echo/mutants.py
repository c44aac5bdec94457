"""Lesson 01's mutants: the solution with one classic mistake put back (see docs/mistakes.md).
`./kqlab test` builds each and checks that the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="stops-at-first-partial-write",
        mistake="One write = all bytes: whatever write() did not take (part, or all with EAGAIN) is dropped.",
        caught_by="test_partial_writes",
        file="echo_server.cpp",
        replacements=(("    client.unsent_.erase(0, static_cast<std::size_t>(sent));\n",
                       "    client.unsent_.clear();  // MUTANT: assumes write() took everything\n"),
                      ("    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;\n",
                       "    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {\n"
                       "      client.unsent_.clear();  // MUTANT: and what the socket did not take is lost\n"
                       "      break;\n"
                       "    }\n")),
    ),
    Mutant(
        name="ignores-eof",
        mistake="EV_EOF ignored: a client that has finished sending is never closed.",
        caught_by="test_eof_with_pending_data",
        file="echo_server.cpp",
        replacements=(("  } else if (event.flags & EV_EOF) {\n",
                       "  } else if (false) {  // MUTANT: never looks at EV_EOF\n"),),
    ),
    Mutant(
        name="closes-at-eof-dropping-data",
        mistake="EV_EOF taken as 'close now': the bytes that came with it are never read or echoed.",
        caught_by="test_eof_with_pending_data",
        file="echo_server.cpp",
        replacements=(("  if (event.data > 0) {\n    char buffer",
                       "  if (event.flags & EV_EOF) {  // MUTANT: closes before reading what is left\n"
                       "    close_client(fd);\n"
                       "    return;\n"
                       "  }\n"
                       "  if (event.data > 0) {\n    char buffer"),),
    ),
    Mutant(
        name="forgets-to-close",
        mistake="The client is forgotten but its descriptor never closed: one leaked descriptor per client.",
        caught_by="test_no_descriptor_leak",
        file="echo_server.cpp",
        replacements=(("  clients_.erase(fd);\n  close(fd);\n",
                       "  clients_.erase(fd);  // MUTANT: and the descriptor stays open\n"),),
    ),
    Mutant(
        name="leaves-write-interest-on",
        mistake="EVFILT_WRITE left registered when nothing is left to write: the loop spins at 100% CPU.",
        caught_by="test_no_spinning_while_idle",
        file="echo_server.cpp",
        replacements=(("  if (pending != client.writing_) {\n",
                       "  if (pending && !client.writing_) {  // MUTANT: never removes the write interest\n"),),
    ),
    Mutant(
        name="blocking-client-sockets",
        mistake="Blocking sockets in the loop: one client that reads slowly stops the server for everyone.",
        caught_by="test_slow_reader_delays_nobody",
        file="echo_server.cpp",
        replacements=(("#include <unistd.h>\n", "#include <fcntl.h>\n#include <unistd.h>\n"),
                      ("    kqlab::set_nonblocking(fd);",
                       "    fcntl(fd, F_SETFL, 0);  // MUTANT: blocking (BSD's accept() copies O_NONBLOCK: undo it)\n   ")),
    ),
    Mutant(
        name="closes-at-end-of-stream-owing-output",
        mistake="The end of the client's stream taken as the end of the conversation: the server closes while it "
                "still owes the client the echo of what it sent before half-closing.",
        caught_by="test_half_close_with_much_still_owed",
        file="echo_server.cpp",
        replacements=(("    client.peer_done_ = true;\n    if (client.unsent_.empty()) {\n",
                       "    client.peer_done_ = true;\n"
                       "    if (true) {  // MUTANT: closes at once, whatever is still owed\n"),),
    ),
    Mutant(
        name="ignores-failed-registration",
        mistake="The receipt never read: a registration that failed goes unnoticed, and its client waits for ever "
                "for a server that will never hear it.",
        caught_by="test_failed_registration_is_not_ignored",
        file="echo_server.cpp",
        replacements=(("  if ((receipt.flags & EV_ERROR) && receipt.data != 0) {\n",
                       "  if (false) {  // MUTANT: the receipt is never looked at\n"),),

        linux_only=True,  # the test needs KQLAB_FAULT, kqlab's Linux layer's fault switch
    ),
    Mutant(
        name="never-registers-write-interest",
        mistake="EVFILT_WRITE never registered: what the socket did not take waits for an event nobody asked for, "
                "and the output is stuck.",
        caught_by="test_partial_writes",
        file="echo_server.cpp",
        replacements=(("    watch(fd, EVFILT_WRITE, pending ? EV_ADD : EV_DELETE, client.serial_);\n",
                       "    // MUTANT: never asks to hear when the socket has room again\n"),),
    ),
    Mutant(
        name="write-error-is-fatal",
        mistake="A write that fails because one client went away (EPIPE, ECONNRESET) taken as the server's own "
                "failure: one vanishing client ends the server for everyone.",
        caught_by="test_vanishing_client_disturbs_nobody",
        file="echo_server.cpp",
        replacements=(("      close_client(fd);  // EPIPE, ECONNRESET: the client went away\n",
                       "      kqlab::fail(\"write\");  // MUTANT: one client's error ends the server\n"),),
    ),
    Mutant(
        name="keeps-reading-a-finished-client",
        mistake="A client that has finished sending but is still owed output keeps its EVFILT_READ: its "
                "level-triggered EV_EOF fires on every wait, and the loop spins until all is written.",
        caught_by="test_half_close_with_much_still_owed",
        file="echo_server.cpp",
        replacements=(("      watch(fd, EVFILT_READ, EV_DELETE, client.serial_);\n",
                       "      // MUTANT: keeps reading the finished client\n"),),
    ),
]
