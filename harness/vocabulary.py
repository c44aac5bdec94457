"""The words kqlab's lesson tests are written in, so that each test reads like its spec:

    @see("Step 4: write back, and partial writes")
    def test_partial_writes(server):
        client = server.connect(receive_buffer=SMALL_BUFFER)
        sent = client.send_until_stuck(overflowing_payload())
        client.expect(sent, within=seconds(30))

Every action is written down as a step of the test's story. When an expectation fails, the report replays the
steps, says what was expected and what came, how the server is doing and what it last printed on stderr (it runs
with KQLAB_TRACE=1, so that is its last kevent() calls), and which section of the lesson to reread.

Every wait is bounded, by a deadline scaled with KQLAB_TIMEOUT_SCALE (e.g. 3 on a slow machine), and waits for a
condition; time alone is waited for only where time is what is measured (how much CPU an idle server uses, how
long a transfer has not moved). Servers listen on port 0 and say which port they got.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import importlib.util
import os
import platform
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
import types
from pathlib import Path
from typing import Callable, Iterator

import pytest

SCALE = float(os.environ.get("KQLAB_TIMEOUT_SCALE") or 1)

# A receive buffer small enough that a client which reads slowly fills it at once.
SMALL_BUFFER = 4096


def seconds(base: float) -> float:
    """A timeout: `base` seconds, scaled by KQLAB_TIMEOUT_SCALE."""
    return base * SCALE


def see(section: str) -> pytest.MarkDecorator:
    """Names the section of the lesson's README that a failure of this test should send the student back to."""
    return pytest.mark.see(section)


def from_lesson(lesson: str) -> types.SimpleNamespace:
    """The tests of another lesson, harness/`lesson`/test_*.py, to run again against this lesson's program with
    rerun(): lesson 10's echo server on its reactor must pass lesson 01's tests."""
    tests = types.SimpleNamespace()
    for path in sorted((Path(__file__).parent / lesson).glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"kqlab_tests_of_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, value in vars(module).items():
            if name.startswith("test_") and callable(value):
                setattr(tests, name, value)
    return tests


def rerun(test: Callable, section: str) -> Callable:
    """`test`, taken from another lesson by from_lesson(), as a test of this one: the same steps, against this lesson's
    program (its fixtures are this lesson's), a failure sending the reader to `section` of this lesson's README.

        test_partial_writes = rerun(lesson_01.test_partial_writes, "Writing: interest only while output waits")
    """
    copy = types.FunctionType(test.__code__, test.__globals__, test.__name__, test.__defaults__, test.__closure__)
    copy.__doc__ = test.__doc__
    return see(section)(copy)


def eventually(condition: Callable[[], bool], within: float) -> bool:
    """Polls `condition` until it holds (True) or `within` seconds have passed (False)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def show(data: bytes) -> str:
    """Bytes as a reader wants to see them in a report: short ones quoted, long ones counted."""
    return repr(data.decode("latin-1")) if len(data) <= 60 else f"{len(data)} bytes"


def patterned(size: int) -> bytes:
    """`size` bytes in which a lost, repeated or reordered stretch shows up at once: 8-byte offsets, counting up."""
    words = size // 8 + 1
    return struct.pack(f">{words}Q", *range(0, 8 * words, 8))[:size]


def largest_send_buffer() -> int:
    """The most a TCP socket's send buffer can grow to on this kernel (autotuning included), in bytes."""
    limits = []
    if Path("/proc/sys/net/ipv4/tcp_wmem").exists():
        limits.append(int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2]))
        limits.append(int(Path("/proc/sys/net/core/wmem_max").read_text()))
    else:
        for name in ("kern.ipc.maxsockbuf", "net.inet.tcp.sendbuf_max", "net.inet.tcp.autosndbufmax"):
            value = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True).stdout.strip()
            if value.isdigit():
                limits.append(int(value))
    return max(limits, default=8 << 20)


def overflowing_payload() -> bytes:
    """More bytes than the server's send buffer and a small client receive buffer can hold together, however far
    the kernel grows them: echoing this to a client that does not read forces partial writes."""
    return patterned(2 * largest_send_buffer() + (1 << 20))


