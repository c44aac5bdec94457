"""Lesson 07: pre-forked workers and process supervision. Several worker processes serve side by side, a worker
that dies is reaped and replaced at once, the supervisor sleeps while nothing happens, and SIGTERM ends every
process."""
import os
import re
import signal
import time

from vocabulary import alive, eventually, see, seconds

WORKERS = 4  # kWorkers in the lesson's program


def running_workers(server) -> set[int]:
    """The server's children that are alive (zombies, dead but not reaped, are not workers any more)."""
    return {pid for pid, state in server.children().items() if state != "Z"}


def wait_for_workers(server, story, expected_gone: int | None = None) -> set[int]:
    """Waits until the server has WORKERS running workers (none of them `expected_gone`); returns their pids."""
    within = seconds(1) if expected_gone else seconds(5)
    workers: set[int] = set()

    def ready() -> bool:  # one look at the process table: a second could see another moment
        nonlocal workers
        workers = running_workers(server)
        return len(workers) == WORKERS and expected_gone not in workers

    if not eventually(ready, within):
        workers = ", ".join(f"{pid} ({state})" for pid, state in sorted(server.children().items())) or "none"
        story.fail(f"{WORKERS} running worker processes within {within:.0f} s"
                   f"{f', none of them {expected_gone}' if expected_gone else ''}",
                   f"the server's children: {workers}" + ("" if server.running() else f"; the server {server.state()}"))
    story.step(f"the server had {WORKERS} running workers: {', '.join(map(str, sorted(workers)))}")
    return workers


def ask_pid(client) -> int:
    client.send(b"pid\n")
    [(_, reply)] = client.receive_lines(1, within=seconds(2))
    return client.server.pid_of(int(reply))


def serve_side_by_side(server, story) -> set[int]:
    """Holds WORKERS - 1 workers busy, each blocked in a `sleep` request, and asks the last one its pid: each answer
    must come from a different worker. Returns the pids that answered."""
    answered = set()
    for _ in range(WORKERS - 1):
        client = server.connect()
        client.send(b"sleep 10000\n")
        [(_, reply)] = client.receive_lines(1, within=seconds(2))
        reported = int(reply.split()[0])
        pid = server.pid_of(reported)
        if pid in answered or reply != f"{reported} sleeping".encode():
            story.fail(f"'PID sleeping' from a worker that is not asleep already (asleep: {sorted(answered)})",
                       f"{reply.decode('latin-1')!r}")
        answered.add(pid)
        story.step(f"worker {pid} is asleep for 10 s, holding {client.name}")
    last = server.connect()
    pid = ask_pid(last)
    if pid in answered:
        story.fail("the pid of a worker that is not asleep", f"{pid}, which is asleep")
    answered.add(pid)
    story.step(f"{last.name} was answered by worker {pid}, while the {WORKERS - 1} others slept")
    return answered


@see("Step 1: fork a worker, watch it")
def test_workers_serve_side_by_side(server, story):
    workers = wait_for_workers(server, story)
    answered = serve_side_by_side(server, story)
    if answered != workers:
        story.fail(f"the answers to come from the server's own {WORKERS} workers", f"they came from {sorted(answered)}")


@see("Step 3: reap, and replace")
def test_killed_worker_is_replaced_within_a_second(server, story):
    workers = wait_for_workers(server, story)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    story.step(f"killed worker {victim} with SIGKILL")
    client = server.connect()
    pid = ask_pid(client)  # the others serve on, undisturbed
    story.step(f"{client.name} was answered by worker {pid}")
    replaced = wait_for_workers(server, story, expected_gone=victim)
    answered = serve_side_by_side(server, story)  # the new worker serves too
    if answered != replaced:
        story.fail(f"the answers to come from the {WORKERS} running workers {sorted(replaced)}",
                   f"they came from {sorted(answered)}")


@see("Step 3: reap, and replace")
def test_dead_workers_leave_no_zombies(server, story):
    workers = wait_for_workers(server, story)
    victims = sorted(workers)[:2]
    for victim in victims:
        os.kill(victim, signal.SIGKILL)
    story.step(f"killed workers {victims[0]} and {victims[1]} with SIGKILL")
    wait_for_workers(server, story, expected_gone=victims[1])

    def zombies() -> list[int]:
        return sorted(pid for pid, state in server.children().items() if state == "Z")

    if not eventually(lambda: not zombies(), seconds(1)):
        story.fail("the dead workers reaped: no zombie child left within 1 s",
                   f"zombies {zombies()}: dead, and never waited for")
    story.step("no child of the server was a zombie")


