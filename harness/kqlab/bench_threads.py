"""Lesson 11 in ./kqlab bench: many threads on one queue against one queue per thread.

Both of lesson 11's servers (solutions/11-threads: `workers`, `reuseport`) answer the same requests, a number per
line, with the same number of threads. Two loads, from a client of its own here (the echo load generator cannot
speak the protocol):

1. small requests only: C connections, each sending "360" and waiting for its answer before the next. What it
   shows: requests per second, the latency, and the server's CPU time per request, where the shared queue pays for
   its lock and its EV_ENABLE call per request;
2. the same, while a few other connections keep sending a slow request (a 15-digit prime) one after the other.
   What it shows: how long the small requests wait. The shared queue hands each request to a free thread; a queue
   per thread leaves the small requests of a busy thread's connections behind its slow one.

Runs interleave the two servers, round by round; the report gives medians.
"""
from __future__ import annotations

import os
import selectors
import socket
import statistics
import subprocess
import time
from pathlib import Path

PROGRAMS = ("workers", "reuseport")
THREADS = 2              # as many as a small machine has cores
SMALL = b"360\n"
SMALL_ANSWER = b"360: 2 2 2 3 3 5\n"
SLOW = b"1000000000000037\n"  # prime: tens of milliseconds of trial division in a release build
CONNECTIONS = 16
SLOW_CONNECTIONS = 1  # fewer slow streams than threads: one thread is always free for the small requests


