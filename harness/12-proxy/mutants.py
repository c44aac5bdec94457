"""Lesson 12's mutants: the proxy with one classic mistake put back. `./kqlab test` builds each and checks that
the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="unbounded-buffer",
        mistake="The proxy reads from the fast side whether or not the slow side keeps up: under a client that "
                "sends faster than the upstream reads, its buffer, and its memory, grow without end.",
        caught_by="test_slow_reader_bounds_the_buffer",
        file="proxy.cpp",
        replacements=(("    const std::size_t room = buffer_bytes_ - std::min(buffer_bytes_, direction.buffer.size());\n",
                       "    const std::size_t room = sizeof chunk;  // MUTANT: no limit\n"),
                      ("  const bool room = !direction.eof && direction.buffer.size() < buffer_bytes_;\n",
                       "  const bool room = !direction.eof;  // MUTANT: reads on, however full the buffer\n")),
    ),
    Mutant(
        name="ignores-connect-error",
        mistake="A writable socket taken to mean a connected one: a refused connect() is never noticed, and the "
                "client is cut off without a word instead of told why.",
        caught_by="test_refused_upstream_is_explained",
        file="proxy.cpp",
        replacements=(("  if (error != 0) {\n    change(session.id, EVFILT_TIMER, EV_DELETE",
                       "  if (false) {  // MUTANT: SO_ERROR read and ignored\n    change(session.id, EVFILT_TIMER, "
                       "EV_DELETE"),),
    ),
    Mutant(
        name="no-connect-timeout",
        mistake="No timer on the connection attempt: a client of an upstream that never answers waits as long as "
                "the kernel retries, minutes, with no word.",
        caught_by="test_silent_upstream_times_out",
        file="proxy.cpp",
        replacements=(("  change(session.id, EVFILT_TIMER, EV_ADD | EV_ONESHOT, session.id, 0, connect_timeout_ms_);\n",
                       "  // MUTANT: no timeout on the connection attempt\n"),),
    ),
    Mutant(
        name="closes-at-first-eof",
        mistake="One side's end of stream taken as the end of the session: a client that sends its request and "
                "half-closes never gets the reply.",
        caught_by="test_request_then_eof_gets_the_whole_reply",
        file="proxy.cpp",
        replacements=(("    if (got == 0) {\n      direction.eof = true;\n      continue;",
                       "    if (got == 0) {\n      finish(session);  // MUTANT: the first EOF ends everything\n"
                       "      return;"),),
    ),
    Mutant(
        name="leaks-upstream",
        mistake="Ending a session closes the client's descriptor and forgets the upstream's: every client that "
                "vanishes leaves an open connection to the upstream behind.",
        caught_by="test_vanishing_client_leaks_nothing",
        file="proxy.cpp",
        replacements=(("  if (session.upstream != -1) close(session.upstream);\n",
                       "  // MUTANT: the upstream's descriptor is never closed\n"),),
    ),
]
