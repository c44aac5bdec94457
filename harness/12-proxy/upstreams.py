"""The servers lesson 12's proxy is tested against, run by the test itself, on loopback: each in threads of the
test process, each bounded (every socket has a timeout, every thread is a daemon and stops with its server).

- Echo: sends back what it gets; at the client's EOF, closes.
- Holder: takes connections and reads nothing until told to (a slow reader), then reads everything; at EOF or a
  reset, closes. Counts what it got, per connection, and how each ended.
- Breaker: sends part of a reply, then resets the connection.
- Responder: a request-then-EOF protocol: reads the request to its end, then sends its reply, then closes.
- Firehose: sends as much as the connection takes, reading nothing.
- a refused port (nothing listens there) and a full backlog (a listener that never accepts, its queue full, so a
  connect() gets no answer).
"""
from __future__ import annotations

import select
import socket
import struct
import threading
import time

from vocabulary import patterned, seconds


class Upstream:
    """A listening socket on 127.0.0.1 and a thread accepting on it; `handle(connection, number)` runs in a thread
    of its own for each connection."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            readable, _, _ = select.select([self.listener], [], [], 0.1)
            if not readable:
                continue
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            with self.lock:
                self.connections.append(connection)
                number = len(self.connections) - 1
            threading.Thread(target=self._run, args=(connection, number), daemon=True).start()

    def _run(self, connection: socket.socket, number: int) -> None:
        try:
            self.handle(connection, number)
        except OSError:
            pass
        finally:
            connection.close()

    def handle(self, connection: socket.socket, number: int) -> None:
        raise NotImplementedError

    def accepted(self) -> int:
        with self.lock:
            return len(self.connections)

    def receive(self, connection: socket.socket) -> bytes | None:
        """One read, waiting at most a tenth of a second; b"" at EOF, None if nothing came (or it is stopping)."""
        readable, _, _ = select.select([connection], [], [], 0.1)
        if self.stopped.is_set() or not readable:
            return None
        return connection.recv(1 << 16)

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


class Echo(Upstream):
    def handle(self, connection: socket.socket, number: int) -> None:
        while (data := self.receive(connection)) != b"":
            if data:
                connection.sendall(data)


class Holder(Upstream):
    """Reads nothing until start_reading(); then everything, until EOF or a reset."""

    def __init__(self, reading: bool = False) -> None:
        self.reading = threading.Event()
        if reading:
            self.reading.set()
        self.received: dict[int, bytearray] = {}
        self.ended: dict[int, str] = {}  # connection number -> "EOF" or "reset"
        super().__init__()

    def start_reading(self) -> None:
        self.reading.set()

    def handle(self, connection: socket.socket, number: int) -> None:
        self.received[number] = bytearray()
        while not self.stopped.is_set():
            if not self.reading.wait(0.1):
                continue
            try:
                data = self.receive(connection)
            except ConnectionResetError:
                self.ended[number] = "reset"
                return
            if data == b"":
                self.ended[number] = "EOF"
                return
            if data:
                self.received[number] += data


class Responder(Upstream):
    """Reads the request until EOF, then replies: a line saying how many bytes the request had and whether they
    were the pattern, then `reply_size` bytes of the pattern; then closes."""

    def __init__(self, reply_size: int) -> None:
        self.reply_size = reply_size
        super().__init__()

    def handle(self, connection: socket.socket, number: int) -> None:
        request = bytearray()
        while (data := self.receive(connection)) != b"":
            if self.stopped.is_set():
                return
            if data:
                request += data
        connection.sendall(self.header(bytes(request)) + patterned(self.reply_size))

    @staticmethod
    def header(request: bytes) -> bytes:
        intact = "intact" if request == patterned(len(request)) else "garbled"
        return f"request of {len(request)} bytes, {intact}\n".encode()


class Breaker(Upstream):
    """Reads a request line, sends `size` bytes of the pattern, and resets the connection (SO_LINGER 0): a server
    that crashes in the middle of its reply."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__()

    def handle(self, connection: socket.socket, number: int) -> None:
        request = bytearray()
        while b"\n" not in request and (data := self.receive(connection)) != b"":
            request += data or b""
        connection.sendall(patterned(self.size))
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Firehose(Upstream):
    """Sends up to `size` bytes of the pattern to each connection, as fast as it takes them, reading nothing; stops
    when all is sent or nothing has been taken for a second. `sent[number]` says how much was taken."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent: dict[int, int] = {}
        self.stuck: dict[int, threading.Event] = {}
        super().__init__()

    def handle(self, connection: socket.socket, number: int) -> None:
        data = memoryview(patterned(self.size))
        self.sent[number] = 0
        self.stuck[number] = threading.Event()
        connection.setblocking(False)
        last = time.monotonic()
        while self.sent[number] < self.size and time.monotonic() - last < seconds(1) and not self.stopped.is_set():
            _, writable, _ = select.select([], [connection], [], 0.1)
            if writable:
                try:
                    self.sent[number] += connection.send(data[self.sent[number]:self.sent[number] + (1 << 20)])
                    last = time.monotonic()
                except BlockingIOError:
                    pass
        self.stuck[number].set()
        self.stopped.wait()  # keeps the connection open: the proxy still owes the client what was taken


def refused_port() -> int:
    """A port on 127.0.0.1 where nothing listens: a connect() there is refused."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


class FullBacklog:
    """A listener that never accepts, with its queue filled: a new connect() to it gets no answer at all (the
    kernel drops the SYN) until it gives up, which is what an upstream that is down behind a firewall looks like."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(16):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(filler)
            _, writable, _ = select.select([], [filler], [], 0.3)
            if not writable:
                return  # this one got no answer: the queue is full
        raise RuntimeError("could not fill a listening queue: every connect() was answered")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()
