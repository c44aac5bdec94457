"""Lesson 06: signals and user events. SIGHUP re-reads the greeting, repeated signals are all counted, SIGTERM and
SIGINT stop the server without losing a reply it promised, and slow work done on a worker thread never slows the
loop down."""
import contextlib
import errno
import os
import signal
import socket
import threading
import time

import pytest

from vocabulary import eventually, see, seconds

VERSION_1 = "hello from version 1"
VERSION_2 = "hello from version 2"

# A square takes the server's worker 40 ms (slow_square in the lesson's program): fifty take two seconds. The loop
# must answer an echo meanwhile as fast as ever; doing the squares in the loop delays it by two seconds, ten times
# the bound.
SQUARES = 50
ECHO_BOUND = seconds(0.2)
PING_WINDOW = 1.0  # half the time the squares take, on any machine: they sleep, they do not compute


@pytest.fixture
def config(tmp_path, story):
    path = tmp_path / "greeting.conf"
    path.write_text(VERSION_1 + "\n")
    story.step(f"wrote '{VERSION_1}' in the configuration file")
    return path


@pytest.fixture
def server(start_server, config):
    return start_server("--config", str(config))


def greeted(server, greeting=VERSION_1):
    client = server.connect()
    client.expect(f"{greeting}\n".encode())
    return client


def ask(client, request: str) -> str:
    """Sends one request line and returns the one line that answers it."""
    client.send(f"{request}\n".encode())
    [(_, reply)] = client.receive_lines(1, within=seconds(2))
    return reply.decode("latin-1")


@contextlib.contextmanager
def surviving(server, number: signal.Signals):
    """Whatever fails inside, a server that the signal killed is reported as such, with the section to reread."""
    try:
        yield
    except pytest.fail.Exception:
        # A connection that the server's end closed is seen a moment before its parent can see the process end.
        eventually(lambda: not server.running(), within=seconds(1))
        if server.process.returncode != -number:
            raise
    else:
        return
    server.story.section = "Step 1: ignore the signal, then watch it"
    report = server.story.report(f"{number.name} handled by the server's loop: EVFILT_SIGNAL only watches, and unless "
                                 f"the signal is ignored its default action still ends the process",
                                 f"the server {server.state()}")
    raise pytest.fail.Exception(report, pytrace=False) from None  # this report alone, not the one it replaces


@see("Step 2: act on a signal in the loop")
def test_sighup_reloads_greeting_for_new_clients(server, config, story):
    first = greeted(server)
    config.write_text(VERSION_2 + "\n")
    story.step(f"wrote '{VERSION_2}' in the configuration file, and sent no signal")
    greeted(server, VERSION_1)  # the file is read on SIGHUP, not for every client
    server.send_signal(signal.SIGHUP)
    # The signal is handled when the loop gets to it: a client that connects at that moment may still get version 1.
    deadline = time.monotonic() + seconds(2)
    with surviving(server, signal.SIGHUP), story.summarized(f"new clients connected until one was greeted with "
                                                       f"'{VERSION_2}'"):
        while True:
            client = server.connect()
            [(_, greeting)] = client.receive_lines(1, within=seconds(2))
            if greeting.decode("latin-1") == VERSION_2:
                break
            if greeting.decode("latin-1") != VERSION_1 or time.monotonic() > deadline:
                story.fail(f"new clients greeted with '{VERSION_2}' within 2 s of SIGHUP",
                           f"{greeting.decode('latin-1')!r}")
            client.close()
    # The first client is not greeted again: a reload is for new clients.
    first.send(b"echo still here\n")
    first.expect(b"still here\n")


@see("Step 2: act on a signal in the loop")
def test_repeated_signals_are_counted(server, story):
    client = greeted(server)
    got = ask(client, "stats")
    if got != "reloads 0":
        story.fail("'reloads 0' before any SIGHUP", repr(got))
    for sent in range(1, 6):
        # One at a time, and each acknowledged before the next: a signal sent again while the first is still
        # pending may be merged with it by some kernels (Linux), and the lesson counts what the queue reports.
        server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + seconds(2)
        while (got := ask_surviving(server, client, "stats", signal.SIGHUP)) != f"reloads {sent}":
            if got != f"reloads {sent - 1}" or time.monotonic() > deadline:
                story.fail(f"'reloads {sent}' after {sent} SIGHUPs, each sent once the previous one was counted",
                           repr(got))
            time.sleep(0.01)  # between two questions: the answer changes when the loop handles the signal
        story.step(f"stats said 'reloads {sent}'")


