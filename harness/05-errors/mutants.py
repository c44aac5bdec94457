"""Lesson 05's mutants: the solution with one classic error-handling mistake put back (see docs/mistakes.md).
`./kqlab test` builds each and checks that the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

EMFILE = "    if (fd == -1 && (errno == EMFILE || errno == ENFILE)) {\n"

MUTANTS = [
    Mutant(
        name="closes-at-eof",
        mistake="EV_EOF taken as 'the client is gone': a client that has only half-closed loses the reply it is "
                "still owed.",
        caught_by="test_half_close_with_reply_pending",
        file="robust_server.cpp",
        replacements=(("  conn.peer_done_ = true;\n  advance(conn);\n",
                       "  close_connection(conn);  // MUTANT: closes at once, dropping what is owed\n"),),
    ),
    Mutant(
        name="ignores-eof",
        mistake="EV_EOF ignored: connections whose clients have gone are never closed, and their level-triggered "
                "EOF fires on every wait.",
        caught_by="test_connect_and_vanish",
        file="robust_server.cpp",
        replacements=(("  if (error != 0) {\n    // Reset or failed",
                       "  if (conn.fd_ >= 0) return;  // MUTANT: EOF ignored\n  if (error != 0) {\n    // Reset or failed"),),
    ),
    Mutant(
        name="dies-of-sigpipe",
        mistake="SIGPIPE left to its default action: the first write to a client that has reset kills the server.",
        caught_by="test_reset_mid_reply",
        file="robust_server.cpp",
        replacements=(("  std::signal(SIGPIPE, SIG_IGN);\n", "  // MUTANT: SIGPIPE keeps its default action\n"),),
    ),
    Mutant(
        name="eintr-is-fatal",
        mistake="EINTR taken as a failure of kevent(): the first signal the server catches stops it.",
        caught_by="test_signals_interrupt_nothing",
        file="robust_server.cpp",
        replacements=(("      if (errno == EINTR) continue;\n", "      // MUTANT: EINTR is an error like any other\n"),),
    ),
    Mutant(
        name="spins-at-descriptor-limit",
        mistake="EMFILE on accept() handled by returning: the connection stays queued, the level-triggered "
                "listener fires again at once, and the server spins while those clients hang.",
        caught_by="test_descriptor_limit",
        file="robust_server.cpp",
        replacements=((EMFILE, "    if (fd == -1 && errno == 0) {  // MUTANT: EMFILE treated like any other error\n"),),
    ),
    Mutant(
        name="dies-at-descriptor-limit",
        mistake="EMFILE on accept() taken as fatal: a burst of clients stops the server.",
        caught_by="test_descriptor_limit",
        file="robust_server.cpp",
        replacements=((EMFILE, EMFILE + "      kqlab::fail(\"accept\");  // MUTANT\n"),),
    ),
    Mutant(
        name="limits-only-whole-lines",
        mistake="The line limit checked only on lines that have ended: a line that never ends grows the server's "
                "buffer for ever.",
        caught_by="test_never_ending_line",
        file="robust_server.cpp",
        replacements=(("    if (length > max_line_) {\n",
                       "    if (end != std::string::npos && length > max_line_) {  // MUTANT\n"),),
    ),
    Mutant(
        name="answers-out-of-order",
        mistake="Requests served while a GET is still being sent: later replies overtake it.",
        caught_by="test_one_client",
        file="robust_server.cpp",
        replacements=(("  while (!conn.closing_ && conn.get_left_ == 0 && conn.unsent_.size() < max_pending_) {\n",
                       "  while (!conn.closing_ && conn.unsent_.size() < max_pending_) {  // MUTANT\n"),),
    ),
    Mutant(
        name="no-back-pressure",
        mistake="Reading on from a client that reads nothing of what it is owed: a flood of requests fills the "
                "server's memory instead of the client's socket.",
        caught_by="test_garbage_flood",
        file="robust_server.cpp",
        replacements=(("  const bool read = !conn.peer_done_ && !conn.closing_ && conn.unsent_.size() < max_pending_ &&\n"
                       "                    (conn.get_left_ == 0 || conn.inbox_.empty());\n",
                       "  const bool read = !conn.peer_done_ && !conn.closing_;  // MUTANT: never stops reading\n"),),
    ),
    Mutant(
        name="reset-taken-for-orderly-end",
        mistake="The error in fflags not looked at: a reset is handled as an orderly end, and goes uncounted.",
        caught_by="test_connect_and_vanish",
        file="robust_server.cpp",
        replacements=(("  if (error != 0) {\n    // Reset or failed",
                       "  (void)error;\n  if (false) {  // MUTANT: every EOF taken as orderly\n    // Reset or failed"),),
    ),
    Mutant(
        name="spare-not-taken-back",
        mistake="The spare descriptor given up to turn a client away, and never taken back: the next newcomer "
                "takes its number, and the next time at the limit the server closes a client's connection in its "
                "place.",
        caught_by="test_descriptor_limit_again_and_again",
        file="robust_server.cpp",
        replacements=(("      spare_ = open(\"/dev/null\", O_RDONLY | O_CLOEXEC);\n"
                       "      if (spare_ == -1) kqlab::fail(\"open /dev/null\");\n",
                       "      // MUTANT: the spare is not taken back\n"),),
    ),
    Mutant(
        name="refuses-a-line-at-the-limit",
        mistake="Off by one at the line limit: a line of exactly --max-line bytes is refused.",
        caught_by="test_never_ending_line",
        file="robust_server.cpp",
        replacements=(("    if (length > max_line_) {\n", "    if (length >= max_line_) {  // MUTANT\n"),),
    ),
]
