"""./kqlab bench, lesson 12: the proxy's throughput against a direct connection.

The load generator streams large messages (STREAM_SIZE bytes, STREAM_DEPTH in flight per connection, every byte
checked) to the raw-epoll echo server (bench/epoll_echo.cpp), once directly and once through lesson 12's solution
in front of it, the runs interleaved and repeated as bench.py's are. Each message crosses the proxy twice (there and
back), each time as a read() and a write() in its user space, in pieces of at most --buffer bytes. The report
gives both rates in MiB/s each way, the proxy's share of the direct rate, and the proxy's CPU time per MiB moved.

bench.py calls measure() and report_lines(); nothing else of the bench depends on this module.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from .bench_setup import Config, Pinning, RunningServer, Server, run_loadgen

LESSON = "12-proxy"
TARGETS = (f"solution_{LESSON}",)  # built by ./kqlab bench besides bench.PROGRAMS
STREAM_SIZE = 64 * 1024  # bytes per message
STREAM_DEPTH = 4  # messages in flight per connection
CONNECTIONS = (1, 10)


def measure(build: Path, config: Config, cpus: Pinning, log=print) -> dict:
    """Runs the comparison; returns {connections: {"direct": [runs], "proxy": [runs]}} ({} if the proxy or the
    echo server is not built in `build`)."""
    proxy = build / "bin" / "solution" / LESSON
    echo = build / "bin" / "bench" / "epoll_echo"
    loadgen = build / "bin" / "loadgen"
    if not (proxy.is_file() and echo.is_file() and loadgen.is_file()):
        log(f"  skipped: {proxy} or {echo} is not built")
        return {}
    upstream = Server("epoll", echo, "the raw-epoll echo server")
    results: dict = {}
    for connections in CONNECTIONS:
        runs: dict[str, list[dict]] = {"direct": [], "proxy": []}
        for round_number in range(config.repeats):
            order = ["direct", "proxy"] if round_number % 2 == 0 else ["proxy", "direct"]
            for way in order:
                run = _stream_run(loadgen, upstream, proxy if way == "proxy" else None, connections, config, cpus)
                runs[way].append(run)
                log(f"  {way:>6} {connections:>3} conn  {_mib_per_s(run):8.1f} MiB/s each way  errors "
                    f"{run['errors']}  mismatches {run['mismatches']}")
        results[connections] = runs
    return results


def _stream_run(loadgen: Path, upstream: Server, proxy: Path | None, connections: int, config: Config,
                cpus: Pinning) -> dict:
    """One run: the echo server on the server's CPU, the proxy (if any) unpinned in front of it, the load generator
    on its CPU. The CPU time measured is the proxy's when there is one, else the echo server's."""
    with RunningServer(upstream, cpus.server) as echo:
        front = None
        if proxy is not None:
            front = RunningServer(Server("proxy", proxy, "lesson 12's proxy",
                                                     ("--upstream", echo.address)), None)
        try:
            target = front or echo
            arguments = ["--connect", target.address, "--server-pid", str(target.pid), "--connections",
                         str(connections), "--size", str(STREAM_SIZE), "--depth", str(STREAM_DEPTH), "--duration",
                         str(config.duration), "--warmup", str(config.warmup), *cpus.loadgen_arguments()]
            return run_loadgen(loadgen, arguments, timeout=config.duration + config.warmup + 60)
        finally:
            if front is not None:
                front.stop()


def _mib_per_s(run: dict) -> float:
    return run.get("bytes_per_s", 0) / (1 << 20)


def _cpu_ms_per_mib(run: dict) -> float | None:
    """The measured process's CPU time per MiB it moved (each MiB crosses it twice: there and back)."""
    per_round_trip = run.get("server_cpu_us_per_round_trip")
    if per_round_trip is None:
        return None
    return per_round_trip / 1000 * (1 << 20) / STREAM_SIZE


def report_lines(results: dict) -> list[str]:
    """The report's section, in Markdown; [] when nothing was measured."""
    if not results:
        return []
    lines = ["", "## Lesson 12's proxy against a direct connection", "",
             f"The load generator streams {STREAM_SIZE // 1024} KiB messages, {STREAM_DEPTH} in flight per "
             f"connection, to the raw-epoll echo server, directly and through lesson 12's solution (release build, "
             f"default --buffer); every byte checked. Medians of the rounds, with the lowest and highest.", "",
             "| connections | direct, MiB/s each way | through the proxy | the proxy's share | proxy CPU per MiB |",
             "|---:|---:|---:|---:|---:|"]
    for connections, runs in sorted(results.items(), key=lambda item: int(item[0])):
        direct = [_mib_per_s(run) for run in runs["direct"]]
        proxied = [_mib_per_s(run) for run in runs["proxy"]]
        cpu = [value for run in runs["proxy"] if (value := _cpu_ms_per_mib(run)) is not None]
        if not direct or not proxied:
            continue
        share = statistics.median(proxied) / statistics.median(direct) if statistics.median(direct) else 0
        cpu_text = f"{statistics.median(cpu):.2f} ms" if cpu else "n/a"
        lines.append(f"| {connections} | {_spread(direct)} | {_spread(proxied)} | {share:.0%} | {cpu_text} |")
    bad = [run for runs in results.values() for way in runs.values() for run in way
           if run["errors"] or run["mismatches"]]
    if bad:
        lines += ["", f"**{len(bad)} runs had errors or mismatched bytes**: the figures above are not to be trusted."]
    return lines


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"
