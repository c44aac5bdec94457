"""Lesson 12: a TCP proxy. The tests run the upstream themselves (Upstream, below), start the proxy with
--upstream pointing at it, and connect clients to the proxy: what a client sends must reach the upstream, and what
the upstream sends must reach the client, whole, in order, at the pace of the slower side."""
from __future__ import annotations

import platform
import socket
import threading
from pathlib import Path

import pytest

from vocabulary import Stall, eventually, largest_send_buffer, patterned, seconds, see, show


class Upstream:
    """A server for the proxy to connect to, run by the test: each connection it accepts is handed to
    `behaviour(connection, upstream)` on a thread of its own. Every wait is bounded; close() ends it all."""

    def __init__(self, behaviour) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopping = threading.Event()
        self.resume = threading.Event()  # for a behaviour that waits before reading
        self.received = bytearray()       # what a behaviour read, for the test to check
        self.ended = threading.Event()    # a behaviour saw its connection end
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.connections: list[socket.socket] = []
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            connection.settimeout(seconds(30))
            self.connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            self.behaviour(connection, self)
        except OSError:
            pass
        self.ended.set()

    def close(self) -> None:
        self.stopping.set()
        self.resume.set()
        self.listener.close()
        for connection in self.connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # wakes a behaviour's thread blocked in recv()
            except OSError:
                pass
            connection.close()
        for thread in self.threads:
            thread.join(seconds(5))


def echo(connection: socket.socket, upstream: Upstream) -> None:
    while chunk := connection.recv(65536):
        connection.sendall(chunk)
    connection.shutdown(socket.SHUT_WR)


REPLY = patterned(2 << 20)


def reply_after_eof(connection: socket.socket, upstream: Upstream) -> None:
    """A request-then-EOF protocol: reads the whole request, then sends a long reply and closes."""
    while connection.recv(65536):
        pass
    connection.sendall(REPLY)
    connection.close()


def paused_reader(connection: socket.socket, upstream: Upstream) -> None:
    """Reads nothing until the test says resume, then everything, until the end of the stream."""
    upstream.resume.wait(seconds(60))
    while chunk := connection.recv(1 << 20):
        upstream.received += chunk


@pytest.fixture
def upstream():
    started: list[Upstream] = []

    def start(behaviour) -> Upstream:
        started.append(Upstream(behaviour))
        return started[-1]

    yield start
    for running in started:
        running.close()


def settled_descriptors(server, story) -> int:
    """The proxy's open descriptors after one client has come through and gone: what kqlab's Linux layer opens on
    first use (a timer's descriptor) is counted in, so that only what a session leaves behind shows."""
    with story.summarized("a first client sent 'hello' through the proxy, got it back and closed"):
        client = server.connect()
        client.send(b"hello")
        client.expect(b"hello")
        client.close()
    server.wait_until_quiet(within=seconds(2))
    return server.open_descriptors()


def _limit(path: str) -> int:
    file = Path(path)
    return int(file.read_text().split()[-1]) if file.exists() else 8 << 20


@see("The program you are finishing")
def test_bytes_flow_both_ways(start_server, upstream):
    server = start_server("--upstream", upstream(echo).address)
    client = server.connect()
    payload = patterned(1 << 20)
    client.send(payload)
    client.expect(payload, within=seconds(10))
    client.shut_write()
    client.expect_close(within=seconds(5))


@see("Step 3: passing on the end of the stream")
def test_request_then_eof_gets_the_whole_reply(start_server, upstream, story):
    server = start_server("--upstream", upstream(reply_after_eof).address)
    client = server.connect()
    client.send(b"GET / please\n")
    client.shut_write()
    got = client.read_until_close(within=seconds(10))
    if got != REPLY:
        story.fail(f"the upstream's whole reply, {len(REPLY)} bytes, then the end of the stream",
                   f"{len(got)} bytes ({show(got[:40])}...) and then the end")