def ask_surviving(server, client, request: str, number: signal.Signals) -> str:
    with surviving(server, number):
        return ask(client, request)


def send_squares_and_wait_until_read(clients, numbers_of):
    """Each client sends its squares and then an echo; the echo's answer (immediate) says the server has read the
    squares before it. Returns, for each client, the square results that came before that answer."""
    early = {}
    for client in clients:
        requests = "".join(f"square {n}\n" for n in numbers_of[client]) + "echo all sent\n"
        client.send(requests.encode())
    for client in clients:
        early[client] = []
        while True:
            [(_, line)] = client.receive_lines(1, within=seconds(2))
            if line == b"all sent":
                break
            early[client].append(line)
    return early


def expect_squares(client, numbers, early, within):
    expected = sorted(f"square {n} = {n * n}".encode() for n in numbers)
    got = early + [line for _, line in client.receive_lines(len(numbers) - len(early), within=within)]
    if sorted(got) != expected:
        client.story.fail(f"{client.name} gets {[line.decode() for line in expected]}",
                          f"{[line.decode('latin-1') for line in sorted(got)]}")
    client.story.step(f"{client.name} got its {len(numbers)} squares")


@see("Step 3: stop gracefully")
def test_sigterm_finishes_replies_in_flight(server, story):
    with story.summarized("5 clients connected and were greeted"):
        clients = [greeted(server) for _ in range(5)]
    numbers_of = {client: [100 * k + j for j in range(3)] for k, client in enumerate(clients, 1)}
    with story.summarized("each client sent 3 squares, then an echo whose answer showed the squares were read"):
        early = send_squares_and_wait_until_read(clients, numbers_of)
    server.send_signal(signal.SIGTERM)
    with surviving(server, signal.SIGTERM), story.summarized("each client got all of its 3 squares after SIGTERM, then "
                                                        "its connection closed"):
        for client in clients:
            expect_squares(client, numbers_of[client], early[client], within=seconds(5))
            client.expect_close(within=seconds(2))
    server.expect_exit(0, within=seconds(3))


@see("Step 3: stop gracefully")
def test_sigint_stops_gracefully_too(server, story):
    client = greeted(server)
    early = send_squares_and_wait_until_read([client], {client: [7]})
    server.send_signal(signal.SIGINT)
    with surviving(server, signal.SIGINT):
        expect_squares(client, [7], early[client], within=seconds(2))
        client.expect_close(within=seconds(2))
    server.expect_exit(0, within=seconds(3))


@see("Step 3: stop gracefully")
def test_stopping_server_takes_nothing_new(server, story):
    """While a client is still owed squares, a stopping server takes no new client (its listening socket is closed)
    and no new request (its clients' EVFILT_READ is deleted), and sleeps meanwhile: a read event it no longer
    wants, left registered, fires on every wait. A second SIGTERM changes nothing."""
    busy, idle = greeted(server), greeted(server)
    numbers = list(range(1, 26))  # 25 squares: a second of the worker's time
    early = send_squares_and_wait_until_read([busy], {busy: numbers})
    server.send_signal(signal.SIGTERM)
    with surviving(server, signal.SIGTERM):
        idle.expect_close(within=seconds(2))  # owed nothing, so closed at once: the stop has begun
        expect_no_new_client(server, story)
        server.send_signal(signal.SIGTERM)  # a second one, handled apart from the first: it changes nothing
        busy.send(b"echo one more\n")
        # Not scaled: the window must end before the squares do, on any machine (they sleep, they do not compute).
        server.expect_idle(window=0.4)
        with story.summarized("client 1 got its 25 squares, and no answer to the request sent after SIGTERM"):
            expect_squares(busy, numbers, early[busy], within=seconds(5))
        busy.expect_close(within=seconds(2))
    server.expect_exit(0, within=seconds(3))