class Story:
    """What a test did, step by step, to be replayed when it fails."""

    def __init__(self, test: str, readme: str, section: str) -> None:
        self.test = test
        self.readme = readme
        self.section = section
        self.steps: list[str] = []
        self.servers: list[Server] = []
        self._summaries: list[str] = []  # the summarized blocks under way, outermost first

    def step(self, text: str) -> None:
        if not self._summaries:
            self.steps.append(text)

    @contextlib.contextmanager
    def summarized(self, summary: str) -> Iterator[None]:
        """Writes the steps inside as one line, `summary`: fifty clients make one step, not fifty. A failure
        inside shows the summary as the step under way."""
        self._summaries.append(summary)
        try:
            yield
        finally:
            self._summaries.pop()
        self.step(summary)

    def fail(self, expected: str, got: str) -> None:
        pytest.fail(self.report(expected, got), pytrace=False)

    def report(self, expected: str, got: str) -> str:
        lines = [f"{self.test} failed. What happened:"]
        lines += [f"  {number:2}. {text}" for number, text in enumerate(self.steps, 1)]
        lines += [f"  {len(self.steps) + 1:2}. {text} <- under way when it failed" for text in self._summaries[:1]]
        lines += [f"Expected: {expected}", f"Got:      {got}"]
        for server in self.servers:
            lines += server.report()
        lines.append(f'See {self.readme}, section "{self.section}".')
        return "\n".join(lines)


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on a TCP socket that the peer's kernel has not acknowledged yet."""
    system = platform.system()
    if system == "Linux":
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]  # SIOCOUTQ
    if system == "Darwin":
        return sock.getsockopt(socket.SOL_SOCKET, 0x1024)  # SO_NWRITE
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), 0x40046677, b"\0" * 4))[0]  # FreeBSD's FIONWRITE