@see("Step 2: the slower side sets the pace")
def test_slow_reader_bounds_the_buffer(start_server, upstream, story):
    paused = upstream(paused_reader)
    server = start_server("--upstream", paused.address, "--buffer-bytes", "65536")
    client = server.connect()
    # What TCP itself may hold while nobody reads: the client's send buffer, the proxy's receive and send buffers,
    # the upstream's receive buffer, each at most what the kernel lets it grow to. The proxy adds 64 KiB.
    held_by_tcp = 2 * largest_send_buffer() + 2 * max(_limit("/proc/sys/net/ipv4/tcp_rmem"), 1 << 20)
    payload = patterned(held_by_tcp + (32 << 20))
    sent = client.send_until_stuck(payload)
    if len(sent) > held_by_tcp + (1 << 20):
        story.fail(f"the proxy to stop reading once its 64 KiB buffer is full (at most {held_by_tcp + (1 << 20)} "
                   f"bytes taken in all, with what TCP holds)", f"it took {len(sent)} bytes while the upstream read "
                   f"nothing: its memory grows with whatever a fast client sends")
    paused.resume.set()
    story.step("the upstream started reading")
    client.shut_write()
    moving = Stall()
    last = [0]

    def done() -> bool:  # the upstream has read to the end, or nothing has moved for a few seconds
        if len(paused.received) != last[0]:
            last[0] = len(paused.received)
            moving.progress()
        return paused.ended.is_set() or moving.too_long()

    eventually(done, seconds(60))
    if not paused.ended.is_set() or bytes(paused.received) != sent:
        story.fail(f"all {len(sent)} bytes the client sent to reach the upstream, in order, once it read",
                   f"{len(paused.received)} bytes, {'in order' if sent.startswith(bytes(paused.received)) else 'not in order'}")
    story.step("the upstream received every byte, in order")


@see("Step 1: connecting without blocking")
def test_refused_upstream_is_explained(start_server, story):
    closed = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # nothing listens there now: a connect() is refused
    server = start_server("--upstream", address)
    for _ in range(2):
        client = server.connect()
        line = client.read_until_close(within=seconds(5))
        expected = f"proxy: cannot reach upstream {address}: "
        if not line.startswith(expected.encode()) or b"refused" not in line.lower() or not line.endswith(b"\n"):
            story.fail(f"one line '{expected}Connection refused', then the end of the stream", show(line))


@pytest.mark.skipif(platform.system() != "Linux",
                    reason="a full listen queue makes Linux drop new SYNs, so a connect() to it hangs; FreeBSD's and "
                           "macOS's SYN caches may answer them instead")
@see("Step 1: connecting without blocking")
def test_silent_upstream_times_out(start_server, story):
    # An upstream that never answers, on loopback: a listening socket that accepts nothing, its queue (of one)
    # filled by other connections, so that the kernel drops the proxy's SYN and keeps retrying for minutes.
    silent = socket.create_server(("127.0.0.1", 0), backlog=0)
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    fillers = [socket.socket() for _ in range(3)]
    try:
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", silent.getsockname()[1]))
        story.step(f"filled the listen queue of {address}, which accepts nothing")
        server = start_server("--upstream", address, "--connect-timeout-ms", "300")
        client = server.connect()
        line = client.read_until_close(within=seconds(3))
        expected = f"proxy: cannot reach upstream {address}: no answer within 300 ms\n"
        if line != expected.encode():
            story.fail(f"one line {expected.strip()!r}, then the end of the stream", show(line))
    finally:
        for filler in fillers:
            filler.close()
        silent.close()


@see("Step 4: ending a session")
def test_vanishing_client_leaks_nothing(start_server, upstream, story):
    echoing = upstream(echo)
    server = start_server("--upstream", echoing.address)
    baseline = settled_descriptors(server, story)
    with story.summarized("5 clients each sent 'hi' through the proxy, got it back, and vanished (RST)"):
        for _ in range(5):
            client = server.connect()
            client.send(b"hi")
            client.expect(b"hi")
            client.reset()
    server.expect_descriptors(baseline, within=seconds(3))


@see("Step 2: the slower side sets the pace")
def test_no_spinning_while_idle(start_server, upstream):
    server = start_server("--upstream", upstream(echo).address)
    clients = [server.connect() for _ in range(3)]
    for client in clients:
        client.send(b"ping")
        client.expect(b"ping")
    server.expect_idle(1.0)
