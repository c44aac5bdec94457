"""./kqlab trace N: your event loop, drawn.

Builds lesson N (the student's copy in workspace/, or --solution, or --exercise), runs it with KQLAB_TRACE=1 while a
short scripted session of clients talks to it, and writes a self-contained HTML page with the timeline of what
happened (timeline.py): one lane per descriptor, every kevent() call a column, the clients' actions in between, and
the moments the server spun or stalled marked.

The session, each step bounded by a deadline:
1. client 1 connects and sends a line, and reads what comes back;
2. client 2, a slow reader (a small receive buffer), sends more than the connection's buffers hold and reads
   nothing for half a second, then all it can for a second;
3. client 1 half-closes (shutdown SHUT_WR) and reads to the end;
4. client 3 connects, sends a line and resets the connection (SO_LINGER 0, close);
5. a quiet moment, then SIGTERM.

On FreeBSD and macOS kqueue is the kernel's own and prints no trace: the command says so.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from . import course, timeline, tools, ui
from .commands import Command
from .course import Lesson

DEFAULT_OUTPUT = course.BUILD / "trace"
STEP = 0.5  # seconds a step waits for the server's answer
TRACE_KEPT = 200_000


class Session:
    """The program under trace: started on port 0 with KQLAB_TRACE=1, its stderr read line by line with the time
    each line came, and what the clients did, with times on the same (monotonic) clock."""

    def __init__(self, program: Path, arguments: list[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self.messages: list[str] = []  # what the program printed that is not the trace
        self.actions: list[timeline.Action] = []
        self.names: dict[str, str] = {}  # lane -> what it is ("listening socket", "client 1 (port 40312)")
        self._listening = threading.Event()
        self.port = 0
        self.process = subprocess.Popen([str(program), "--host", "127.0.0.1", "--port", "0", *arguments],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=dict(os.environ, KQLAB_TRACE="1"), start_new_session=True)
        self.samples: list[timeline.Sample] = []
        self.forked = False  # it had child processes: their traces share its stderr
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr.start()
        threading.Thread(target=self._sample, daemon=True).start()
        if not self._listening.wait(10):
            self.stop()
            raise RuntimeError("the program did not print 'listening on HOST:PORT' within 10 s"
                               + (": " + " | ".join(self.messages[-5:]) if self.messages else ""))
        self.name(self._listener_lane(), "listening socket")

    def _read_stdout(self) -> None:
        for raw in self.process.stdout:
            found = re.search(r"listening on \[?[^\]\s]+\]?:(\d+)", raw.decode("utf-8", "replace"))
            if found and not self._listening.is_set():
                self.port = int(found.group(1))
                self._listening.set()

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith("kevent("):
                if len(self.lines) < TRACE_KEPT:
                    self.lines.append((time.monotonic(), line))
            elif len(self.messages) < 1000:
                self.messages.append(line)

    def _sample(self) -> None:
        """Every 10 ms, what the program is doing: running, or asleep and where in the kernel (/proc/PID/wchan:
        ep_poll is kevent()'s wait on Linux; anything else, a call that blocked)."""
        stat, wchan = Path(f"/proc/{self.process.pid}/stat"), Path(f"/proc/{self.process.pid}/wchan")
        while self.process.poll() is None and len(self.samples) < 100_000:
            try:
                state = stat.read_text().rpartition(")")[2].split()[0]
                where = wchan.read_text().strip()
            except OSError:
                break
            self.samples.append(timeline.Sample(time.monotonic(), state, where))
            self.forked = self.forked or bool(_children(self.process.pid))
            time.sleep(0.01)

    def act(self, actor: str, text: str, lane: str = "", at: float | None = None) -> None:
        """Writes down what a client did; `at`, when it began (by default, now)."""
        self.actions.append(timeline.Action(at or time.monotonic(), actor, text, lane))

    def name(self, lane: str, what: str) -> None:
        """Says what a lane is; a descriptor number the server reuses gets each of its names."""
        self.names[lane] = f"{self.names[lane]}, then {what}" if lane in self.names else what

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever it forked (lesson 07's workers)
        except (ProcessLookupError, PermissionError):
            pass
        self._stderr.join(3)
        return self.process.returncode

    # Which of the server's descriptors is which client: /proc's sockets, matched by port ---------------------------

    def _listener_lane(self) -> str:
        inode = _inodes_by_ports().get((self.port, 0))
        fd = _fd_of_inode(self.process.pid, inode) if inode else None
        return f"fd={fd}" if fd is not None else "listening socket"

    def lane_of(self, client: socket.socket, within: float = 1.0) -> str:
        """The server's descriptor for this client's connection, once the server has accepted it ("" if not)."""
        port = client.getsockname()[1]
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and self.process.poll() is None:
            inode = _inodes_by_ports().get((self.port, port))
            for pid in [self.process.pid, *_children(self.process.pid)] if inode else []:
                fd = _fd_of_inode(pid, inode)
                if fd is not None:
                    return f"fd={fd}"
            time.sleep(0.01)
        return ""


def _inodes_by_ports() -> dict[tuple[int, int], int]:
    """Loopback TCP sockets: (local port, remote port) -> inode, from /proc/net/tcp and tcp6."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if inode:
                found[(int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))] = inode
    return found


def _children(pid: int) -> list[int]:
    """The process's children (lesson 07's workers), from /proc."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _fd_of_inode(pid: int, inode: int) -> int | None:
    try:
        for entry in os.scandir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(entry.path) == f"socket:[{inode}]":
                    return int(entry.name)
            except OSError:
                continue
    except OSError:
        return None
    return None


# The scripted session ----------------------------------------------------------------------------------------------

def _drain(client: socket.socket, within: float, until: int | None = None) -> tuple[int, bool]:
    """Reads what comes within `within` seconds (or until `until` bytes): (bytes read, whether it ended)."""
    client.settimeout(0.05)
    got, deadline = 0, time.monotonic() + within
    while time.monotonic() < deadline and (until is None or got < until):
        try:
            chunk = client.recv(65536)
        except (TimeoutError, BlockingIOError):
            continue
        except OSError:
            return got, True
        if not chunk:
            return got, True
        got += len(chunk)
    return got, False


def _connect(session: Session, name: str, receive_buffer: int | None = None) -> tuple[socket.socket, str]:
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.settimeout(2)
    began = time.monotonic()
    client.connect(("127.0.0.1", session.port))
    port = client.getsockname()[1]
    lane = session.lane_of(client)
    if lane:
        session.name(lane, f"{name} (port {port})")
    session.act(name, f"connects (port {port})", lane, at=began)
    return client, lane


def _send(session: Session, client: socket.socket, name: str, lane: str, data: bytes) -> None:
    began = time.monotonic()
    client.sendall(data)
    session.act(name, f"sends {len(data)} bytes", lane, at=began)


def _more_than_buffers() -> int:
    """More bytes than a loopback connection's buffers hold at both ends however far Linux grows them (tcp_wmem's
    and tcp_rmem's largest), so that echoing them to a reader that does not read leaves the server with output
    waiting."""
    total = 1 << 20
    for table in ("/proc/sys/net/ipv4/tcp_wmem", "/proc/sys/net/ipv4/tcp_rmem"):
        try:
            total += int(Path(table).read_text().split()[2])
        except (OSError, ValueError, IndexError):
            total += 4 << 20
    return min(total, 64 << 20)


def run_session(session: Session, log: Path | None) -> None:
    if log is not None:
        with log.open("a") as file:
            file.write("a line the logger appended\n")
        session.act("logger", "appends a line", "")
    one, one_lane = _connect(session, "client 1")
    _send(session, one, "client 1", one_lane, b"hello, kqueue\n")
    got, _ = _drain(one, STEP, until=14)
    session.act("client 1", f"received {got} bytes", one_lane)

    slow, slow_lane = _connect(session, "client 2", receive_buffer=4096)
    payload = (b"x" * 1023 + b"\n") * (_more_than_buffers() // 1024)
    slow.settimeout(STEP)
    sent, began = 0, time.monotonic()
    try:
        while sent < len(payload):
            sent += slow.send(payload[sent:sent + 65536])
    except (TimeoutError, OSError):
        pass
    session.act("client 2", f"sends {sent // 1024} KiB, reads nothing", slow_lane, at=began)
    time.sleep(STEP)  # the slow reader: what the server does meanwhile is what the page shows
    got, _ = _drain(slow, 2 * STEP)
    session.act("client 2", f"reads at last: {got // 1024} KiB", slow_lane)

    session.act("client 1", "half-closes (SHUT_WR)", one_lane)
    one.shutdown(socket.SHUT_WR)
    got, ended = _drain(one, STEP)
    session.act("client 1", f"read {got} B, {'then the end' if ended else 'no end yet'}", one_lane)

    rude, rude_lane = _connect(session, "client 3")
    _send(session, rude, "client 3", rude_lane, b"bye\n")
    rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    session.act("client 3", "resets (SO_LINGER 0)", rude_lane)
    rude.close()
    time.sleep(STEP)
    for client in (one, slow):
        client.close()
    session.act("the session", "closes the rest, quiet", "")
    time.sleep(STEP / 2)


# The command -------------------------------------------------------------------------------------------------------

def _program_name(lesson: Lesson, asked: str | None) -> str | None:
    programs = [name for name in lesson.programs() if name != "unit_tests"]
    if not programs:
        if asked:
            raise ValueError(f"lesson {lesson.number:02d} has one program; leave out --program")
        return None
    if asked:
        if asked not in programs:
            raise ValueError(f"lesson {lesson.number:02d}'s programs are {', '.join(programs)}, not {asked}")
        return asked
    return "echo" if "echo" in programs else ("kqueue" if "kqueue" in programs else programs[0])


def _build(lesson: Lesson, kind: str) -> str | None:
    """Builds the lesson's programs of `kind` (solution, exercise, workspace...); None, or what went wrong."""
    # Under the tree's build lock, as every CMake run in build/default: ./kqlab test's checks build in it at once.
    with tools.build_lock(tools.build_dir("default")):
        status, output = tools.capture(["cmake", "--preset", "default"])
        if not status:
            status, output = tools.capture(["cmake", "--build", tools.shown(tools.build_dir("default")), "--parallel",
                                            str(tools.jobs()), "--target", f"{kind}_{lesson.name}"])
    return output[-4000:] if status else None


def trace(args: argparse.Namespace) -> int:
    if platform.system() != "Linux":
        ui.problem(f"On {platform.system()}, kqueue is the kernel's own, and it prints no trace.",
                   "./kqlab trace draws what kqlab's Linux layer records with KQLAB_TRACE=1; run it on Linux (a "
                   "virtual machine or a container will do). Here, ktrace/dtruss show your program's kevent() calls.",
                   title="No trace on this platform")
        return 2
    lesson = course.lesson(args.lesson)
    impl = "solution" if args.solution else "exercise" if args.exercise else "workspace"
    kind = impl if impl != "workspace" else course.WORKSPACE_KIND
    if impl == "workspace" and not lesson.workspace.exists():
        ui.problem(f"You have not started lesson {lesson.number:02d}: there is no {tools.shown(lesson.workspace)}.",
                   "./kqlab starts the next lesson; or trace the reference: ./kqlab trace "
                   f"{lesson.number} --solution.", title="Nothing to trace")
        return 1
    name = _program_name(lesson, args.program)
    print(f"Building the {impl} of lesson {lesson.name}...", flush=True)
    problem = _build(lesson, kind)
    if problem:
        ui.problem(f"The {impl} of lesson {lesson.number:02d} does not build.", "./kqlab check "
                   f"{lesson.number} says more; the build's output is below.", problem, title="Build error")
        return 1
    program = course.program(tools.build_dir("default"), kind, lesson, name)
    out = Path(args.out) if args.out else DEFAULT_OUTPUT
    label = f"{lesson.name}{'-' + name if name else ''}-{impl}"
    print(f"Running {tools.shown(program)} under KQLAB_TRACE=1 while clients connect, send, read slowly, "
          "half-close and reset...", flush=True)
    try:
        page, count = record(program, out / f"{label}.html", f"kqlab trace: lesson {lesson.name}"
                             f"{' ' + name if name else ''} ({impl})",
                             f"Lesson {lesson.name}{', program ' + name if name else ''}, the {impl} "
                             f"({tools.shown(program)})")
    except RuntimeError as error:
        ui.problem(f"The {impl} of lesson {lesson.number:02d} did not start: {error}.",
                   f"./kqlab check {lesson.number} tests it with a report of what went wrong.", title="Not started")
        return 1
    ui.success(f"The timeline of {count} kevent() calls: {page.resolve()}")
    print(f"Open it in a browser: file://{page.resolve()}")
    return 0


def record(program: Path, page: Path, title: str, what: str) -> tuple[Path, int]:
    """Runs the scripted session against `program` and writes its timeline to `page`: (the page, how many kevent()
    calls). RuntimeError if the program does not start."""
    log = None  # lesson 08 follows a log file: the session makes one, and appends to it
    usage = subprocess.run([str(program), "--help"], capture_output=True, text=True, timeout=10)
    if "--log" in usage.stdout + usage.stderr:
        log = page.with_suffix(".log").resolve()
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("the log, before the server started\n")
    session = Session(program, ["--log", str(log)] if log else [])
    try:
        run_session(session, log)
    except OSError as error:
        session.act("the session", f"stopped: {error}", "")
    status = session.stop()
    ended = (f"exited with status {status}" if status is not None and status >= 0 else
             f"was ended by {signal.Signals(-status).name}" if status is not None else "ran on")
    session.act("the session", f"SIGTERM: it {ended}")
    calls = timeline.parse(session.lines)
    summary = [f"{what}, traced with KQLAB_TRACE=1 while the scripted clients talked to it.",
               f"Sent SIGTERM at the end, it {ended}."]
    if not calls:
        summary.append("Its trace is empty: it made no kevent() call (an epoll program?), or was built without "
                       "kqlab's Linux layer.")
    if session.forked:
        summary.append("It forks: its processes write their traces to one stderr, mixed, and each numbers its own "
                       "descriptors and queues, so a lane may hold several processes' descriptors of one number.")
    if session.messages:
        summary.append("It printed: " + " | ".join(session.messages[-4:]))
    timeline.write_page(page, title, summary, timeline.columns(calls, session.actions, session.samples), session.names,
                        [line for _, line in session.lines])
    return page, len(calls)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lesson", help="the lesson's number (1) or name (01-echo)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--solution", action="store_true", help="trace the reference solution")
    which.add_argument("--exercise", action="store_true", help="trace the untouched exercise")
    parser.add_argument("--program", metavar="NAME", help="for a lesson of several programs, which (09: kqueue or "
                        "epoll; 10: echo or chat)")
    parser.add_argument("--out", metavar="DIR",
                        help=f"where to write the page (default: {tools.shown(DEFAULT_OUTPUT)})")


COMMAND = Command("trace", "your event loop, drawn: run a lesson's program under KQLAB_TRACE while scripted clients "
                  "talk to it, and write an HTML timeline of its kevent() calls", trace, _arguments,
                  description=__doc__)