def _process_state(pid: int) -> str:
    """The one-letter state of a process: R running, S sleeping, T stopped, Z zombie, ..."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return stat.read_text().rpartition(")")[2].split()[0]
    return subprocess.run(["ps", "-o", "state=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()[:1]


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        fields = stat.read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15
    # ps prints [[dd-]hh:]mm:ss.cc on macOS and FreeBSD.
    text = subprocess.run(["ps", "-o", "time=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    days, _, clock = text.rpartition("-")
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total + 86400 * int(days or 0)


def _open_descriptors(pid: int) -> int:
    if Path(f"/proc/{pid}/fd").exists():
        return len(os.listdir(f"/proc/{pid}/fd"))
    if platform.system() == "FreeBSD":  # procstat is in the base system; rows whose FD column is a number
        rows = subprocess.run(["procstat", "-f", str(pid)], capture_output=True, text=True).stdout.splitlines()
        return sum(1 for row in rows[1:] if len(row.split()) > 2 and row.split()[2].isdigit())
    output = subprocess.run(["lsof", "-p", str(pid), "-F", "f"], capture_output=True, text=True).stdout
    return sum(1 for line in output.splitlines() if re.fullmatch(r"f\d+", line))


class Server:
    """A lesson program, started on port 0, with the harness reading its stdout and stderr."""

    SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|WARNING: ThreadSanitizer")

    def __init__(self, program: Path, story: Story, label: str) -> None:
        self.story = story
        self.label = label
        self.clients: list[Client] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=400)
        self._sanitizer: list[str] = []
        self._listening = threading.Event()
        self.host, self.port = "", 0
        environment = dict(os.environ, KQLAB_TRACE="1", UBSAN_OPTIONS="print_stacktrace=1")
        self.process = subprocess.Popen([str(program), "--host", "127.0.0.1", "--port", "0"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=environment)
        self.pid = self.process.pid
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()
        story.servers.append(self)
        story.step(f"started {label} (pid {self.pid})")
        deadline = time.monotonic() + seconds(10)
        while not self._listening.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._readers[0].join(1)  # let it read what was printed before the exit
                if not self._listening.is_set():
                    report = story.report("the server to print 'listening on HOST:PORT' on stdout, flushed, once "
                                          "ready", f"no such line within {seconds(10):.0f} s")
                    self.stop()  # no fixture teardown will: the test fails before it has a server
                    pytest.fail(report, pytrace=False)

    def _read_stdout(self) -> None:
        for raw in self.process.stdout:
            match = re.fullmatch(r"listening on \[?([^\]]+)\]?:(\d+)", raw.decode("utf-8", "replace").strip())
            if match and not self._listening.is_set():
                self.host, self.port = match.group(1), int(match.group(2))
                self._listening.set()

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._stderr.append(line)
            if (self._sanitizer and len(self._sanitizer) < 80) or self.SANITIZER_REPORT.search(line):
                self._sanitizer.append(line)

    # What the server is doing -------------------------------------------------------------------------------------

    def state(self) -> str:
        code = self.process.poll()
        if code is None:
            return "is still running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def running(self) -> bool:
        return self.process.poll() is None

    def report(self) -> list[str]:
        lines = [f"The server ({self.label}, pid {self.pid}) {self.state()}."]
        if self._sanitizer:
            lines.append("It reported a bug (sanitizer report, from its first line):")
            lines += [f"  | {line}" for line in self._sanitizer]
        elif self._stderr:
            tail = list(self._stderr)[-25:]
            lines.append(f"Its stderr, last {len(tail)} lines (KQLAB_TRACE=1 shows each kevent() call):")
            lines += [f"  | {line}" for line in tail]
        return lines

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.pid)

    def open_descriptors(self) -> int:
        return _open_descriptors(self.pid)

    # Acting on it -------------------------------------------------------------------------------------------------

    def connect(self, *, receive_buffer: int | None = None) -> Client:
        client = Client(self, f"client {len(self.clients) + 1}", receive_buffer)
        self.clients.append(client)
        return client

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Stops the server (SIGSTOP) for the duration of the block, so that everything the block does reaches it
        at once: the next kevent() returns it all in one batch."""
        os.kill(self.pid, signal.SIGSTOP)
        if not eventually(lambda: _process_state(self.pid) == "T" or not self.running(), seconds(5)):
            self.story.fail("the server to stop on SIGSTOP", f"state {_process_state(self.pid)!r} after 5 s")
        self.story.step("froze the server (SIGSTOP): what follows reaches it in one batch")
        try:
            yield
        finally:
            if self.running():
                os.kill(self.pid, signal.SIGCONT)
            self.story.step("let the server run again (SIGCONT)")

    def _still_running(self, expected: str) -> None:
        if not self.running():
            self.story.fail(expected, f"the server {self.state()}")

    def expect_idle(self, window: float) -> None:
        """The server uses (almost) no CPU for `window` seconds: it sleeps in kevent() while nothing happens."""
        self._still_running("the server to sleep in kevent() while nothing happens")
        before, start = self.cpu_seconds(), time.monotonic()
        time.sleep(window)  # the measurement itself, not a wait for something
        self._still_running("the server to sleep in kevent() while nothing happens")
        used = (self.cpu_seconds() - before) / (time.monotonic() - start)
        if used > 0.10:
            self.story.fail("the server to sleep in kevent() while nothing happens (at most 10% of a CPU)",
                            f"it used {used:.0%} of a CPU for {window:.1f} s")
        self.story.step(f"the server used {used:.0%} of a CPU for {window:.1f} s while nothing happened")

    def expect_descriptors(self, at_most: int, within: float) -> None:
        expected = f"at most {at_most} open descriptors in the server within {within:.0f} s"
        if not eventually(lambda: not self.running() or self.open_descriptors() <= at_most, within):
            self.story.fail(expected, f"{self.open_descriptors()}")
        self._still_running(expected)
        self.story.step(f"the server was back to at most {at_most} open descriptors")

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if that does not end it; then closes its clients' connections."""
        if self.running():
            os.kill(self.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(seconds(5))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(seconds(5))
        self.process.stdout.close()
        self.process.stderr.close()
        for client in self.clients:
            client.socket.close()


class Stall:
    """Notices when a long transfer stops moving, so a test reports it after a few seconds of silence instead of
    waiting out a deadline sized for a slow machine moving megabytes."""

    LIMIT = seconds(3)

    def __init__(self, limit: float = LIMIT) -> None:
        self.limit = limit
        self.last = time.monotonic()

    def progress(self) -> None:
        self.last = time.monotonic()

    def too_long(self) -> bool:
        return time.monotonic() - self.last >= self.limit

    def poll_interval(self) -> float:
        return max(0.0, self.limit - (time.monotonic() - self.last))

    def describe(self) -> str:
        return f"then nothing moved for {time.monotonic() - self.last:.0f} s"


class Client:
    """A TCP connection to the server under test. Bytes that arrive while the client is busy sending are kept
    (in `inbox`) for the next expectation, so a server that stops reading until its replies are read never
    deadlocks a test."""

    def __init__(self, server: Server, name: str, receive_buffer: int | None) -> None:
        self.server = server
        self.story = server.story
        self.name = name
        self.inbox = bytearray()
        self.closed_by_server = ""
        self.read_size = receive_buffer or 65536
        family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        if receive_buffer:
            # Before connect(): the window the client announces is fixed from it during the handshake.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.socket.settimeout(seconds(5))
        try:
            self.socket.connect((server.host, server.port))
        except OSError as error:
            self.story.fail(f"{name} to connect", f"{error}")
        self.socket.setblocking(False)
        buffer = f" with a {receive_buffer}-byte receive buffer" if receive_buffer else ""
        self.story.step(f"{name} connected{buffer}")

    def send(self, data: bytes) -> None:
        """Sends all of `data`, reading what comes back meanwhile only if the server takes nothing more (so a
        server that stops reading until its replies are read cannot deadlock the test)."""
        self._send(data)
        self.story.step(f"{self.name} sent {show(data)}")

    def send_until_stuck(self, data: bytes) -> bytes:
        """Sends as much of `data` as the server takes while this client reads nothing at all, until all is sent or
        the server has taken nothing more for a second. Returns the part sent, which the server owes back."""
        view, sent = memoryview(data), 0
        stalled = Stall(limit=seconds(1))
        while sent < len(data) and not stalled.too_long():
            _, writable, _ = select.select([], [self.socket], [], stalled.poll_interval())
            if writable:
                try:
                    sent += self.socket.send(view[sent:sent + (1 << 20)])
                except BlockingIOError:
                    continue
                except OSError as error:
                    self.story.fail(f"the server to take the bytes {self.name} sent", f"{error} after {sent} bytes")
                stalled.progress()
        self.story.step(f"{self.name} sent {sent} of {len(data)} bytes without reading anything, until "
                        f"{'all were sent' if sent == len(data) else 'the server took no more'}")
        return data[:sent]

    def _send(self, data: bytes) -> None:
        within = seconds(10)
        view, sent = memoryview(data), 0
        deadline = time.monotonic() + within
        stalled = Stall()
        while sent < len(data):
            if self.closed_by_server:
                self.story.fail(f"the server to take all {len(data)} bytes {self.name} sent",
                                f"it {self.closed_by_server} the connection after {sent} bytes")
            if stalled.too_long() or time.monotonic() > deadline:
                self.story.fail(f"the server to take all {len(data)} bytes {self.name} sent within {within:.0f} s",
                                f"it took {sent} bytes, {stalled.describe()}")
            readable, writable, _ = select.select([self.socket], [self.socket], [], stalled.poll_interval())
            try:
                if writable:
                    sent += self.socket.send(view[sent:sent + (1 << 20)])
                    stalled.progress()
                elif readable and self._receive():
                    stalled.progress()
            except OSError as error:
                self.story.fail(f"the server to take all {len(data)} bytes {self.name} sent",
                                f"{error} after {sent} bytes")

    def _receive(self) -> bool:
        """Reads once into the inbox; False once the server has closed the connection."""
        try:
            chunk = self.socket.recv(self.read_size)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            self.closed_by_server = "reset"
            return False
        if not chunk:
            self.closed_by_server = "closed"
            return False
        self.inbox += chunk
        return True

    def _wait_for(self, enough: Callable[[], bool], within: float) -> str:
        """Reads until `enough()`, the server closes, `within` seconds pass, or nothing has come for a while (a
        stall: the server stopped sending). Returns how the wait ended, for a report."""
        deadline = time.monotonic() + within
        stalled = Stall(limit=min(within, Stall.LIMIT))
        while not enough():
            if self.closed_by_server:
                return f"then the server {self.closed_by_server} the connection"
            if stalled.too_long() or time.monotonic() > deadline:
                return stalled.describe()
            readable, _, _ = select.select([self.socket], [], [], stalled.poll_interval())
            if readable and self._receive():
                stalled.progress()
        return ""

    def expect(self, data: bytes, within: float | None = None) -> None:
        """The next bytes from the server are `data`, all of them within `within` seconds."""
        within = within or seconds(2)
        started = time.monotonic()
        ended = self._wait_for(lambda: len(self.inbox) >= len(data), within)
        got = bytes(self.inbox[:len(data)])
        if got != data:
            self.story.fail(f"{self.name} receives {show(data)} back within {within:.0f} s",
                            self._describe_difference(data, got, ended, started))
        del self.inbox[:len(data)]
        self.story.step(f"{self.name} got {show(data)} back")

    def _describe_difference(self, expected: bytes, got: bytes, ended: str, started: float) -> str:
        first = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), None)
        if first is not None:
            return (f"{show(got)}; the first difference is at byte {first}: expected "
                    f"{show(expected[first:first + 16])}, got {show(got[first:first + 16])}")
        if got:
            text = f"only {show(got)}, {ended}"
        elif self.closed_by_server:
            text = f"nothing: the server {self.closed_by_server} the connection"
        else:
            text = f"nothing in {time.monotonic() - started:.0f} s"
        return text if self.server.running() else f"{text} (the server {self.server.state()})"

    def expect_close(self, within: float | None = None) -> None:
        """The server closes the connection (after anything already expected), within `within` seconds."""
        within = within or seconds(2)
        self._wait_for(lambda: bool(self.inbox), within)
        if self.inbox:
            self.story.fail(f"the server to close {self.name}'s connection", f"more bytes: {show(bytes(self.inbox))}")
        if not self.closed_by_server:
            self.story.fail(f"the server to close {self.name}'s connection within {within:.0f} s",
                            f"it stayed open (and the server {self.server.state()})")
        self.story.step(f"the server {self.closed_by_server} {self.name}'s connection")

    def expect_silence(self, duration: float) -> None:
        """Nothing arrives for `duration` seconds, and the connection stays open."""
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline and not self.inbox and not self.closed_by_server:
            readable, _, _ = select.select([self.socket], [], [], deadline - time.monotonic())
            if readable:
                self._receive()
        if self.inbox or self.closed_by_server:
            got = show(bytes(self.inbox)) if self.inbox else f"the server {self.closed_by_server} the connection"
            self.story.fail(f"nothing for {self.name} for {duration:.1f} s", got)
        self.story.step(f"{self.name} received nothing for {duration:.1f} s")

    def expect_delivered(self, within: float | None = None) -> None:
        """Everything this client sent has reached the server's kernel (acknowledged), e.g. while the server is
        frozen: the server will find it all waiting at once, in one event."""
        within = within or seconds(5)
        if not eventually(lambda: _unacknowledged(self.socket) == 0, within):
            self.story.fail(f"the server's kernel to take all that {self.name} sent within {within:.0f} s",
                            f"{_unacknowledged(self.socket)} bytes still unacknowledged")
        self.story.step(f"all that {self.name} sent reached the server's kernel")

    def shut_write(self) -> None:
        """Half-close: the client will send nothing more (the server sees EV_EOF) but still reads."""
        self.socket.shutdown(socket.SHUT_WR)
        self.story.step(f"{self.name} shut down its sending side (half-close)")

    def wait_readable(self, within: float | None = None) -> None:
        """Waits until the server has started sending to this client."""
        within = within or seconds(5)
        self._wait_for(lambda: bool(self.inbox), within)
        if not self.inbox:
            self.story.fail(f"{self.name} to receive something within {within:.0f} s", "nothing")

    def reset(self) -> None:
        """Vanishes: closes with SO_LINGER 0, so the server gets a reset (RST) instead of an orderly close."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.socket.close()
        self.story.step(f"{self.name} vanished: reset its connection (RST)")

    def close(self) -> None:
        self.socket.close()
        self.story.step(f"{self.name} closed its connection")