@see("The supervisor's loop")
def test_idle_supervisor_uses_no_cpu(server, story):
    wait_for_workers(server, story)
    ask_pid(server.connect())
    server.expect_idle(window=seconds(1))


@see("Step 4: stop them all")
def test_sigterm_leaves_no_process_behind(server, story):
    wait_for_workers(server, story)
    # Every worker answers first (three of them then sleep): a worker that has served has made SIGTERM do its
    # default action again. One just forked may still ignore it for an instant, and would wait for kStopDeadlineMs.
    workers = serve_side_by_side(server, story)
    story.step("three workers are asleep for 10 s: SIGTERM must end them all the same")
    server.send_signal(signal.SIGTERM)
    server.expect_exit(0, within=seconds(3))
    left = sorted(pid for pid in workers if alive(pid))
    if left:
        story.fail("every worker ended before the supervisor exited", f"workers {left} still run")
    story.step("no worker was left running")


@see("Step 4: stop them all")
def test_sigint_leaves_no_process_behind(server, story):
    """Ctrl-C (SIGINT) stops the server as SIGTERM does: the supervisor watches both. And once stopping, it
    replaces no worker that ends: the workers have lived over a second by then, the age at which a dead worker is
    replaced at once (younger, replace() would wait kRestartDelayMs, and the timer finds the supervisor stopping)."""
    started = time.monotonic()
    # Every worker answers first: a worker that has served has made SIGTERM do its default action again, and the
    # supervisor's SIGTERM ends it at once (one just forked may still ignore it, and wait for kStopDeadlineMs).
    workers = serve_side_by_side(server, story)
    time.sleep(max(0.0, 1.2 - (time.monotonic() - started)))  # the workers' age, not a wait for something
    story.step("the workers have lived over a second")
    server.send_signal(signal.SIGINT)
    story.step("sent SIGINT to the supervisor, as Ctrl-C does")
    server.expect_exit(0, within=seconds(3))
    left = sorted(pid for pid in workers if alive(pid))
    if left:
        story.fail("every worker ended before the supervisor exited", f"workers {left} still run, orphaned")
    story.step("no worker was left running")
    # The supervisor reports every worker that ends; one it does not know is one it forked after the stop began.
    reported = {int(found.group(1)) for line in server.messages()
                if (found := re.search(r"supervisor: worker (\d+) (?:killed|exited)", line))}
    if reported - set(workers):
        story.fail("no new worker once the supervisor is stopping",
                   f"workers {sorted(reported - set(workers))} were started after SIGINT (and ended)")
    story.step("no worker was started after SIGINT")


@see("Many workers, one listening socket")
def test_workers_survive_the_thundering_herd(server, story):
    """Every new connection wakes every idle worker; all but one get EAGAIN from accept(), which is no error: the
    same workers are still there after many connections. To make sure they all race for the same connections, the
    workers are stopped (SIGSTOP) while clients connect, and let go (SIGCONT) together."""
    workers = wait_for_workers(server, story)
    for herd in range(6):
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        if not eventually(lambda: all(server.children().get(pid) in ("T", "Z", None) for pid in workers), seconds(5)):
            story.fail("the workers to stop on SIGSTOP", f"the server's children: {server.children()}")
        clients = [server.connect() for _ in range(100)]
        for client in clients:
            client.send(b"pid\n")
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        for client in clients:
            client.receive_lines(1, within=seconds(2))
            client.close()
        story.step(f"herd {herd + 1}: the {WORKERS} workers, stopped while 100 clients connected, were let go "
                   f"together, and the 100 were answered")
    now = running_workers(server)
    if now != workers:
        story.fail(f"the same {WORKERS} workers after 6 herds: losing the race for a connection (EAGAIN from "
                   f"accept()) ends no worker", f"workers {sorted(workers - now)} ended, "
                   f"{sorted(now - workers) or 'none'} took their place")
    story.step(f"the {WORKERS} workers were still the same")


@see("Step 3: reap, and replace")
def test_how_a_worker_ended_is_told(server, story):
    """The supervisor says on stderr how each worker ended, as waitpid()'s status tells it: a worker killed with
    SIGKILL was killed by signal 9 (with SIGCHLD ignored, the kernel reaps it first, and waitpid() can tell
    nothing)."""
    workers = wait_for_workers(server, story)
    mark = len(server.messages())
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    story.step(f"killed worker {victim} with SIGKILL")
    server.expect_message(r"(?i)signal\D{0,3}9\b|SIGKILL|\bkilled\b",
                          "that says a worker was killed by signal 9 (SIGKILL)", since=mark, within=seconds(2))