def expect_no_new_client(server, story) -> None:
    """Once the stop has begun, a new connection is refused (the listening socket is closed): never greeted."""
    try:
        with socket.create_connection((server.host, server.port), timeout=seconds(2)) as sock:
            got = sock.recv(256)
    except (ConnectionRefusedError, ConnectionResetError):
        story.step("a new client was refused: the listening socket is closed")
        return
    except socket.timeout:
        got = None
    if got:
        story.fail("a new client refused once the stop has begun (the listening socket closed)",
                   f"it was accepted and got {got!r}")
    if got is None:
        story.fail("a new client refused once the stop has begun (the listening socket closed)",
                   "it was accepted, and left waiting")
    story.step("a new client was accepted and closed at once, unserved")


@see("Step 5: take every result")
def test_results_of_a_client_gone_reach_nobody(server, story):
    """A client that leaves with squares in flight gives its descriptor number back; the next client to connect
    gets it. The results, when they come, are the old client's: the newcomer must never see them."""
    before = server.open_descriptors()
    leaver = greeted(server)
    send_squares_and_wait_until_read([leaver], {leaver: list(range(1, 11))})  # 10 squares: 0.4 s of work
    leaver.close()
    server.expect_descriptors(at_most=before, within=seconds(2))  # the server has closed it: its number is free
    newcomer = greeted(server)  # accept() hands out the lowest free number: the leaver's
    newcomer.send(b"echo hello\n")
    newcomer.expect(b"hello\n")
    newcomer.expect_silence(0.6)  # until well after the leaver's squares are done


@see("Step 4: wake the loop with EVFILT_USER")
def test_fifty_slow_requests_keep_echo_fast(server, story):
    with story.summarized(f"{SQUARES} clients connected and were greeted"):
        clients = [greeted(server) for _ in range(SQUARES)]
    pinger = greeted(server)
    pinger.name = "the pinger"
    with story.summarized(f"each of the {SQUARES} clients sent 'square N' (40 ms of work each, "
                          f"{SQUARES * 0.04:.0f} s in all)"):
        for number, client in enumerate(clients, 1000):
            client.send(f"square {number}\n".encode())
    pings = []
    window_ends = time.monotonic() + PING_WINDOW
    with story.summarized(f"the pinger sent an echo request every 20 ms for {PING_WINDOW:.0f} s, each answered "
                          f"within {ECHO_BOUND:.2f} s"):
        while time.monotonic() < window_ends:
            sent = time.monotonic()
            pinger.send(f"echo ping {len(pings)}\n".encode())
            [(arrived, reply)] = pinger.receive_lines(1, within=seconds(5))
            pings.append(arrived - sent)
            if reply != f"ping {len(pings) - 1}".encode():
                story.fail(f"'ping {len(pings) - 1}' back", repr(reply))
            if pings[-1] > ECHO_BOUND:
                story.fail(f"echo {len(pings)} answered within {ECHO_BOUND:.2f} s while the squares are worked on",
                           f"its answer took {pings[-1]:.2f} s: the loop was busy with something else")
            time.sleep(0.02)  # a ping every 20 ms or so is enough to see the loop stall, and spares the machine
    story.step(f"{len(pings)} echoes answered, the slowest in {max(pings) * 1000:.0f} ms")
    with story.summarized(f"each of the {SQUARES} clients got its own square back"):
        for number, client in enumerate(clients, 1000):
            client.expect(f"square {number} = {number * number}\n".encode(), within=seconds(10))


