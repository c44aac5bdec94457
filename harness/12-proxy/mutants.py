"""Lesson 12's mutants: the proxy's solution with one classic proxy mistake put back. `./kqlab test` builds each
and checks that the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="ignores-connect-error",
        mistake="A writable socket taken as a connected one: a refused connect() is never noticed, and the client "
                "gets a silent close instead of the reason.",
        caught_by="test_refused_upstream_is_reported",
        file="proxy.cpp",
        replacements=(("  if (error != 0) {\n    refuse(pair, std::strerror(error));\n",
                       "  if (false) {  // MUTANT: the answer to connect() is never looked at\n"
                       "    refuse(pair, std::strerror(error));\n"),),
    ),
    Mutant(
        name="no-connect-timeout",
        mistake="A connect() with no deadline: an upstream that never answers holds the client for as long as the "
                "kernel keeps trying (minutes).",
        caught_by="test_silent_upstream_times_out",
        file="proxy.cpp",
        replacements=(("  arm_timer(pair, connect_timeout_ms_);\n", "  // MUTANT: no connect timeout\n"),),
    ),
    Mutant(
        name="unbounded-buffering",
        mistake="Reading from the fast side whatever the slow side's buffer holds: the proxy's memory grows "
                "without end while the reader is slow.",
        caught_by="test_slow_upstream_bounds_what_the_proxy_holds",
        file="proxy.cpp",
        replacements=(
            ("  const bool read = !connecting && !end.from_here_->source_done_ && end.from_here_->buffer_.size() < "
             "buffer_limit_;\n",
             "  const bool read = !connecting && !end.from_here_->source_done_;  // MUTANT: no bound\n"),
            ("  const std::size_t room = buffer_limit_ - std::min(buffer_limit_, direction.buffer_.size());\n"
             "  if (room > 0 && !direction.source_done_) {\n",
             "  if (!direction.source_done_) {  // MUTANT: reads whatever the buffer holds\n"),
            ("read(end.fd_, chunk, std::min(room, sizeof chunk));", "read(end.fd_, chunk, sizeof chunk);"),
        ),
    ),
    Mutant(
        name="never-resumes-reading",
        mistake="EV_DISABLE when the buffer fills, and no EV_ENABLE when it drains: the fast side is never read "
                "from again, and the transfer stalls for good.",
        caught_by="test_slow_upstream_bounds_what_the_proxy_holds",
        file="proxy.cpp",
        replacements=(("  if (read != end.reading_) set_filter(end, EVFILT_READ, read);\n",
                       "  if (read != end.reading_ && !read) set_filter(end, EVFILT_READ, read);  // MUTANT\n"),),
    ),
    Mutant(
        name="closes-at-first-eof",
        mistake="The first EOF taken as the end of the pair: a client that half-closes after its request never "
                "gets the reply.",
        caught_by="test_request_then_eof_gets_the_whole_reply",
        file="proxy.cpp",
        replacements=(("      direction.source_done_ = true;  // an orderly end of this direction only",
                       "      close_pair(pair);  // MUTANT: closes both sides at the first EOF\n"
                       "      return;  // an orderly end of this direction only"),),
    ),
    Mutant(
        name="swallows-the-eof",
        mistake="An EOF that is not passed on: the upstream of a request-then-EOF protocol waits for the end of "
                "the request for ever.",
        caught_by="test_request_then_eof_gets_the_whole_reply",
        file="proxy.cpp",
        replacements=(("    if (shutdown(to.fd_, SHUT_WR) == -1) {\n",
                       "    if (false) {  // MUTANT: the destination is never told\n"),),
    ),
    Mutant(
        name="closes-before-both-directions-finish",
        mistake="The pair closed when one direction is finished: the reply still flowing the other way is cut "
                "off.",
        caught_by="test_request_then_eof_gets_the_whole_reply",
        file="proxy.cpp",
        replacements=(("  if (pair.up_.shut_ && pair.down_.shut_) {\n",
                       "  if (pair.up_.shut_ || pair.down_.shut_) {  // MUTANT\n"),),
    ),
    Mutant(
        name="leaks-upstream",
        mistake="Only the side that vanished is closed: the upstream socket of a client that reset stays open, "
                "one descriptor lost per client.",
        caught_by="test_client_vanishing_closes_upstream",
        file="proxy.cpp",
        replacements=(("  }\n  close_pair(pair);\n}\n// [end]\n\n// Closes both",
                       "  }\n  pair.upstream_.fd_ = -1;  // MUTANT: the upstream socket is forgotten, open\n"
                       "  close_pair(pair);\n}\n// [end]\n\n// Closes both"),),
    ),
    Mutant(
        name="ends-in-order-on-reset",
        mistake="A reset on one side passed on as an orderly close: the other peer takes a cut-off stream for a "
                "complete one.",
        caught_by="test_upstream_reset_reaches_the_client",
        file="proxy.cpp",
        replacements=(("    if (end->fd_ != -1) setsockopt(end->fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);\n",
                       "    if (false && end->fd_ != -1) setsockopt(end->fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof "
                       "reset);  // MUTANT\n"),),
    ),
    Mutant(
        name="refuses-silently",
        mistake="An upstream that cannot be reached answered with a bare close: the client cannot tell it from an "
                "upstream that took the request and hung up.",
        caught_by="test_refused_upstream_is_reported",
        file="proxy.cpp",
        replacements=(("  if (write(pair.client_.fd_, line.data(), line.size()) == -1) {\n",
                       "  if (false) {  // MUTANT: closes without a word\n"),),
    ),
    Mutant(
        name="spins-at-descriptor-limit",
        mistake="EMFILE on accept() handled by returning: the client stays queued, the level-triggered listener "
                "fires again at once, and the proxy spins while those clients hang.",
        caught_by="test_descriptor_limit",
        file="proxy.cpp",
        replacements=(("    if (client == -1 && (errno == EMFILE || errno == ENFILE)) {\n",
                       "    if (client == -1 && errno == 0) {  // MUTANT: EMFILE treated like any other error\n"),),
    ),
    Mutant(
        name="lowat-on-reads",
        mistake="A low-water mark on reading too: a short request is held back until more bytes, or the EOF, "
                "come after it.",
        caught_by="test_bytes_flow_both_ways",
        file="proxy.cpp",
        replacements=(("  EV_SET(&change, end.fd_, EVFILT_READ, EV_ADD | (read ? 0 : EV_DISABLE), 0, 0, &end);\n",
                       "  EV_SET(&change, end.fd_, EVFILT_READ, EV_ADD | (read ? 0 : EV_DISABLE), NOTE_LOWAT, kLowWater, "
                       "&end);  // MUTANT\n"),),
    ),
    Mutant(
        name="shuts-both-directions",
        mistake="shutdown(SHUT_RDWR) to pass an EOF on: the socket stops reading too, and the reply still coming "
                "back is lost.",
        caught_by="test_request_then_eof_gets_the_whole_reply",
        file="proxy.cpp",
        replacements=(("shutdown(to.fd_, SHUT_WR)", "shutdown(to.fd_, SHUT_RDWR) /* MUTANT */"),),
    ),
    Mutant(
        name="timer-leads-nowhere",
        mistake="The connect timer registered with no udata: its event is taken for the listening socket's, and "
                "the silent upstream is never given up on.",
        caught_by="test_silent_upstream_times_out",
        file="proxy.cpp",
        replacements=(("EV_ADD | EV_ONESHOT, 0, milliseconds, &pair.upstream_);",
                       "EV_ADD | EV_ONESHOT, 0, milliseconds, nullptr);  // MUTANT"),),
    ),
    Mutant(
        name="forgets-the-direction-is-shut",
        mistake="The EOF passed on, but the direction not marked finished: the pair waits for it forever, and "
                "is never closed.",
        caught_by="test_request_then_eof_gets_the_whole_reply",
        file="proxy.cpp",
        replacements=(("    direction.shut_ = true;\n", "    // MUTANT: not marked finished\n"),),
    ),
]
