"""Lesson 11's mutants: the threaded server with one classic mistake put back. `./kqlab test` builds each and
checks that the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="no-dispatch",
        mistake="Connections registered level-triggered on a queue that several threads wait on: while one thread "
                "serves a connection, another takes its next event and reads the same socket, and the answers "
                "come out of order (and the two threads race on the connection's buffers).",
        caught_by="test_one_thread_per_connection",
        file="workers/workers_server.cpp",
        program="workers",
        replacements=(("  EV_SET(&changes[2], fd, EVFILT_READ, EV_ADD | EV_DISPATCH, 0, 0, udata_of(id));\n",
                       "  EV_SET(&changes[2], fd, EVFILT_READ, EV_ADD, 0, 0, udata_of(id));  // MUTANT: no EV_DISPATCH\n"),),
    ),
    Mutant(
        name="enables-before-done",
        mistake="The connection's registration re-enabled as soon as its event is taken, before the handler is "
                "done: another thread gets its next event and serves it at the same time.",
        caught_by="test_one_thread_per_connection",
        file="workers/workers_server.cpp",
        program="workers",
        replacements=(("  const Connection::Outcome outcome = event.filter == EVFILT_READ ? connection->serve() : "
                       "connection->flush();\n",
                       "  rearm(server, *connection, id, Connection::Outcome::kInput);  // MUTANT: enabled too soon\n"
                       "  const Connection::Outcome outcome = event.filter == EVFILT_READ ? connection->serve() : "
                       "connection->flush();\n"),),
    ),
    Mutant(
        name="frees-a-held-connection",
        mistake="A thread keeps a plain pointer to the connection it serves: when another thread closes the "
                "connection (its timeout), it is freed under the first (use after free).",
        caught_by="test_timeout_closes_a_connection_being_served",
        file="workers/workers_server.cpp",
        program="workers",
        replacements=(("  const std::shared_ptr<Connection> connection = server.registry.find(id);\n",
                       "  Connection* const connection = server.registry.find(id).get();  // MUTANT: not held\n"),),
    ),
    Mutant(
        name="stop-reaches-one-worker",
        mistake="The stop event registered with EV_CLEAR: the first worker to take it resets it, the others sleep "
                "on, and the server never ends.",
        caught_by="test_sigterm_stops_every_worker[workers]",
        file="workers/workers_server.cpp",
        program="workers",
        replacements=(("  EV_SET(&changes[1], kStop, EVFILT_USER, EV_ADD, 0, 0, nullptr);\n",
                       "  EV_SET(&changes[1], kStop, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);  // MUTANT\n"),),
    ),
    Mutant(
        name="port-not-shared",
        mistake="Each thread's listening socket binds the port without SO_REUSEPORT: the second bind() fails "
                "with EADDRINUSE.",
        caught_by="test_answers_every_line_in_order[reuseport]",
        file="reuseport/reuseport_server.cpp",
        program="reuseport",
        replacements=(("  if (setsockopt(fd, SOL_SOCKET, option, &on, sizeof on) == -1) kqlab::fail(\"setsockopt(SO_REUSEPORT)\");\n",
                       "  static_cast<void>(option);  // MUTANT: the option is never set\n  static_cast<void>(on);\n"
                       "  static_cast<void>(fd);\n"),),
    ),
    Mutant(
        name="timeout-never-restarted",
        mistake="The connection's timeout is not restarted when it is served: a busy connection is closed "
                "timeout_ms after it was opened.",
        caught_by="test_busy_connection_outlives_the_timeout",
        file="workers/workers_server.cpp",
        replacements=(("  EV_SET(&changes[0], id, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, server.timeout_ms, udata_of(id));\n"
                       "  // udata again",
                       "  EV_SET(&changes[0], connection.fd(), awaited, EV_ENABLE, 0, 0, udata_of(id));  // MUTANT\n"
                       "  // udata again"),),
        program="workers",
    ),
    Mutant(
        name="enable-without-udata",
        mistake="EV_ENABLE given no udata: the change replaces the registration's udata, and the next report "
                "names no connection.",
        caught_by="test_answers_every_line_in_order[workers]",
        file="workers/workers_server.cpp",
        replacements=(("  EV_SET(&changes[1], connection.fd(), awaited, EV_ENABLE, 0, 0, udata_of(id));",
                       "  EV_SET(&changes[1], connection.fd(), awaited, EV_ENABLE, 0, 0, nullptr);  // MUTANT"),),
        program="workers",
    ),
    Mutant(
        name="always-waits-to-read",
        mistake="Reading re-enabled whatever the outcome: a reply that did not fit waits for a write report that "
                "is never enabled.",
        caught_by="test_answers_wait_for_room",
        file="workers/workers_server.cpp",
        replacements=(("  const short awaited = outcome == Connection::Outcome::kRoom ? EVFILT_WRITE : EVFILT_READ;",
                       "  const short awaited = EVFILT_READ;  // MUTANT\n  static_cast<void>(outcome);"),),
        program="workers",
    ),
    Mutant(
        name="write-without-dispatch",
        mistake="Writing registered without EV_DISPATCH: once enabled it stays enabled, and a writable socket is "
                "reported to every thread, again and again.",
        caught_by="test_answers_wait_for_room",
        file="workers/workers_server.cpp",
        replacements=(("  EV_SET(&changes[0], fd, EVFILT_WRITE, EV_ADD | EV_DISPATCH | EV_DISABLE, 0, 0, udata_of(id));",
                       "  EV_SET(&changes[0], fd, EVFILT_WRITE, EV_ADD | EV_DISABLE, 0, 0, udata_of(id));  // MUTANT"),),
        program="workers",
    ),
]