class BlockingConfig:
    """A configuration "file" that is a named pipe (FIFO): the server's reload waits in fopen() and fgets() until
    the test opens the other end and writes. No other lever holds the loop still while the rest of the process
    runs (SIGSTOP would stop the worker and the signal handling too), and a loop held still is what makes
    signals, and results, pile up for one event, as they do on a busy server."""

    def __init__(self, path, story):
        self.path = path
        self.story = story
        os.mkfifo(path)

    def open_when_read(self, within: float) -> int:
        """Opens the writing end once the server has opened the reading end (O_NONBLOCK: ENXIO until then);
        returns it. The server then waits in fgets() until write()."""
        deadline = time.monotonic() + within
        while True:
            try:
                return os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                if error.errno != errno.ENXIO:
                    raise
            if time.monotonic() > deadline:
                self.story.fail(f"the server to open {self.path.name} to read it within {within:g} s", "it did not")
            time.sleep(0.01)

    def write(self, end: int, text: str) -> None:
        os.write(end, f"{text}\n".encode())
        os.close(end)

    def serve(self, text: str, within: float) -> None:
        self.write(self.open_when_read(within), text)

    def release(self, end: int, text: str) -> None:
        """Lets the reload under way read `text`, and makes the file a plain one with the same line, so that the
        reloads after it do not wait (their fopen() could otherwise meet this writer still open)."""
        plain = self.path.with_suffix(".plain")
        plain.write_text(f"{text}\n")
        os.replace(plain, self.path)
        self.write(end, text)


@pytest.fixture
def blocking_config(tmp_path, story):
    return BlockingConfig(tmp_path / "greeting.fifo", story)


def start_with_blocking_config(start_server, blocking_config):
    feeder = threading.Thread(target=blocking_config.serve, args=(VERSION_1, seconds(10)), daemon=True)
    feeder.start()  # the server reads its greeting once before it listens
    server = start_server("--config", str(blocking_config.path))
    feeder.join()
    server.story.step(f"the server read '{VERSION_1}' from a named pipe (FIFO) as its configuration file")
    return server


@see("Step 2: act on a signal in the loop")
def test_signals_that_pile_up_are_all_counted(start_server, blocking_config, story):
    """While the loop is held up (reading its configuration, here from a FIFO that the test feeds), three SIGHUPs
    arrive, far enough apart that the kernel delivers each one: the next event about SIGHUP says data 3. A loop
    that counts events, not `data`, says one."""
    server = start_with_blocking_config(start_server, blocking_config)
    client = greeted(server)
    server.send_signal(signal.SIGHUP)
    held = blocking_config.open_when_read(seconds(5))
    story.step("the server's reload waits for the FIFO: the loop is held up")
    for _ in range(3):
        time.sleep(seconds(0.1))  # apart: a signal sent while the last is still pending may merge with it
        server.send_signal(signal.SIGHUP)
    blocking_config.release(held, VERSION_2)
    story.step(f"the test let the reload read '{VERSION_2}'")
    deadline = time.monotonic() + seconds(2)
    while (got := ask_surviving(server, client, "stats", signal.SIGHUP)) != "reloads 4":
        # 'reloads 1' until the loop gets to the event about the three
        if got != "reloads 1" or time.monotonic() > deadline:
            story.fail("'reloads 4' after 4 SIGHUPs, 3 of them reported in one event (data 3)", repr(got))
        time.sleep(0.01)
    story.step("stats said 'reloads 4'")


@see("Step 5: take every result")
def test_results_that_pile_up_are_all_taken(start_server, blocking_config, story):
    """While the loop is held up (a reload waiting on a FIFO that the test feeds), the worker finishes five
    squares and triggers the user event five times: the triggers merge into one event. A loop that takes one
    result per event leaves four waiting for a wake-up that never comes."""
    server = start_with_blocking_config(start_server, blocking_config)
    client = greeted(server)
    numbers = [11, 12, 13, 14, 15]
    early = send_squares_and_wait_until_read([client], {client: numbers})
    server.send_signal(signal.SIGHUP)
    held = blocking_config.open_when_read(seconds(5))
    story.step("the server's reload waits for the FIFO: the loop is held up")
    time.sleep(seconds(1))  # the worker's five squares take 0.2 s; this is the time they are given, not a check
    blocking_config.release(held, VERSION_2)
    story.step("the worker had the time to finish the five squares; the test let the reload finish")
    expect_squares(client, numbers, early[client], within=seconds(2))
