"""Lesson 12 in ./kqlab bench: what the proxy's extra hop costs.

One sender streams bytes to a sink that counts and discards them: straight to the sink, and through lesson 12's
proxy (solutions/12-proxy, --upstream the sink). Both ends are Python threads here, the same for both ways, so the
difference is the proxy: its rate, and its CPU time per megabyte moved. Runs alternate, round by round; the report
gives medians.
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

CHUNK = 1 << 20


class _Sink:
    """Accepts connections and reads each to its end, counting the bytes; `done` is set when one ends."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buffer = bytearray(CHUNK)
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                while count := connection.recv_into(buffer):
                    self.received += count
            self.done.set()

    def close(self) -> None:
        self.listener.close()


def _stream(port: int, total: int, sink: _Sink) -> float:
    """Sends `total` bytes to 127.0.0.1:`port` and waits until the sink has them all; returns the seconds taken."""
    sink.received = 0
    sink.done.clear()
    payload = b"\x5a" * CHUNK
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sender:
        for _ in range(total // CHUNK):
            sender.sendall(payload)
        sender.shutdown(socket.SHUT_WR)
        if not sink.done.wait(60) or sink.received != total:
            raise RuntimeError(f"the sink received {sink.received} of {total} bytes")
    return time.perf_counter() - started


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(build: Path, repeats: int, megabytes: int, log) -> dict:
    """`megabytes` straight to the sink and through the proxy, `repeats` alternating rounds; medians. {} if the
    lesson's solution is not built."""
    program = build / "bin" / "solution" / "12-proxy"
    if not program.is_file():
        log("  lesson 12's solution is not built: skipped")
        return {}
    total = megabytes * CHUNK
    sink = _Sink()
    direct, proxied, cpu = [], [], []
    try:
        for _ in range(repeats):
            direct.append(total / _stream(sink.port, total, sink) / 1e6)
            proxy = subprocess.Popen([str(program), "--host", "127.0.0.1", "--port", "0", "--upstream",
                                      f"127.0.0.1:{sink.port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
            try:
                port = int(proxy.stdout.readline().rsplit(":", 1)[1])
                before = _cpu_seconds(proxy.pid)
                proxied.append(total / _stream(port, total, sink) / 1e6)
                cpu.append(1e3 * (_cpu_seconds(proxy.pid) - before) / megabytes)
            finally:
                proxy.terminate()
                proxy.wait(10)
    finally:
        sink.close()
    summary = {"megabytes": megabytes, "repeats": repeats, "direct_mb_s": statistics.median(direct),
               "proxy_mb_s": statistics.median(proxied), "proxy_cpu_ms_per_mb": statistics.median(cpu)}
    log(f"  direct {summary['direct_mb_s']:8.0f} MB/s   through the proxy {summary['proxy_mb_s']:8.0f} MB/s   "
        f"proxy CPU {summary['proxy_cpu_ms_per_mb']:.2f} ms per MB")
    return summary


def report_lines(summary: dict) -> list[str]:
    if not summary:
        return []
    share = summary["proxy_mb_s"] / summary["direct_mb_s"] if summary["direct_mb_s"] else 0
    return ["## Lesson 12: the proxy's extra hop", "",
            f"{summary['megabytes']} MB from one sender to a sink that discards them, straight and through lesson "
            f"12's proxy (64 KiB per direction), medians of {summary['repeats']} alternating rounds. Both ends are "
            f"Python threads, the same for both ways.", "",
            "| way | MB/s | proxy CPU per MB |", "|---|---:|---:|",
            f"| straight to the sink | {summary['direct_mb_s']:,.0f} | |",
            f"| through the proxy | {summary['proxy_mb_s']:,.0f} ({share:.0%}) | "
            f"{summary['proxy_cpu_ms_per_mb']:.2f} ms |", "",
            "The proxy reads each byte into its buffer and writes it out again: two copies and two system calls per "
            "64 KiB at best, and a second pair of socket buffers for the bytes to cross.", ""]
