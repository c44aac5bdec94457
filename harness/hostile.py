"""A hostile-client kit: runs each lesson's server against clients that misbehave, one kind at a time, and checks
after each that the server survived it, said nothing to a sanitizer, does not spin, still serves a well-behaved
client within a second, and is back to the descriptors it had before.

    python3 harness/hostile.py [--build-dir build/default] [--impl solution] [LESSON ...] [--attack NAME ...]

Loopback only; every loop is bounded in count and in time. Not a test suite: a probe for defects, whose findings
become tests (harness/NN-topic/test_NN_hostile.py). It prints one line per attack; exit status 1 if anything
failed. Lessons 01 to 04 come before lesson 05 teaches limits: there, a server that buffers without bound (huge_line,
zero_window: see the RSS figures) or spins or hangs at the descriptor limit (descriptor_flood) is the lesson's
known gap, marked "taught in 05". RSS growth under AddressSanitizer includes its quarantine of freed memory (up to
256 MB): compare how much a client could send instead.
"""
from __future__ import annotations

import argparse
import contextlib
import random
import select
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from vocabulary import Server, Story  # noqa: E402

HOST = "127.0.0.1"


# Well-behaved clients: how to tell that a lesson's server still serves -----------------------------------------------

def _read_until(sock: socket.socket, predicate, within: float) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + within
    while not predicate(bytes(got)) and time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            break
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


def _connect(server) -> socket.socket:
    sock = socket.create_connection((HOST, server.port), timeout=2)
    return sock


def echo_probe(server, within: float = 1.0) -> str:
    with _connect(server) as sock:
        sock.sendall(b"probe\n")
        got = _read_until(sock, lambda data: b"probe\n" in data, within)
        return "" if b"probe\n" in got else f"echo probe got {got[:80]!r}"


def greeting_echo_probe(server, within: float = 1.0) -> str:  # lesson 06: a greeting, then `echo TEXT`
    with _connect(server) as sock:
        sock.sendall(b"echo probe\n")
        got = _read_until(sock, lambda data: b"probe\n" in data, within)
        return "" if b"probe\n" in got else f"echo probe got {got[:80]!r}"


def pid_probe(server, within: float = 1.0) -> str:  # lesson 07
    with _connect(server) as sock:
        sock.sendall(b"pid\n")
        got = _read_until(sock, lambda data: data.endswith(b"\n"), within)
        return "" if got.strip().isdigit() else f"pid probe got {got[:80]!r}"


def chat_probe(server, within: float = 1.0) -> str:  # lessons 03, 10 chat: a line reaches the other member
    with _connect(server) as speaker, _connect(server) as listener:
        time.sleep(0.05)  # both joined
        speaker.sendall(b"probe\n")
        got = _read_until(listener, lambda data: b"probe\n" in data, within)
        return "" if b"probe\n" in got else f"chat probe got {got[:80]!r}"


def factor_probe(server, within: float = 1.0) -> str:  # lesson 11
    with _connect(server) as sock:
        sock.sendall(b"12\n")
        got = _read_until(sock, lambda data: data.endswith(b"\n"), within)
        return "" if got == b"12: 2 2 3\n" else f"factor probe got {got[:80]!r}"


def follow_probe(server, within: float = 1.0) -> str:  # lesson 08: a subscriber is told what it follows
    with _connect(server) as sock:
        got = _read_until(sock, lambda data: data.endswith(b"\n"), within)
        return "" if got.startswith(b"following ") else f"follow probe got {got[:80]!r}"


# Upstream for lesson 12 ------------------------------------------------------------------------------------------

