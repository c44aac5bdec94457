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

import atexit
import collections
import contextlib
import dataclasses
import errno
import fcntl
import importlib.util
import os
import platform
import random
import re
import resource
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

from kqlab.grade import launch

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


def seeded_random(story: Story) -> random.Random:
    """A random generator for one test. Its seed is printed and written down as a step, so a failure can be
    replayed: KQLAB_SEED=<seed> runs the test again with the same choices."""
    seed = int(os.environ.get("KQLAB_SEED") or random.randrange(1 << 32))
    print(f"random seed {seed}: KQLAB_SEED={seed} replays this test's choices")
    story.step(f"made its random choices with seed {seed} (KQLAB_SEED={seed} replays them)")
    return random.Random(seed)


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
            if (value := _sysctl(name)) is not None:
                limits.append(value)
    return max(limits, default=8 << 20)


def listen_queue_limit() -> int:
    """How many connections the kernel keeps waiting for a listening socket that accepts none (listen()'s backlog
    is capped by it): 4096 on recent Linux, 128 on macOS and FreeBSD unless raised."""
    path = Path("/proc/sys/net/core/somaxconn")
    if path.exists():
        return int(path.read_text())
    for name in ("kern.ipc.soacceptqueue", "kern.ipc.somaxconn"):  # FreeBSD's name, then macOS's
        if (value := _sysctl(name)) is not None:
            return value
    return 128


def _sysctl(name: str) -> int | None:
    value = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True).stdout.strip()
    return int(value) if value.isdigit() else None


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
        self.step_times: list[float] = []  # when each step was written down, for the timeline of a failed run
        self.draws_timeline = True  # a failure's report names a drawing of the run (kqlab/timeline.py)
        self.servers: list[Server] = []
        self._summaries: list[str] = []  # the summarized blocks under way, outermost first
        # The section that teaches closing a connection, when the lesson's test module names it (CLOSE_SECTION): a
        # connection that stays open although the server was told of its end may have been forgotten unclosed, and
        # the report names that section too, beside the test's own.
        self.close_section = ""
        # What a server's own messages can say about the cause of a failure, from the lesson's test module
        # (DIAGNOSES): (a regular expression for a line on its stderr, the section that teaches the cause, what the
        # line means). A report whose server said such a line names that cause and section too.
        self.diagnoses: list[tuple[str, str, str]] = []

    def step(self, text: str) -> None:
        if not self._summaries:
            self.steps.append(text)
            self.step_times.append(time.monotonic())

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
        drawn = self._timeline() if self.draws_timeline else None
        if drawn:
            lines.append(f"Its event loop during this test, drawn: {drawn} (open it in a browser)")
        for pattern, section, meaning in self.diagnoses:
            said = next((line for server in self.servers for line in server.messages() if re.search(pattern, line)),
                        None)
            if said is not None and section != self.section:
                lines.append(f"The server said {said!r}: {meaning}. See {self.readme}, section \"{section}\", too.")
        lines.append(f'See {self.readme}, section "{self.section}".')
        return "\n".join(lines)


    def _timeline(self) -> Path | None:
        """The page drawing this run's kevent() calls between the test's steps (kqlab/timeline.py), if it has any."""
        try:
            from kqlab import timeline  # needs jinja2; without it, no drawing
        except ImportError:
            return None
        return timeline.write_for_test(self.test, self.section, list(zip(self.step_times, self.steps)),
                                       [(server.label, server.timed_trace()) for server in self.servers])


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on a TCP socket that the peer's kernel has not acknowledged yet."""
    system = platform.system()
    if system == "Linux":
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]  # SIOCOUTQ
    if system == "Darwin":
        return sock.getsockopt(socket.SOL_SOCKET, 0x1024)  # SO_NWRITE
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), 0x40046677, b"\0" * 4))[0]  # FreeBSD's FIONWRITE


