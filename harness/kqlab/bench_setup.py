"""What a bench run is made of, shared by bench.py and the modules it calls (bench_threads.py, bench_proxy.py) and
read by bench_report.py: the servers measured, the run's configuration, the measurements, and the running of a
server and of the load generator for one measurement. Nothing here imports the rest of the bench, so that each of
those modules can stand on it without importing the others."""
from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Server:
    name: str         # as the report names it
    program: Path
    description: str
    arguments: tuple[str, ...] = ()  # before the --host and --port every lesson server takes


@dataclass
class Config:
    connections: tuple[int, ...] = (1, 100, 1000, 10000)
    repeats: int = 5
    duration: float = 2.0        # measured seconds per run
    warmup: float = 0.5
    size: int = 64               # bytes per message
    depth: int = 1               # messages in flight per connection
    counted: int = 5000          # round trips in the first system-call run, shared by its connections (the second
                                 # makes twice as many)
    counted_connections: tuple[int, ...] = (1, 100)
    per_request: int = 50        # connections at a time in the connect-per-request runs (0: none)
    idle_connections: int = 10000
    layer_descriptors: int = 10000
    event_iterations: int = 50000  # kevent()/epoll_wait() calls per round of bench/event_cost
    mode_iterations: int = 20000   # deliveries per mode in bench/mode_costs (a tenth of them under strace)


FULL = Config()
QUICK = Config(connections=(1, 100), repeats=1, duration=0.3, warmup=0.1, counted=500, counted_connections=(1,),
               per_request=10, idle_connections=500, layer_descriptors=1000, event_iterations=5000,
               mode_iterations=2000)


@dataclass
class Measurements:
    runs: list[dict] = field(default_factory=list)               # loadgen's JSON, with "server" and "round" added
    per_request_runs: list[dict] = field(default_factory=list)   # the same, a new connection per request
    syscalls: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)  # server -> connections -> per RT
    syscall_note: str = ""
    instructions: dict[str, dict[int, float]] = field(default_factory=dict)  # server -> connections -> per RT
    instructions_note: str = ""
    idle_memory: dict[str, dict] = field(default_factory=dict)   # server -> {"connections", "bytes_per_connection"}
    layer_memory: dict = field(default_factory=dict)
    event_cost: dict = field(default_factory=dict)  # events per call -> {"epoll", "epoll_fionread", "kevent"}: ns
    modes: dict = field(default_factory=dict)  # mode -> {"claim", "cpu_ns_per_event", "syscalls": {name: per event}}
    threads: dict = field(default_factory=dict)  # lesson 11's two servers under two loads (bench_threads.py)
    machine: dict = field(default_factory=dict)
    proxy: dict = field(default_factory=dict)  # lesson 12 against a direct connection (bench_proxy.py)


# ---- Running servers and the load generator -------------------------------------------------------------------

class Pinning:
    """Which CPU the server and the load generator get: different ones when there are two or more."""

    def __init__(self) -> None:
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.loadgen = allowed[0] if len(allowed) >= 2 else None
        self.server = allowed[1] if len(allowed) >= 2 else None

    def describe(self) -> str:
        if self.server is None:
            return "one CPU only: server and load generator share it"
        return f"server on CPU {self.server}, load generator on CPU {self.loadgen}"

    def loadgen_arguments(self) -> list[str]:
        return [] if self.loadgen is None else ["--cpu", str(self.loadgen)]


def raise_descriptor_limit(wanted: int) -> int:
    """Raises this process's descriptor limit (the servers and the load generator inherit it) to fit `wanted`
    connections; returns how many connections fit. Says so when the hard limit is too low."""
    needed = wanted + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return wanted
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
        return wanted
    except (ValueError, OSError):
        pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fits = max(hard - 64, 1)
    print(f"kqlab bench: {wanted:,} connections need {needed:,} descriptors, but the hard limit is {hard:,} "
          f"(ulimit -Hn): measuring up to {fits:,}. Raise it (as root: ulimit -Hn {needed}) for the full set.")
    return fits


class RunningServer:
    """A server started for one measurement, on its CPU, stopped with the `with` block."""

    def __init__(self, server: Server, cpu: int | None, under: tuple[str, ...] = ()) -> None:
        """`under`: a command to run the server under (valgrind ...)."""
        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
        self.process = subprocess.Popen([*under, str(server.program), *server.arguments, "--host", "127.0.0.1",
                                         "--port", "0"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        preexec_fn=pin, text=True)
        line = self.process.stdout.readline()  # the server's first line; a dead server gives "" at once
        match = re.fullmatch(r"listening on \[?([^\]]+)\]?:(\d+)", line.strip())
        if not match:
            self.stop()
            raise RuntimeError(f"{server.program} did not say 'listening on HOST:PORT' (it said {line!r}, "
                               f"stderr {self.process.stderr.read().strip()!r})")
        self.address = f"{match.group(1)}:{match.group(2)}"
        self.pid = self.process.pid

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()


def run_loadgen(loadgen: Path, arguments: list[str], timeout: float) -> dict:
    """Runs the load generator to the end; returns its JSON results (it reports errors and mismatches there)."""
    with tempfile.TemporaryDirectory() as scratch:
        json_file = Path(scratch) / "results.json"
        done = subprocess.run([str(loadgen), *arguments, "--json", str(json_file)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if not json_file.exists():
            raise RuntimeError(f"loadgen {' '.join(arguments)} failed (status {done.returncode}):\n{done.stdout}")
        return json.loads(json_file.read_text())
