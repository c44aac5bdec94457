"""Lesson 07's mutants: the solution with one classic mistake put back (see docs/mistakes.md).
`./kqlab test` builds each and checks that the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="worker-uses-the-supervisors-queue",
        mistake="The child uses the queue it finds in its copy of the parent: a kqueue is not inherited by fork(), "
                "so every kevent() on it fails with EBADF and no worker ever serves.",
        caught_by="test_workers_serve_side_by_side",
        file="prefork_server.cpp",
        replacements=(("  const int kq = kqueue();\n  if (kq == -1) kqlab::fail(\"kqueue\");\n  Worker(kq, listener_)",
                       "  const int kq = kq_;  // MUTANT: the parent's queue\n  Worker(kq, listener_)"),),
    ),
    Mutant(
        name="never-reaps",
        mistake="No waitpid() after NOTE_EXIT: every dead worker stays a zombie in the process table.",
        caught_by="test_dead_workers_leave_no_zombies",
        file="prefork_server.cpp",
        replacements=(("  while (waitpid(pid, &status, 0) == -1 && errno == EINTR) {\n  }\n",
                       "  // MUTANT: never reaps\n"),),
    ),
    Mutant(
        name="never-replaces",
        mistake="A dead worker is reaped but not replaced: the server shrinks with every crash.",
        caught_by="test_killed_worker_is_replaced_within_a_second",
        file="prefork_server.cpp",
        replacements=(("  if (!stopping_) replace(started);",
                       "  static_cast<void>(started);  // MUTANT: no replacement\n"),),
    ),
    Mutant(
        name="polls-for-dead-workers",
        mistake="A supervisor that polls (kevent() with a zero timeout, in a loop) instead of sleeping until a "
                "worker exits: a core spent doing nothing.",
        caught_by="test_idle_supervisor_uses_no_cpu",
        file="prefork_server.cpp",
        replacements=(("    const int ready = kevent(kq_, nullptr, 0, happened, static_cast<int>(std::size(happened)), "
                       "nullptr);\n",
                       "    static const struct timespec no_wait = {0, 0};  // MUTANT: polls\n"
                       "    const int ready = kevent(kq_, nullptr, 0, happened, static_cast<int>(std::size(happened)), "
                       "&no_wait);\n"),),
    ),
    Mutant(
        name="workers-keep-sig-ign",
        mistake="The child keeps the parent's SIG_IGN for SIGTERM (dispositions are inherited, queues are not): the "
                "supervisor's SIGTERM does not stop its workers.",
        caught_by="test_sigterm_leaves_no_process_behind",
        file="prefork_server.cpp",
        replacements=(("  std::signal(SIGTERM, SIG_DFL);\n", "  // MUTANT: SIGTERM stays ignored\n"),),
    ),
    Mutant(
        name="child-returns-into-the-parent",
        mistake="The child returns from fork() into the supervisor's code: it goes on as a second supervisor, with "
                "a queue it does not have, instead of serving.",
        caught_by="test_workers_serve_side_by_side",
        file="prefork_server.cpp",
        replacements=(("  if (pid == 0) become_worker();  // the child; never returns\n",
                       "  if (pid == 0) return false;  // MUTANT: the child goes back into the supervisor's code\n"),),
    ),
    Mutant(
        name="replaces-while-stopping",
        mistake="A worker that ends is replaced even while the supervisor stops: every worker SIGTERM ends is forked "
                "anew, and the supervisor never finishes stopping.",
        caught_by="test_sigint_leaves_no_process_behind",
        file="prefork_server.cpp",
        replacements=(("  if (!stopping_) replace(started);", "  replace(started);  // MUTANT: even when stopping"),),
    ),
    Mutant(
        name="herd-loser-gives-up",
        mistake="EAGAIN from accept() taken for an error: a worker that loses the thundering herd's race stops, "
                "and the workers die one connection after another.",
        caught_by="test_workers_survive_the_thundering_herd",
        file="prefork_server.cpp",
        replacements=(("      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) std::perror(\"accept\");\n",
                       "      kqlab::fail(\"accept\");  // MUTANT: losing the race is fatal\n"),),
        races=True,  # a worker loses only if another accepts between its kevent() and its accept()
    ),
    Mutant(
        name="watches-sigterm-only",
        mistake="Only SIGTERM is watched: SIGINT (Ctrl-C) kills the supervisor by its default action, and its "
                "workers go on, orphaned.",
        caught_by="test_sigint_leaves_no_process_behind",
        file="prefork_server.cpp",
        replacements=(("  for (const int number : {SIGTERM, SIGINT}) {", "  for (const int number : {SIGTERM}) {  // MUTANT"),),
    ),
    Mutant(
        name="watches-the-wrong-note",
        mistake="EVFILT_PROC registered with NOTE_FORK instead of NOTE_EXIT: the supervisor never hears a worker "
                "end, so it neither reaps nor replaces it.",
        caught_by="test_killed_worker_is_replaced_within_a_second",
        file="prefork_server.cpp",
        replacements=(("EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, 0, ESRCH)", "EVFILT_PROC, EV_ADD, NOTE_FORK, 0, 0, ESRCH)"),),
    ),
    Mutant(
        name="ignores-sigchld",
        mistake="SIGCHLD set to SIG_IGN in the supervisor, as SIGTERM is: the kernel reaps each worker itself, "
                "waitpid() fails with ECHILD, and how the worker ended is lost.",
        caught_by="test_how_a_worker_ended_is_told",
        file="prefork_server.cpp",
        replacements=(("  // As in lesson 06: ignore, then watch.",
                       "  std::signal(SIGCHLD, SIG_IGN);  // MUTANT\n  // As in lesson 06: ignore, then watch."),),
    ),
]