def _process_state(pid: int) -> str:
    """The one-letter state of a process: R running, S sleeping, T stopped, Z zombie, ...; "" once it is gone."""
    if Path("/proc/self/stat").exists():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return ""
    return subprocess.run(["ps", "-o", "state=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()[:1]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie: it runs, sleeps or is stopped."""
    return _process_state(pid) not in ("", "Z")


def children_of(pid: int) -> dict[int, str]:
    """The direct children of a process, each with its one-letter state (Z: a zombie its parent has not reaped)."""
    found = {}
    if Path("/proc/self/stat").exists():
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rpartition(")")[2].split()
                except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
                    continue
                if int(fields[1]) == pid:
                    found[int(entry.name)] = fields[0]
        return found
    listing = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid=", "-o", "state="], capture_output=True,
                             text=True).stdout
    for row in listing.splitlines():
        child, parent, state = row.split()[:3]
        if int(parent) == pid:
            found[int(child)] = state[:1]
    return found


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


# KQLAB_TRACE=1 makes kqlab's Linux layer print each kevent() call on stderr; native kqueue prints nothing.
TRACED = platform.system() == "Linux"
_TRACE_LINE = re.compile(r"kevent\(kq=\d+\) (change|event|receipt|returns|fails)\s+(.*)")


@dataclasses.dataclass
class KeventCall:
    """One kevent() call, as KQLAB_TRACE printed it: the changes handed in (each as kqlab::describe prints it) and
    what came back, in order: "event <event>" and "receipt <change>: ok (EV_ERROR, data=0)" (or the errno) lines,
    or one "returns 0 (timeout)" or "fails <errno>"."""
    changes: list[str]
    results: list[str]


def _lines(stream) -> Iterator[bytes]:
    """A program's output, line by line, a line cut at 64 KiB: one that never ends must not take all memory."""
    return iter(lambda: stream.readline(64 * 1024), b"")


class Server:
    """A lesson program, started on port 0, with the harness reading its stdout and stderr."""

    SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|WARNING: ThreadSanitizer")
    TRACE_KEPT = 200_000  # trace lines kept for kevent_calls(), enough for any one test

    def __init__(self, program: Path, story: Story, label: str, arguments: tuple[str, ...] = (),
                 descriptor_limit: int | None = None, environment: dict[str, str] | None = None) -> None:
        """`arguments` are the lesson's own options (e.g. "--idle-ms", "500"); `descriptor_limit` caps the server's
        open descriptors (RLIMIT_NOFILE), as a busy machine or a stingy administrator would; `environment` adds
        variables to its environment (e.g. KQLAB_FAULT, see compat/src/fault.hpp)."""
        self.story = story
        self.label = label
        extra = dict(environment or {})
        self.clients: list[Client] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=400)
        self._trace: list[str] = []  # the KQLAB_TRACE lines
        self._trace_times: list[float] = []  # when each was read
        self._messages: list[str] = []  # every other line on stderr: what the program itself says
        self._sanitizer: list[str] = []
        self._messages: list[str] = []  # stderr without KQLAB_TRACE's lines: what the program itself said
        self._listening = threading.Event()
        self.exit_expected = False  # set by expect_exit(): the test asked the server to end
        self.host, self.port = "", 0
        # A ThreadSanitizer build stops at its first report, so a data race fails the test that provoked it.
        environment = dict(os.environ, KQLAB_TRACE="1", UBSAN_OPTIONS="print_stacktrace=1",
                           TSAN_OPTIONS=os.environ.get("TSAN_OPTIONS", "halt_on_error=1"))
        environment.update(extra)
        limit = None
        if descriptor_limit is not None:
            def limit() -> None:  # runs in the child, between fork and exec: one system call, nothing else
                resource.setrlimit(resource.RLIMIT_NOFILE, (descriptor_limit, descriptor_limit))
        # launch.start is subprocess.Popen, or, under ./kqlab grade, the same in the student's sandbox.
        self.process = launch.start([str(program), "--host", "127.0.0.1", "--port", "0", *arguments],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=environment, preexec_fn=limit,
                                    start_new_session=True)  # a process group of its own: see stop()
        self.pid = self.process.pid
        _process_groups.add(self.pid)
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()
        story.servers.append(self)
        how = [" ".join(arguments)] if arguments else []
        if descriptor_limit is not None:
            how.append(f"a limit of {descriptor_limit} open descriptors")
        how += [f"{name}={value}" for name, value in extra.items()]
        story.step(f"started {label} (pid {self.pid}){' with ' + ' and '.join(how) if how else ''}")
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
        for raw in _lines(self.process.stdout):
            match = re.fullmatch(r"listening on \[?([^\]]+)\]?:(\d+)", raw.decode("utf-8", "replace").strip())
            if match and not self._listening.is_set():
                self.host, self.port = match.group(1), int(match.group(2))
                self._listening.set()

    def _read_stderr(self) -> None:
        for raw in _lines(self.process.stderr):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._stderr.append(line)
            if not line.startswith("kevent(kq="):  # KQLAB_TRACE's lines; kqlab::fail() says "kevent(<change>): ..."
                if len(self._messages) < 10000:
                    self._messages.append(line)
            elif len(self._trace) < self.TRACE_KEPT:
                self._trace.append(line)
                self._trace_times.append(time.monotonic())
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

    def settle(self) -> None:
        """A server whose clients have just seen their connections drop may be on its way out (a crash, a fatal
        signal): gives it a moment to finish, so that a report says how it ended rather than 'still running'."""
        if self.running() and any(client.closed_by_server for client in self.clients):
            try:
                self.process.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        if not self.running():  # and the last of what it printed, read to the end
            for reader in self._readers:
                reader.join(1)

    def report(self) -> list[str]:
        self.settle()
        lines = [f"The server ({self.label}, pid {self.pid}) {self.state()}."]
        if self._sanitizer:
            lines.append("It reported a bug (sanitizer report, from its first line):")
            lines += [f"  | {line}" for line in self._sanitizer]
        elif self._stderr:
            tail = list(self._stderr)[-25:]
            lines.append(f"Its stderr, last {len(tail)} lines (KQLAB_TRACE=1 shows each kevent() call):")
            lines += [f"  | {line}" for line in tail]
        return lines

    def kevent_calls(self) -> list[KeventCall]:
        """The kevent() calls the server has made so far, from its trace (TRACED platforms only). A call's trace
        is its changes, then what it returned; a call without changes cannot be told apart from the call before
        it, and is counted as part of it."""
        calls: list[KeventCall] = []
        for line in list(self._trace):
            match = _TRACE_LINE.match(line)
            if not match:
                continue
            kind, text = match.groups()
            if kind == "change":
                if not calls or calls[-1].results:
                    calls.append(KeventCall([], []))
                calls[-1].changes.append(text)
            else:
                if not calls:
                    calls.append(KeventCall([], []))
                calls[-1].results.append(f"{kind} {text}")
        return calls

    def timed_trace(self) -> list[tuple[float, str]]:
        """The KQLAB_TRACE lines so far, each with when it was read."""
        return list(zip(list(self._trace_times), list(self._trace)))
    def descriptor_of(self, client: Client) -> int | None:
        """The server's descriptor for `client`'s connection, found through /proc (Linux only; None elsewhere, or if
        the server has none open)."""
        local_port = client.socket.getsockname()[1]
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for row in Path(table).read_text().splitlines()[1:]:
                    fields = row.split()
                    ours, theirs = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
                    if int(ours, 16) == self.port and int(theirs, 16) == local_port:
                        inodes.add(fields[9])
        with contextlib.suppress(OSError):
            for entry in Path(f"/proc/{self.pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(entry)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return int(entry.name)
        return None

    def saw_end_of(self, client: Client) -> int | None:
        """The server's descriptor for `client`'s connection if its trace shows an EV_EOF event on it since the
        client connected (the server knew the client was done); else None. TRACED platforms only."""
        fd = self.descriptor_of(client) if TRACED else None
        if fd is None:
            return None
        pattern = re.compile(rf"\bevent\s+EVFILT_READ fd={fd} \S*EV_EOF")
        return fd if any(pattern.search(line) for line in self._trace[client.trace_mark:]) else None

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

    def messages(self) -> list[str]:
        """The lines the server has printed on stderr so far, apart from KQLAB_TRACE's."""
        return list(self._messages)

    def expect_message(self, pattern: str, meaning: str = "", since: int = 0, within: float | None = None) -> str:
        """A line matching the regular expression `pattern` among the server's messages (see messages()), from
        message number `since` on, within `within` seconds. Returns it. `meaning` says in words what such a line
        says, for a report."""
        within = within or seconds(2)
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self._messages[since:] if re.search(pattern, line)]
            return bool(found)

        if not eventually(seen, within):
            recent = self._messages[since:][-3:]
            self.story.fail(f"a line on the server's stderr {meaning or f'matching {pattern!r}'} within {within:g} s",
                            f"{'nothing of the kind' if not recent else 'only ' + repr(recent)}"
                            f"{'' if self.running() else f' (the server {self.state()})'}")
        self.story.step(f"the server printed {found[0]!r}")
        return found[0]

    def expect_blocked(self, within: float | None = None) -> None:
        """The server is soon blocked in kevent(): its process sleeps (it has done all it can for now)."""
        within = within or seconds(5)
        if not eventually(lambda: _process_state(self.pid) in ("S", "I") or not self.running(), within):
            self.story.fail("the server to wait in kevent() once it has done all it can",
                            f"its state stayed {_process_state(self.pid)!r} for {within:g} s")
        self._still_running("the server to wait in kevent() once it has done all it can")
        self.story.step("the server was waiting in kevent()")

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

    def wait_until_quiet(self, within: float = seconds(5)) -> None:
        """Gives the server time to do all it can with what it was sent: returns once it has used no CPU for a
        third of a second (it sleeps in kevent()), or after `within` seconds. Not a check: what the server did
        with the time is for the next expectation to see."""
        deadline = time.monotonic() + within
        before = self.cpu_seconds()
        while time.monotonic() < deadline and self.running():
            time.sleep(0.35)
            now = self.cpu_seconds()
            if now == before:
                break
            before = now
        self.story.step("the server was given the time to handle all of it")

    def expect_descriptors(self, at_most: int, within: float) -> None:
        expected = f"at most {at_most} open descriptors in the server within {within:g} s"
        if not eventually(lambda: not self.running() or self.open_descriptors() <= at_most, within):
            self.story.fail(expected, f"{self.open_descriptors()}")
        self._still_running(expected)
        self.story.step(f"the server was back to at most {at_most} open descriptors")

    def children(self) -> dict[int, str]:
        """The server's child processes, each with its one-letter state (Z: not reaped)."""
        return children_of(self.pid)

    def pid_of(self, reported: int) -> int:
        """The pid the tests know for one of the server's processes that the server reports by its own getpid().
        They differ where the server runs in a PID namespace of its own (./kqlab grade's sandbox): the tests then
        find the process among the server's, by the pid it has in there (NSpid in /proc/PID/status)."""
        def numbers(pid: int) -> list[int]:
            try:
                found = re.search(r"^NSpid:\s+(.*)$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
            except OSError:
                return []
            return [int(number) for number in found.group(1).split()] if found else []

        if len(numbers(self.pid)) < 2:  # no PID namespace of its own: the same numbers
            return reported
        for pid in [self.pid, *children_of(self.pid)]:
            if numbers(pid)[-1:] == [reported]:
                return pid
        return -1  # none of its processes: never a pid of the tests' that a test could signal by mistake

    def send_signal(self, number: signal.Signals) -> None:
        """Sends the server a signal, as `kill -TERM pid` would."""
        self._still_running(f"the server to be running to receive {number.name}")
        os.kill(self.pid, number)
        self.story.step(f"sent {number.name} to the server")

    def expect_exit(self, status: int, within: float) -> None:
        """The server ends by itself, with exit status `status`, within `within` seconds (a signal asked it to)."""
        self.exit_expected = True
        expected = f"the server to exit with status {status} within {within:.0f} s"
        try:
            self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.story.fail(expected, f"it {self.state()} after {within:.0f} s")
        if self.process.returncode != status:
            self.story.fail(expected, f"it {self.state()}")
        self.story.step(f"the server exited with status {status}")

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if that does not end it; then SIGKILL to whatever is left in its process group (what
        it forked); then closes its clients' connections."""
        if self.running():
            os.kill(self.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(seconds(5))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _kill_process_group(self.pid)
        for reader in self._readers:
            reader.join(seconds(5))
        self.process.stdout.close()
        self.process.stderr.close()
        for client in self.clients:
            client.socket.close()


# The process groups of the servers started and not stopped yet, killed when Python exits: an interrupted test run
# (^C) leaves no server, and no process a server forked, behind.
_process_groups: set[int] = set()


def _kill_process_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    _process_groups.discard(group)


@atexit.register
def _kill_remaining_process_groups() -> None:
    for group in list(_process_groups):
        _kill_process_group(group)


def failed_registration_is_not_ignored(start_server, story: Story, fault: str, change: str) -> None:
    """A registration that fails must stop the server, naming the change, or be handled (the client it was for
    closed); ignored, a client waits for ever for a server that will never hear it.

    On a working machine no registration fails, so no other test can tell a server that reads its receipts (or its
    EV_ERROR entries) from one that does not. This one makes one fail with the fault switch of kqlab's Linux layer,
    KQLAB_FAULT=`fault` (FILTER:ERRNO:N, compat/src/fault.hpp), as a kernel out of memory for knotes would (ENOMEM):
    `change` says which change that is. Native kqueue has no such switch: the test is skipped there."""
    if not TRACED:
        pytest.skip("needs kqlab's Linux layer: KQLAB_FAULT makes a chosen registration fail, and native kqueue has "
                    "no way to make one fail from outside")
    errno_name = fault.split(":")[1]
    server = start_server(environment={"KQLAB_FAULT": fault})
    client = server.connect()
    client.send(b"is anybody listening?\n")
    if not client.closed_within(seconds(3)):
        story.fail(f"the server to stop, naming {change}, which failed with {errno_name}, or to close the client it "
                   f"was for", "the connection stayed open for 3 s: the failure was ignored")
    eventually(lambda: not server.running(), within=seconds(1))
    if not server.running():
        server.exit_expected = True  # stopping is one right answer; it must say why
        server.expect_message(rf"kevent.*({os.strerror(getattr(errno, errno_name))}|{errno_name})",
                              "naming the kevent() change that failed, and why", within=seconds(1))
    story.step(f"the failure of {change} was not ignored")


def flood_past_descriptor_limit(start_server, story: Story, limit: int = 64, flood: int = 200) -> None:
    """Lesson 05's rule, for every server after it: at its descriptor limit a server turns away the connections it
    has no descriptor for (a spare descriptor frees one to accept and close them with), and goes on serving. The
    server runs with RLIMIT_NOFILE `limit`; `flood` clients connect at once, more than it has descriptors for, and
    each sends a line. Meanwhile a client connected before keeps being served, and the server does not spin; once
    the flood has gone, a newcomer is echoed within a second. A server that stops accepting at EMFILE (edge-
    triggered: the report is spent) leaves the queue full for good; one that returns with a level-triggered
    listener spins; one that takes EMFILE as fatal dies."""
    server = start_server(descriptor_limit=limit)
    steady = server.connect()
    steady.send(b"before the flood\n")
    steady.expect(b"before the flood\n")
    connections: list[socket.socket] = []
    try:
        with story.summarized(f"{flood} more clients connected at once, and each sent a line"):
            for _ in range(flood):
                connection = socket.create_connection((server.host, server.port), timeout=seconds(5))
                connection.setblocking(False)
                connections.append(connection)
            for connection in connections:
                with contextlib.suppress(OSError):  # turned away already
                    connection.send(b"one of the flood\n")
        steady.send(b"during the flood\n")
        steady.expect(b"during the flood\n", within=seconds(5))
        server.wait_until_quiet()
        server.expect_idle(window=seconds(1))
    finally:
        for connection in connections:
            connection.close()
    story.step(f"the {flood} clients of the flood closed their connections")
    server.wait_until_quiet()
    newcomer = server.connect()
    newcomer.send(b"after the flood\n")
    newcomer.expect(b"after the flood\n", within=seconds(1))


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
        return f"then nothing for {time.monotonic() - self.last:.0f} s (stalled)"


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
        self.trace_mark = len(server._trace)  # the server's trace lines from here on are about this client's time
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
                self.story.fail(f"the server to take all {len(data)} bytes {self.name} sent within {within:g} s",
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
            self.story.fail(f"{self.name} receives {show(data)} back within {within:g} s",
                            self._describe_difference(data, got, ended, started, within))
        del self.inbox[:len(data)]
        self.story.step(f"{self.name} got {show(data)} back")

    def _describe_difference(self, expected: bytes, got: bytes, ended: str, started: float, within: float) -> str:
        first = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), None)
        if first is not None:
            return (f"{show(got)}; the first difference is at byte {first}: expected "
                    f"{show(expected[first:first + 16])}, got {show(got[first:first + 16])}")
        self.server.settle()
        if got:
            text = f"only {show(got)}, {ended}"
        elif self.closed_by_server:
            text = f"nothing: the server {self.closed_by_server} the connection"
        else:
            waited = time.monotonic() - started
            # A wait sized for a slow machine moving megabytes ends early once nothing comes for a while: say so.
            text = f"nothing for {waited:.0f} s{' (stalled)' if waited + 0.5 < within else ''}"
        return text if self.server.running() else f"{text} (the server {self.server.state()})"

    def read_until(self, data: bytes, within: float | None = None) -> bytes:
        """Reads until `data` arrives, within `within` seconds; returns the bytes that came before it."""
        within = within or seconds(2)
        ended = self._wait_for(lambda: data in self.inbox, within)
        at = self.inbox.find(data)
        if at == -1:
            before = f" after {show(bytes(self.inbox))}" if self.inbox else ""
            self.story.fail(f"{self.name} receives {show(data)} within {within:.0f} s",
                            f"nothing of the kind{before}{', ' + ended if ended else ''}"
                            f"{'' if self.server.running() else f' (the server {self.server.state()})'}")
        before = bytes(self.inbox[:at])
        del self.inbox[:at + len(data)]
        self.story.step(f"{self.name} got {show(data)}, after {len(before)} other bytes")
        return before

    def read_until_close(self, within: float | None = None) -> bytes:
        """Reads whatever the server still sends until it closes the connection, within `within` seconds; returns
        those bytes (with any already received and not yet expected)."""
        within = within or seconds(5)
        ended = self._wait_for(lambda: False, within)
        if not self.closed_by_server:
            self.story.fail(f"the server to close {self.name}'s connection within {within:.0f} s",
                            f"it stayed open, {ended} (and the server {self.server.state()})")
        received = bytes(self.inbox)
        self.inbox.clear()
        self.story.step(f"{self.name} read {len(received)} more bytes, then the server {self.closed_by_server} "
                        f"its connection")
        return received

    def receive_lines(self, count: int, within: float | None = None) -> list[tuple[float, bytes]]:
        """The next `count` lines from the server, without their newlines, each with the time.monotonic() at which
        it arrived. Fails unless all of them arrive within `within` seconds."""
        within = within or seconds(2)
        lines: list[tuple[float, bytes]] = []

        def enough() -> bool:  # takes the whole lines out of the inbox as they come, stamped with the time
            while len(lines) < count and (end := self.inbox.find(b"\n")) != -1:
                lines.append((time.monotonic(), bytes(self.inbox[:end])))
                del self.inbox[:end + 1]
            return len(lines) == count

        started = time.monotonic()
        ended = self._wait_for(enough, within)
        if len(lines) < count:
            last = ", ".join(show(line) for _, line in lines[-3:])
            got = f"{len(lines)} lines{' (the last: ' + last + ')' if lines else ''}"
            if self.inbox:
                got += f" and a partial line {show(bytes(self.inbox))}"
            self.story.fail(f"{count} lines for {self.name} within {within:g} s",
                            f"{got}, {ended or f'in {time.monotonic() - started:.1f} s'}"
                            f"{'' if self.server.running() else f' (the server {self.server.state()})'}")
        self.story.step(f"{self.name} received {count} lines")
        return lines

    def expect_close(self, within: float | None = None) -> None:
        """The server closes the connection (after anything already expected), within `within` seconds."""
        within = within or seconds(2)
        self._wait_for(lambda: bool(self.inbox), within)
        if self.inbox:
            self.story.fail(f"the server to close {self.name}'s connection", f"more bytes: {show(bytes(self.inbox))}")
        if not self.closed_by_server:
            seen = self.server.saw_end_of(self) if self.story.close_section else None
            if seen is not None and self.story.close_section != self.story.section:
                self.story.fail(f"the server to close {self.name}'s connection within {within:g} s",
                                f"it stayed open, although the server was told of its end (EV_EOF on its "
                                f"descriptor {seen}, in its trace): either it took no notice (this section), or "
                                f"it forgot the client without close() (section \"{self.story.close_section}\")")
            self.story.fail(f"the server to close {self.name}'s connection within {within:g} s",
                            f"it stayed open (and the server {self.server.state()})")
        self.story.step(f"the server {self.closed_by_server} {self.name}'s connection")

    def closed_within(self, within: float) -> bool:
        """Reads (keeping what comes in the inbox) until the server closes the connection or `within` seconds
        pass; True if it closed it. Not a check: for a test that accepts more than one outcome."""
        self._wait_for(lambda: False, within)
        return bool(self.closed_by_server)

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
            self.story.fail(f"{self.name} to receive something within {within:g} s", "nothing")

    def reset(self) -> None:
        """Vanishes: closes with SO_LINGER 0, so the server gets a reset (RST) instead of an orderly close."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.socket.close()
        self.story.step(f"{self.name} vanished: reset its connection (RST)")

    def close(self) -> None:
        self.socket.close()
        self.story.step(f"{self.name} closed its connection")