def _start(program: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([str(program), "--host", "127.0.0.1", "--port", "0", "--threads", str(THREADS)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"{program} did not say where it listens: {line!r}")
    return process, int(line.rsplit(":", 1)[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive(port: int, duration: float, slow_connections: int) -> dict:
    """Closed-loop load for `duration` seconds: returns small requests answered, their latencies, slow ones done."""
    selector = selectors.DefaultSelector()
    latencies: list[float] = []
    slow_done = 0
    sockets = []
    for index in range(CONNECTIONS + slow_connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slow = index >= CONNECTIONS
        state = {"slow": slow, "sent_at": 0.0, "inbox": b"", "answered": 0}
        sockets.append(sock)
        selector.register(sock, selectors.EVENT_READ, state)
    for key in list(selector.get_map().values()):
        key.data["sent_at"] = time.perf_counter()
        key.fileobj.send(SLOW if key.data["slow"] else SMALL)
    end = time.perf_counter() + duration
    while (now := time.perf_counter()) < end:
        for key, _ in selector.select(timeout=end - now):
            chunk = key.fileobj.recv(4096)
            if not chunk:
                raise RuntimeError("the server closed a connection during the bench")
            state = key.data
            state["inbox"] += chunk
            while b"\n" in state["inbox"]:
                answer, _, state["inbox"] = state["inbox"].partition(b"\n")
                done = time.perf_counter()
                if state["slow"]:
                    slow_done += 1
                else:
                    if answer + b"\n" != SMALL_ANSWER:
                        raise RuntimeError(f"wrong answer {answer!r}")
                    latencies.append(done - state["sent_at"])
                    state["answered"] += 1
                state["sent_at"] = done
                key.fileobj.send(SLOW if state["slow"] else SMALL)
    starved = min(key.data["answered"] for key in selector.get_map().values() if not key.data["slow"])
    for sock in sockets:
        sock.close()
    selector.close()
    return {"small": len(latencies), "latencies": latencies, "slow": slow_done, "starved": starved}


def _one_run(program: Path, duration: float, slow_connections: int) -> dict:
    process, port = _start(program)
    try:
        before = _cpu_seconds(process.pid)
        driven = _drive(port, duration, slow_connections)
        cpu = _cpu_seconds(process.pid) - before
    finally:
        process.terminate()
        process.wait(10)
    latencies = sorted(driven["latencies"]) or [0.0]
    return {"requests_per_second": driven["small"] / duration,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "cpu_us_per_request": 1e6 * cpu / max(1, driven["small"] + driven["slow"]) if not slow_connections
            else None,
            "max_ms": 1000 * latencies[-1],
            "least_served_per_second": driven["starved"] / duration,
            "slow_per_second": driven["slow"] / duration}


def measure(build: Path, repeats: int, duration: float, log) -> dict:
    """Every load against both servers, `repeats` interleaved rounds; medians per server and load. {} if the
    lesson's solution is not built."""
    programs = {name: build / "bin" / "solution" / "11-threads" / name for name in PROGRAMS}
    if not all(path.is_file() for path in programs.values()):
        log("  lesson 11's solution is not built: skipped")
        return {}
    loads = {"small": 0, "mixed": SLOW_CONNECTIONS}
    runs: dict[str, dict[str, list[dict]]] = {load: {name: [] for name in programs} for load in loads}
    for round_number in range(repeats):
        order = list(programs) if round_number % 2 == 0 else list(reversed(programs))
        for load, slow_connections in loads.items():
            for name in order:
                runs[load][name].append(_one_run(programs[name], duration, slow_connections))
    summary: dict = {"threads": THREADS, "connections": CONNECTIONS, "slow_connections": SLOW_CONNECTIONS,
                     "duration": duration, "repeats": repeats, "loads": {}}
    for load in loads:
        summary["loads"][load] = {}
        for name in programs:
            median = {key: statistics.median(run[key] for run in runs[load][name])
                      for key in runs[load][name][0] if runs[load][name][0][key] is not None}
            summary["loads"][load][name] = median
            cpu = f", {median['cpu_us_per_request']:5.1f} µs CPU per request" if "cpu_us_per_request" in median else ""
            log(f"  {load:>5} {name:>9}  {median['requests_per_second']:8.0f} requests/s  p50 {median['p50_ms']:6.2f} ms"
                f"  p99 {median['p99_ms']:7.2f} ms  max {median['max_ms']:7.2f} ms  least served connection "
                f"{median['least_served_per_second']:7.0f}/s{cpu}")
    return summary


def report_lines(summary: dict) -> list[str]:
    """The report's section on lesson 11, from measure()'s summary."""
    if not summary:
        return []
    lines = ["## Lesson 11: threads on one queue, or a queue per thread", "",
             f"Both servers with {summary['threads']} threads; {summary['connections']} connections each sending a "
             f"small request (`{SMALL.decode().strip()}`) and waiting for its answer before the next, for "
             f"{summary['duration']:g} s per run, medians of {summary['repeats']} interleaved rounds. *Mixed*: the "
             f"same while {summary['slow_connections']} more connection keeps sending a slow request (a 16-digit "
             f"prime), one after the other. The client is one Python thread: in the small load it is what limits "
             f"throughput, so compare the servers' CPU per request there.", "",
             "| load | server | small requests/s | p50 | p99 | max | least served connection | CPU per request | "
             "slow requests/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for load, servers in summary["loads"].items():
        for name, figures in servers.items():
            cpu = f"{figures['cpu_us_per_request']:.1f} µs" if "cpu_us_per_request" in figures else ""
            slow = f"{figures['slow_per_second']:.1f}" if load == "mixed" else ""
            lines.append(f"| {load} | `{name}` | {figures['requests_per_second']:,.0f} | {figures['p50_ms']:.2f} ms | "
                         f"{figures['p99_ms']:.2f} ms | {figures['max_ms']:.1f} ms | "
                         f"{figures['least_served_per_second']:,.0f}/s | {cpu} | {slow} |")
    lines += ["", "What to read in it: the queue per thread costs less CPU per request (no shared lock, no "
              "`EV_ENABLE` call after each request); with slow requests mixed in, the shared queue keeps the small "
              "ones quick for every connection, while a queue per thread makes the small requests of the busy "
              "thread's connections wait behind the slow one (its max latency, and its least served connection). See lessons/11-threads/README.md, \"One queue per thread\".", ""]
    return lines
