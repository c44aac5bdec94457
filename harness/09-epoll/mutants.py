"""Lesson 09's mutants: the solution with one classic mistake put back (see docs/mistakes.md).
`./kqlab test` builds each and checks that the test named in caught_by fails against it (see kqlab/mutants.py).
A mistake in the server, written once, is caught on the kqueue program, which every platform builds."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="reads-once-per-edge",
        mistake="Edge-triggered reads without draining to EAGAIN: what one read() leaves waits for more data, which "
                "may never come.",
        caught_by="test_reads_drain_to_eagain[kqueue]",
        program="kqueue",
        file="echo_server.cpp",
        replacements=(("    if (got > 0) {\n      client.unsent_.append(buffer, static_cast<std::size_t>(got));\n",
                       "    if (got > 0) {\n      client.unsent_.append(buffer, static_cast<std::size_t>(got));\n"
                       "      break;  // MUTANT: one read per event, as if level-triggered\n"),),
    ),
    Mutant(
        name="accepts-once-per-edge",
        mistake="An edge-triggered listening socket served with one accept() per event: a burst of connections is "
                "half served.",
        caught_by="test_accept_drains_the_backlog[kqueue]",
        program="kqueue",
        file="echo_server.cpp",
        replacements=(("    poller_.add(fd, add_client(fd).serial_);\n  }\n",
                       "    poller_.add(fd, add_client(fd).serial_);\n"
                       "    return;  // MUTANT: one accept per event\n  }\n"),),
    ),
    Mutant(
        name="ors-filters-like-epoll-bits",
        mistake="Filters OR-ed like epoll's bits: EVFILT_READ | EVFILT_WRITE is EVFILT_READ (-1 | -2 == -1), so the "
                "interest in writing is never registered and output waiting for room stays stuck.",
        caught_by="test_partial_writes[kqueue]",
        program="kqueue",
        file="kqueue/poller.cpp",
        replacements=(("  collect(state_->changes, fd, EVFILT_WRITE, on ? EV_ADD | EV_CLEAR : EV_DELETE, serial);\n",
                       "  // MUTANT: \"both filters\", as an epoll mask would say it\n"
                       "  collect(state_->changes, fd, EVFILT_READ | EVFILT_WRITE, EV_ADD | EV_CLEAR, serial);\n"
                       "  static_cast<void>(on);\n"),),
    ),
    Mutant(
        name="takes-ev-eof-for-an-error",
        mistake="EV_EOF taken for a failed connection: the client is closed at once, and the bytes that came with "
                "its end of stream are never echoed.",
        caught_by="test_eof_with_pending_data[kqueue]",
        program="kqueue",
        file="kqueue/poller.cpp",
        replacements=(("  if (event.flags & EV_EOF) ready.error = static_cast<int>(event.fflags);\n",
                       "  if (event.flags & EV_EOF) ready.error = ECONNRESET;  // MUTANT: EOF means broken\n"),),
    ),
    Mutant(
        name="adds-instead-of-modifying",
        mistake="EPOLL_CTL_ADD to change a registration, as EV_ADD does on kqueue: epoll refuses a second ADD for "
                "the descriptor (EEXIST), and the server stops at the first partial write.",
        caught_by="test_partial_writes[epoll]",
        program="epoll",
        file="epoll/poller.cpp",
        replacements=(("  control(state_->epfd, EPOLL_CTL_MOD, fd, on ? kReading | EPOLLOUT : kReading, serial);\n",
                       "  control(state_->epfd, EPOLL_CTL_ADD, fd, on ? kReading | EPOLLOUT : kReading, serial);"
                       "  // MUTANT\n"),),
    ),
    Mutant(
        name="takes-hangup-for-an-error",
        mistake="EPOLLRDHUP taken for a failed connection: the client is closed at once, and the bytes that came "
                "with its end of stream are never echoed.",
        caught_by="test_eof_with_pending_data[epoll]",
        program="epoll",
        file="epoll/poller.cpp",
        replacements=(("  if (event.events & EPOLLERR) ready.error = socket_error(ready.fd);\n",
                       "  if (event.events & EPOLLERR) ready.error = socket_error(ready.fd);\n"
                       "  if (event.events & EPOLLRDHUP) ready.error = ECONNRESET;  // MUTANT: hang-up is broken\n"),),
    ),
    Mutant(
        name="stops-accepting-at-the-limit",
        mistake="EMFILE on accept() handled by returning: edge-triggered, the listener is not reported again for "
                "the connections already waiting, and the server stops accepting for good.",
        caught_by="test_descriptor_limit_flood[kqueue]",
        file="echo_server.cpp",
        replacements=(("      if (turn_away_one()) continue;\n      return;",
                       "      std::perror(\"accept\");  // MUTANT: returns, and the waiting connections wait for good\n"
                       "      return;"),),
        program="kqueue",
    ),
    Mutant(
        name="stops-accepting-at-the-limit-on-epoll",
        mistake="EMFILE on accept() handled by returning, under EPOLLET: the listener is not reported again for the "
                "connections already waiting, and the server stops accepting for good.",
        caught_by="test_descriptor_limit_flood[epoll]",
        file="echo_server.cpp",
        replacements=(("      if (turn_away_one()) continue;\n      return;",
                       "      std::perror(\"accept\");  // MUTANT: returns, and the waiting connections wait for good\n"
                       "      return;"),),
        program="epoll",
    ),
    Mutant(
        name="epoll-data-without-descriptor",
        mistake="The descriptor left out of epoll's data: an epoll event carries nothing else, so every report "
                "comes back about descriptor 0.",
        caught_by="test_one_client[epoll]",
        file="epoll/poller.cpp",
        replacements=(("std::uint64_t data_of(int fd, std::uint64_t serial) { return serial << 32 | "
                       "static_cast<std::uint32_t>(fd); }",
                       "std::uint64_t data_of(int, std::uint64_t serial) { return serial << 32; }  // MUTANT: no fd"),),
        program="epoll",
    ),
    Mutant(
        name="keeps-changes-for-closed-descriptors",
        mistake="Changes collected for a descriptor kept when it is closed: handed to the next wait, they name a "
                "closed descriptor (EBADF), or the connection that accept() gave the same number.",
        caught_by="test_half_close_with_much_still_owed[kqueue]",
        file="kqueue/poller.cpp",
        replacements=(("  std::erase_if(state_->changes, [fd](const struct kevent& change) { return change.ident == "
                       "std::uintptr_t(fd); });\n",
                       "  static_cast<void>(fd);  // MUTANT: the changes collected for it stay\n"),),
        program="kqueue",
    ),
    Mutant(
        name="drops-what-does-not-fit",
        mistake="The eventlist is longer than the caller's batch, and the entries that do not fit are dropped "
                "instead of handed out by the next wait(): edge-triggered, those events never come again.",
        caught_by="test_more_events_than_one_batch_holds[kqueue]",
        file="kqueue/poller.cpp",
        replacements=(("    ready[count++] = ready_from(event);\n  }\n  return count;",
                       "    ready[count++] = ready_from(event);\n  }\n  state.handed = state.returned;  // MUTANT\n"
                       "  return count;"),),
        program="kqueue",
    ),
]
