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
]