class EchoUpstream:
    """Not harness/12-proxy/upstreams.py's Echo: that one waits with select(), which fails for descriptor numbers
    above 1023, and a storm of clients through the proxy takes the upstream past them."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(1024)
        self.address = f"{HOST}:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    @staticmethod
    def _echo(connection: socket.socket) -> None:
        connection.settimeout(30)
        with contextlib.suppress(OSError), connection:
            while data := connection.recv(65536):
                connection.sendall(data)


# The lessons ------------------------------------------------------------------------------------------------------

def lessons(build: Path, impl: str, scratch: Path) -> dict:
    bin_dir = build / "bin" / impl
    config = scratch / "greeting.conf"
    config.write_text("hello\n")
    log = scratch / "app.log"
    log.write_text("")
    upstream = EchoUpstream()
    lines = True  # parses lines
    return {
        "01-echo": (bin_dir / "01-echo", (), echo_probe, not lines),
        "02-registration": (bin_dir / "02-registration", (), echo_probe, not lines),
        "03-contexts": (bin_dir / "03-contexts", (), chat_probe, lines),
        "04-timers": (bin_dir / "04-timers", (), echo_probe, lines),
        "05-errors": (bin_dir / "05-errors", (), echo_probe, lines),
        "06-signals": (bin_dir / "06-signals", ("--config", str(config)), greeting_echo_probe, lines),
        "07-fork": (bin_dir / "07-fork", (), pid_probe, lines),
        "08-files": (bin_dir / "08-files", ("--log", str(log)), follow_probe, not lines),
        "09-epoll/kqueue": (bin_dir / "09-epoll/kqueue", (), echo_probe, not lines),
        "09-epoll/epoll": (bin_dir / "09-epoll/epoll", (), echo_probe, not lines),
        "10-reactor/echo": (bin_dir / "10-reactor/echo", (), echo_probe, not lines),
        "10-reactor/chat": (bin_dir / "10-reactor/chat", (), chat_probe, lines),
        "11-threads/workers": (bin_dir / "11-threads/workers", (), factor_probe, lines),
        "11-threads/reuseport": (bin_dir / "11-threads/reuseport", (), factor_probe, lines),
        "12-proxy": (bin_dir / "12-proxy", ("--upstream", upstream.address), echo_probe, not lines),
    }


# The attacks ------------------------------------------------------------------------------------------------------
# Each takes the server and returns (sockets to close afterwards, a note); each is bounded in count and time.

def rss_kib(pid: int) -> int:
    total = 0
    for task in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{task}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def _children(pid: int) -> list[int]:
    from vocabulary import children_of
    return list(children_of(pid))


def silent(server, probe):
    held = [_connect(server) for _ in range(20)]
    time.sleep(0.3)
    return held, "20 clients connected and sent nothing"


def _send_for(sock: socket.socket, chunk: bytes, limit: int, within: float) -> int:
    """Sends `chunk` repeatedly without reading, until `limit` bytes, `within` seconds, or 1 s stuck."""
    sock.setblocking(False)
    sent, deadline, last = 0, time.monotonic() + within, time.monotonic()
    while sent < limit and time.monotonic() < deadline and time.monotonic() - last < 1.0:
        _, writable, _ = select.select([], [sock], [], 0.1)
        if not writable:
            continue
        try:
            count = sock.send(chunk)
        except BlockingIOError:
            continue
        except OSError:
            break
        if count:
            sent += count
            last = time.monotonic()
    return sent


def huge_line(server, probe):
    before = rss_kib(server.pid)
    sock = _connect(server)
    sent = _send_for(sock, b"x" * 65536, 64 << 20, 6.0)
    grown = rss_kib(server.pid) - before
    closed = _read_until(sock, lambda data: False, 0.2)
    return [sock], f"sent {sent >> 10} KiB without a newline; server RSS grew {grown} KiB; it replied {closed[:60]!r}"


def zero_window(server, probe):
    before = rss_kib(server.pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, server.port))
    # A request whose reply is at least as long as itself, in the lesson's protocol.
    line = {"06": b"echo " + b"y" * 1018 + b"\n", "07": b"pid\n" * 256, "11": b"18446744073709551615\n" * 48,
            "05": b"GET 1000000\n"}.get(server.label[:2], b"y" * 1023 + b"\n")
    sent = _send_for(sock, line * 64, 64 << 20, 6.0)
    grown = rss_kib(server.pid) - before
    return [sock], f"sent {sent >> 10} KiB of lines reading nothing; server RSS grew {grown} KiB"


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def rst_after_connect(server, probe):
    for _ in range(200):
        _reset(_connect(server))
    return [], "200 clients connected and reset at once"


def rst_mid_transfer(server, probe):
    for _ in range(20):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((HOST, server.port))
        _send_for(sock, (b"GET 1000000\n" if "05" in server.label else b"z" * 1023 + b"\n") * 64, 1 << 20, 0.5)
        _read_until(sock, lambda data: len(data) > 1000, 0.2)
        _reset(sock)
    return [], "20 clients reset mid-transfer"


def half_close(server, probe):
    sock = _connect(server)
    sock.sendall(b"echo half\n" if "06" in server.label else b"half\n")
    sock.shutdown(socket.SHUT_WR)
    got = _read_until(sock, lambda data: False, 2.0)
    return [sock], f"half-closed after a line; got {got[:80]!r} then {'close' if True else ''}"


def storm(server, probe):
    start, count = time.monotonic(), 0
    while count < 3000 and time.monotonic() - start < 10:
        with contextlib.suppress(OSError):
            socket.create_connection((HOST, server.port), timeout=2).close()
        count += 1
    return [], f"{count} connect/close in {time.monotonic() - start:.1f} s"


def garbage(server, probe):
    rng = random.Random(5)
    socks = []
    for _ in range(10):
        sock = _connect(server)
        data = bytes(rng.randrange(256) for _ in range(20000)) + b"\0\0\0\n\r\n\xff\xfe\n"
        with contextlib.suppress(OSError):
            sock.sendall(data)
        socks.append(sock)
    time.sleep(0.3)
    for sock in socks:
        _read_until(sock, lambda data: False, 0.05)
    return socks, "10 clients sent 20 KB of random bytes with NULs"


def slow_senders(server, probe):
    socks = [_connect(server) for _ in range(20)]
    message = b"echo slow\n" if "06" in server.label else b"slow\n"
    for byte in range(len(message)):
        for sock in socks:
            sock.send(message[byte:byte + 1])
        time.sleep(0.05)
    got = [_read_until(sock, lambda data: data.endswith(b"\n"), 1.0) for sock in socks[:3]]
    return socks, f"20 clients sent a byte at a time; first replies {got[0][:40]!r}"


def sigpipe(server, probe):
    for _ in range(20):
        sock = _connect(server)
        with contextlib.suppress(OSError):
            sock.sendall((b"GET 4000000\n" if "05" in server.label else b"p" * 1023 + b"\n") * 200)
        sock.close()  # gone before the replies: the server writes to a closed peer
    return [], "20 clients sent requests and closed before the replies"


ATTACKS = {f.__name__: f for f in (silent, huge_line, zero_window, rst_after_connect, rst_mid_transfer, half_close,
                                   storm, garbage, slow_senders, sigpipe)}


def descriptor_flood(program: Path, arguments, probe, label: str) -> list[str]:
    story = Story("hostile", "", "")
    server = Server(program, story, label, tuple(arguments), descriptor_limit=64)
    problems = []
    try:
        probe(server)
        time.sleep(0.1)
        baseline = server.open_descriptors()
        held = []
        for _ in range(200):
            with contextlib.suppress(OSError):
                held.append(socket.create_connection((HOST, server.port), timeout=2))
        for sock in held:
            with contextlib.suppress(OSError):
                sock.setblocking(False)
                sock.send(b"flood\n")
        time.sleep(0.5)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        time.sleep(1.0)
        busy = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        if busy > 0.1:
            problems.append(f"spins at the limit: {busy:.0%} CPU")
        for sock in held:
            sock.close()
        time.sleep(1.0)
        if problem := probe(server):
            problems.append(f"after the flood: {problem}")
        problems += _health(server, baseline)
    finally:
        server.stop()
    return problems


def _health(server, baseline: int) -> list[str]:
    problems = []
    if not server.running():
        problems.append(f"server {server.state()}")
    if server._sanitizer:
        problems.append("sanitizer: " + " | ".join(server._sanitizer[:6]))
    deadline = time.monotonic() + 3
    while server.running() and server.open_descriptors() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.running() and server.open_descriptors() > baseline:
        problems.append(f"descriptors {server.open_descriptors()} > baseline {baseline}")
    if server.running():
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        time.sleep(0.6)
        busy = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        if busy > 0.1:
            problems.append(f"spins while idle: {busy:.0%} CPU")
    return problems


def _guarded(probe):
    """A probe whose connection fails reports that as its problem, instead of stopping the run."""
    def guarded(server, within: float = 1.0) -> str:
        try:
            return probe(server, within)
        except OSError as error:
            return f"{probe.__name__}: {error} (the server {server.state()})"
    return guarded


def run_lesson(name: str, program: Path, arguments, probe, chosen: list[str]) -> int:
    failures = 0
    probe = _guarded(probe)
    for attack_name in chosen:
        if attack_name == "descriptor_flood":
            problems = descriptor_flood(program, arguments, probe, name)
            if problems and name < "05":
                problems.append("taught in 05")
            print(f"{name:22} {attack_name:18} {'OK' if not problems else 'FAIL: ' + '; '.join(problems)}",
                  flush=True)
            failures += bool(problems)
            continue
        story = Story("hostile", "", "")
        server = Server(program, story, name, tuple(arguments))
        try:
            probe(server)  # warms it up: what it opens on first use (a timer's descriptor) is no leak
            time.sleep(0.1)
            baseline = server.open_descriptors()
            held, note = ATTACKS[attack_name](server, probe)
            problems = []
            started = time.monotonic()
            if server.running() and (problem := probe(server)):
                problems.append(f"during: {problem}")
            elif time.monotonic() - started > 1.0:
                problems.append(f"probe took {time.monotonic() - started:.1f} s")
            if server.running():
                cpu0, t0 = server.cpu_seconds(), time.monotonic()
                time.sleep(0.6)
                busy = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
                if busy > 0.3:
                    problems.append(f"busy {busy:.0%} CPU with the attacker connected and idle")
            for sock in held:
                sock.close()
            time.sleep(0.2)
            problems += _health(server, baseline)
            if server.running() and (problem := probe(server)):
                problems.append(f"after: {problem}")
        finally:
            server.stop()
        failures += bool(problems)
        if problems and name < "05" and attack_name in ("huge_line", "zero_window", "descriptor_flood"):
            problems.append("taught in 05")
        print(f"{name:22} {attack_name:18} {'OK' if not problems else 'FAIL'} ({note})"
              f"{'' if not problems else chr(10) + '    ' + '; '.join(problems)}", flush=True)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*")
    parser.add_argument("--build-dir", default=str(Path(__file__).parent.parent / "build" / "default"))
    parser.add_argument("--impl", default="solution")
    parser.add_argument("--attack", action="append", choices=[*ATTACKS, "descriptor_flood"])
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        table = lessons(Path(options.build_dir), options.impl, Path(scratch))
        failures = 0
        for name, (program, arguments, probe, _) in table.items():
            if options.lessons and not any(name.startswith(wanted) for wanted in options.lessons):
                continue
            if not program.exists():
                print(f"{name:22} not built: {program}")
                continue
            failures += run_lesson(name, program, arguments, probe, options.attack or [*ATTACKS, "descriptor_flood"])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
