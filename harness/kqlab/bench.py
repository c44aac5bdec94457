"""./kqlab bench: the echo servers side by side, and what kqlab's Linux layer costs.

Built with the `release` preset. The servers are lesson 01's solution (kqueue, through compat/ on Linux), the
same server on raw epoll (bench/epoll_echo.cpp), that one again making the layer's one query per event, and any
later lesson listed in ECHO_LESSONS whose solution is built. For each server:

1. Load (harness/loadgen) at 1, 100, 1,000 and 10,000 connections, and with a new connection per request: the
   runs interleaved (each round visits every server, in a rotating order) and repeated; medians and the spread
   (lowest to highest). Server and load generator run on different CPUs. On a 2-core machine the generator
   saturates first, so beside throughput and latency the report gives the server's CPU time per round trip:
   what separates one server from another.
2. System calls per round trip, counted under strace in two counted runs (M and 2M round trips); the difference
   leaves out start-up and connection set-up, so only the steady state remains. Likewise the instructions the
   server executes in user space per round trip, under callgrind: unlike CPU time, neither count depends on what
   else the machine is doing.
3. Memory per idle connection: the server's resident memory with N idle connections, less without them. And the
   layer's own heap per watched descriptor (bench/layer_memory.cpp).
4. What a delivery costs in each of the layer's modes (bench/mode_costs.cpp): the claims of compat/README.md's
   "Speed" section, in system calls and CPU time per event.
5. Lesson 11's two servers, threads on one queue and a queue per thread, under the same loads (bench_threads.py),
   and lesson 12's proxy against a straight connection (bench_proxy.py).
6. The CPU time of one delivered event in a tight loop (bench/event_cost.cpp): raw epoll, raw epoll with the
   layer's query for `data`, and kevent() through the layer, which splits the layer's cost into the query and its
   own code far more finely than a loaded machine lets the servers' CPU times do.

It writes report.md, results.json and SVG plots into build/release/bench/, for the docs to include.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import bench_proxy, bench_report, bench_threads, course, tools
from .bench_setup import FULL, QUICK, Config, Measurements, Pinning, RunningServer, Server, raise_descriptor_limit, \
    run_loadgen

# The lessons whose solution is an echo server the load generator can drive (it prints `listening on HOST:PORT`
# and echoes every byte): a lesson's directory, or lesson/program for a lesson of several programs. Those not
# built here are skipped (09-epoll/epoll exists on Linux only).
ECHO_LESSONS = ["01-echo", "02-registration", "09-epoll/kqueue", "09-epoll/epoll", "10-reactor/echo"]

# The baseline, and the lesson written in exactly its structure: their comparison is the layer's cost. The
# baseline also runs making the layer's query for `data` (QUERY), which splits that cost in two: the query, and
# the layer's own code.
BASELINE = "epoll"
QUERY = "epoll+FIONREAD"
LAYER = "01-echo"

# The CMake targets the bench runs besides the lessons' solutions.
PROGRAMS = ("loadgen", "epoll_echo", "layer_memory", "event_cost", "mode_costs")


# ---- The command ----------------------------------------------------------------------------------------------

def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./kqlab bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: 1 and 100 connections, one round")
    parser.add_argument("--connections", help="comma-separated connection counts (default 1,100,1000,10000)")
    parser.add_argument("--repeats", type=int, help="rounds of runs (default 5)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 2)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite report.md and the plots from the last run's results.json, measuring nothing")
    options = parser.parse_args(arguments)
    out = tools.build_dir("release") / "bench"
    if options.report_only:
        if not (out / "results.json").exists():
            print(f"kqlab bench: {tools.shown(out / 'results.json')} does not exist: run ./kqlab bench first.")
            return 2
        write_report(*load_results(out / "results.json"), out)
        print(f"kqlab bench: rewrote {tools.shown(out / 'report.md')}")
        return 0
    config = dataclasses.replace(QUICK if options.quick else FULL)
    if options.connections:
        config.connections = tuple(int(n) for n in options.connections.split(","))
    if options.repeats:
        config.repeats = options.repeats
    if options.duration:
        config.duration = options.duration
    if platform.system() != "Linux":
        print("kqlab bench: it measures kqlab's Linux layer against raw epoll, so it runs on Linux only.")
        return 2

    tools.banner("Build: preset release (optimised, no sanitizers)")
    lessons = tuple(dict.fromkeys(f"solution_{name.split('/')[0]}" for name in (*ECHO_LESSONS, "11-threads", "12-proxy")
                                  if (course.SOLUTIONS / name.split("/")[0]).is_dir()))
    if tools.configure("release", quiet=True) or tools.build("release", PROGRAMS + lessons + bench_proxy.TARGETS):
        return 1
    build = tools.build_dir("release")
    started = time.monotonic()
    results = measure(build, config, out, log=print)
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(f"\nkqlab bench: done in {minutes}m{seconds:02d}s. The report: {tools.shown(out / 'report.md')}")
    runs = results.runs + results.per_request_runs
    return 0 if all(run["errors"] == 0 and run["mismatches"] == 0 for run in runs) else 1


def servers(build: Path) -> list[Server]:
    found = [Server(name, build / "bin" / "solution" / name,
                    f"lesson {name[:2]}'s solution" + (", on epoll" if name.endswith("/epoll") else ", on kqueue"))
             for name in ECHO_LESSONS if (build / "bin" / "solution" / name).is_file()]
    epoll_echo = build / "bin" / "bench" / "epoll_echo"
    found.append(Server(QUERY, epoll_echo, "the raw-epoll server making the layer's one query per event (FIONREAD, "
                        "for `data`) and reading that many bytes", ("--fionread",)))
    found.append(Server(BASELINE, epoll_echo, "the same server on raw epoll"))
    return found


def measure(build: Path, config: Config, out: Path, log=print) -> Measurements:
    """Runs everything and writes the report into `out`. `build` is a build tree holding bin/loadgen, the servers
    and bin/bench/ (the release one for figures; a test may pass another)."""
    out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config)  # trimmed below to what the descriptor limit allows
    loadgen = build / "bin" / "loadgen"
    chosen = servers(build)
    results = Measurements(machine=machine_facts())
    results.machine["load_before"] = os.getloadavg()
    limit = raise_descriptor_limit(max(config.connections + (config.idle_connections,)))
    config.connections = tuple(n for n in config.connections if n <= limit)
    config.idle_connections = min(config.idle_connections, limit)
    cpus = Pinning()
    log(f"\n==> Load: {', '.join(map(str, config.connections))} connections x {config.repeats} rounds, "
        f"{config.duration} s each after {config.warmup} s of warm-up; {cpus.describe()}")
    for connections in config.connections:
        results.runs += interleaved_runs(loadgen, chosen, connections, config, cpus, log)
    if config.per_request:
        log(f"\n==> A new connection per request, {config.per_request} at a time")
        results.per_request_runs = interleaved_runs(loadgen, chosen, config.per_request, config, cpus, log,
                                                    ("--connect-per-request",))

    log("\n==> System calls per round trip (strace -c, two counted runs)")
    count_syscalls(loadgen, chosen, config, cpus, results, log)

    log("\n==> A delivery in each of the layer's modes (bench/mode_costs.cpp; compat/README.md, Speed)")
    measure_modes(build, config, results, log)

    log("\n==> User-space instructions per round trip (callgrind, two counted runs)")
    count_instructions(loadgen, chosen, config, cpus, results, log)

    log(f"\n==> Memory per idle connection ({config.idle_connections:,} connections)")
    for server in chosen:
        results.idle_memory[server.name] = idle_memory(loadgen, server, config.idle_connections, cpus)
        log(f"  {server.name:>14}  {results.idle_memory[server.name]['bytes_per_connection']:8.0f} bytes of "
            f"resident memory per idle connection")
    results.layer_memory = run_probe(build, "layer_memory", [str(config.layer_descriptors)], log)

    log("\n==> CPU time per delivered event, in a tight loop (bench/event_cost.cpp)")
    results.event_cost = run_probe(build, "event_cost", [str(config.event_iterations)], log)

    log("\n==> Lesson 11: threads on one queue, or a queue per thread (bench_threads.py)")
    results.threads = bench_threads.measure(build, config.repeats, config.duration, log)

    log("\n==> Lesson 12's proxy against a direct connection (bench_proxy.py)")
    results.proxy = bench_proxy.measure(build, config, cpus, log)
    results.machine["load_after"] = os.getloadavg()

    saved = {"config": dataclasses.asdict(config), "servers": [dataclasses.asdict(server) for server in chosen],
             "results": dataclasses.asdict(results)}
    (out / "results.json").write_text(json.dumps(saved, indent=1, default=str) + "\n")
    write_report(results, config, chosen, out)
    return results


def run_probe(build: Path, name: str, arguments: list[str], log) -> dict:
    """Runs bench/NAME, shows its table and returns its last line, JSON; {} (and its complaint shown) if it
    failed."""
    done = subprocess.run([str(build / "bin" / "bench" / name), *arguments], capture_output=True, text=True,
                          timeout=300)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        log(f"  {name} failed: {done.stderr.strip()}")
        return {}
    log("\n".join(lines[:-1]))
    return json.loads(lines[-1])


def write_report(results: Measurements, config: Config, chosen: list[Server], out: Path) -> None:
    bench_report.write(results, config, chosen, out, BASELINE, QUERY, LAYER)


def load_results(path: Path) -> tuple[Measurements, Config, list[Server]]:
    """What measure() saved in results.json, as it was (JSON has made the connection counts strings)."""
    saved = json.loads(path.read_text())
    config = Config(**{key: tuple(value) if isinstance(value, list) else value
                       for key, value in saved["config"].items()})
    chosen = [Server(s["name"], Path(s["program"]), s["description"], tuple(s["arguments"])) for s in saved["servers"]]
    results = Measurements(**saved["results"])
    for by_server in (results.syscalls, results.instructions):
        for name, counted in by_server.items():
            by_server[name] = {int(connections): value for connections, value in counted.items()}
    return results, config, chosen


# ---- Measured runs --------------------------------------------------------------------------------------------

def load_run(loadgen: Path, server: Server, connections: int, config: Config, cpus: Pinning,
             mode: tuple[str, ...] = ()) -> dict:
    """One measured run against a freshly started server. `mode`: more load generator options."""
    with RunningServer(server, cpus.server) as running:
        arguments = ["--connect", running.address, "--server-pid", str(running.pid), "--connections",
                     str(connections), "--size", str(config.size), "--duration", str(config.duration), "--warmup",
                     str(config.warmup), *cpus.loadgen_arguments(), *mode]
        if "--connect-per-request" not in mode:
            arguments += ["--depth", str(config.depth)]
        return run_loadgen(loadgen, arguments, timeout=config.duration + config.warmup + 60 + connections / 100)


def interleaved_runs(loadgen: Path, chosen: list[Server], connections: int, config: Config, cpus: Pinning, log,
                     mode: tuple[str, ...] = ()) -> list[dict]:
    """config.repeats rounds, each running every server once, in an order that rotates from round to round."""
    runs = []
    for round_number in range(config.repeats):
        shift = round_number % len(chosen)
        for server in chosen[shift:] + chosen[:shift]:
            run = load_run(loadgen, server, connections, config, cpus, mode)
            run.update(server=server.name, round=round_number)
            runs.append(run)
            log(f"  {server.name:>14} {connections:>6} conn  {run['throughput_per_s']:>9,.0f} rt/s  "
                f"server {run.get('server_cpu_us_per_round_trip', 0):6.2f} us/rt  p99 "
                f"{run['latency_us']['p99']:8.1f} us  errors {run['errors']}  mismatches {run['mismatches']}")
    return runs


# ---- System calls ---------------------------------------------------------------------------------------------

def tool_available(tool: str, purpose: str, log) -> bool:
    """`tool` (a Debian package of the same name), installed the way ./kqlab installs its other tools: with
    apt-get when root on Debian or Ubuntu, else not (the caller says how to get it)."""
    if shutil.which(tool):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"kqlab: {purpose} need {tool}; installing it with apt-get (you are root):")
        environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", tool]):
            subprocess.run(command, env=environment, stdin=subprocess.DEVNULL)
        return shutil.which(tool) is not None
    return False


def parse_strace_summary(text: str) -> dict[str, int]:
    """strace -c's table: `% time  seconds  usecs/call  calls  [errors]  syscall` -> {syscall: calls}."""
    calls = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and re.fullmatch(r"[\d.]+", parts[0]) and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    return calls


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def counted_run(loadgen: Path, running: RunningServer, connections: int, messages: int, config: Config,
                cpus: Pinning) -> dict:
    """A run of exactly `messages` round trips per connection; returns once the server has closed them all, so
    that two counted runs differ by their round trips only."""
    descriptors = open_descriptors(running.pid)
    arguments = ["--connect", running.address, "--connections", str(connections), "--messages", str(messages),
                 "--size", str(config.size), "--depth", str(config.depth), *cpus.loadgen_arguments()]
    run = run_loadgen(loadgen, arguments, timeout=600)
    deadline = time.monotonic() + 30
    while open_descriptors(running.pid) > descriptors and time.monotonic() < deadline:
        time.sleep(0.02)
    return run


def traced_counted_run(loadgen: Path, server: Server, connections: int, messages: int, config: Config,
                       cpus: Pinning) -> tuple[dict[str, int], int]:
    """The server's system calls (by name) and the round trips made, for one counted run under strace."""
    with RunningServer(server, cpus.server) as running, tempfile.NamedTemporaryFile("r", suffix=".strace") as summary:
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", summary.name, "-p", str(running.pid)],
                                  stderr=subprocess.PIPE, text=True)
        attached = tracer.stderr.readline()  # "strace: Process N attached": counting from here
        if "attached" not in attached:
            tracer.wait(10)
            raise RuntimeError(f"strace could not attach to the server: {attached.strip()}")
        run = counted_run(loadgen, running, connections, messages, config, cpus)
        tracer.send_signal(signal.SIGINT)  # detaches, and writes the summary
        tracer.wait(30)
        tracer.stderr.close()
        return parse_strace_summary(Path(summary.name).read_text()), run["round_trips_total"]


def count_syscalls(loadgen: Path, chosen: list[Server], config: Config, cpus: Pinning, results: Measurements,
                   log) -> None:
    if not config.counted_connections:
        results.syscall_note = "not asked for."
        return
    if not tool_available("strace", "the system-call counts", log):
        results.syscall_note = ("strace is not installed (Debian/Ubuntu: sudo apt-get install strace): no "
                                "system-call counts.")
        log(f"  {results.syscall_note}")
        return
    try:
        for server in chosen:
            results.syscalls[server.name] = count_server_syscalls(loadgen, server, config, cpus, log)
    except RuntimeError as problem:  # strace not allowed to attach (ptrace restricted): say so in the report
        results.syscalls.clear()
        results.syscall_note = str(problem)
        log(f"  {problem}")


def count_server_syscalls(loadgen: Path, server: Server, config: Config, cpus: Pinning, log) -> dict:
    """connections -> {system call: calls per round trip}, for one server."""
    counted = {}
    for connections in config.counted_connections:
        messages = max(config.counted // connections, 1)  # per connection
        first, trips_first = traced_counted_run(loadgen, server, connections, messages, config, cpus)
        second, trips_second = traced_counted_run(loadgen, server, connections, 2 * messages, config, cpus)
        trips = trips_second - trips_first
        per_trip = {name: (second.get(name, 0) - first.get(name, 0)) / trips
                    for name in sorted(set(first) | set(second)) if trips > 0}
        per_trip = {name: value for name, value in per_trip.items() if abs(value) >= 0.005}
        counted[connections] = per_trip
        shown = ", ".join(f"{name} {value:.2f}" for name, value in sorted(per_trip.items()))
        log(f"  {server.name:>14} {connections:>6} conn  {sum(per_trip.values()):5.2f} per round trip: {shown}")
    return counted


# ---- The layer's modes ----------------------------------------------------------------------------------------

# bench/mode_costs's modes, and what compat/README.md's "Speed" section says a delivery costs in each.
MODES = {
    "level": "level-triggered entry: the kernel re-reports, one ioctl for data",
    "clear": "EV_CLEAR, edge-triggered entry: no epoll_ctl per event (a write makes each edge, a read empties)",
    "dispatch": "EV_DISPATCH re-enabled each time: a poll() probe at the next scan, not an epoll_ctl",
    "oneshot": "EV_ONESHOT added again each time: no epoll_ctl (the entry stays until trimmed)",
    "mixed": "a level read knote on an edge-triggered entry (EV_CLEAR write knote): re-queued and probed, "
             "no wake-up from epoll",
    "reactor": "EV_CLEAR read and write knotes on one socket: each arrival is a read edge only (one "
               "getsockopt(TCP_INFO) tells that no room was made)",
}


def mode_syscalls(probe: Path, mode: str, iterations: int) -> dict[str, int]:
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as summary:
        done = subprocess.run(["strace", "-c", "-f", "-o", summary.name, str(probe), mode, str(iterations)],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{probe.name} {mode} failed under strace: {done.stderr.strip()}")
        return parse_strace_summary(Path(summary.name).read_text())


def measure_modes(build: Path, config: Config, results: Measurements, log) -> None:
    """For each mode: system calls per delivered event (strace, N and 2N deliveries) and CPU time per event."""
    probe = build / "bin" / "bench" / "mode_costs"
    for mode in MODES:
        done = subprocess.run([str(probe), mode, str(config.mode_iterations)], capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            results.modes[mode] = {"claim": MODES[mode], "error": done.stderr.strip()}
            log(f"  {mode:>9}  FAILED: {done.stderr.strip()}")
            continue
        entry = {"claim": MODES[mode], "cpu_ns_per_event": json.loads(done.stdout)["cpu_ns_per_event"]}
        if results.syscalls:  # the servers' counts worked: strace is there, and may trace
            n = max(config.mode_iterations // 10, 100)
            first, second = mode_syscalls(probe, mode, n), mode_syscalls(probe, mode, 2 * n)
            per_event = {name: (second.get(name, 0) - first.get(name, 0)) / n for name in set(first) | set(second)}
            entry["syscalls"] = {name: value for name, value in sorted(per_event.items()) if abs(value) >= 0.005}
        results.modes[mode] = entry
        shown = ", ".join(f"{name} {value:.2f}" for name, value in entry.get("syscalls", {}).items())
        log(f"  {mode:>9}  {entry['cpu_ns_per_event']:6.0f} ns per event  {shown}")


# ---- Instructions ---------------------------------------------------------------------------------------------

def callgrind_counted_run(loadgen: Path, server: Server, connections: int, messages: int, config: Config,
                          cpus: Pinning) -> tuple[int, int]:
    """The instructions the server executed in user space (callgrind's Ir, libraries included) and the round
    trips made, for one counted run of a server started under callgrind."""
    with tempfile.TemporaryDirectory() as scratch:
        profile = Path(scratch) / "callgrind.out"
        under = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={profile}")
        with RunningServer(server, cpus.server, under) as running:
            run = counted_run(loadgen, running, connections, messages, config, cpus)
        # The server has been stopped (SIGTERM): callgrind wrote its totals on the way out.
        match = re.search(r"^(?:summary|totals):\s+(\d+)", profile.read_text(), re.MULTILINE)
        if not match:
            raise RuntimeError(f"callgrind wrote no totals for {server.name}")
        return int(match.group(1)), run["round_trips_total"]


def count_instructions(loadgen: Path, chosen: list[Server], config: Config, cpus: Pinning, results: Measurements,
                       log) -> None:
    """User-space instructions per round trip, from two counted runs under callgrind (as for system calls)."""
    if not config.counted_connections:
        results.instructions_note = "not asked for."
        return
    if not tool_available("valgrind", "the instruction counts", log):
        results.instructions_note = ("valgrind is not installed (Debian/Ubuntu: sudo apt-get install valgrind): no "
                                     "instruction counts.")
        log(f"  {results.instructions_note}")
        return
    for server in chosen:
        results.instructions[server.name] = {}
        for connections in config.counted_connections:
            messages = max(config.counted // connections, 1)
            first, trips_first = callgrind_counted_run(loadgen, server, connections, messages, config, cpus)
            second, trips_second = callgrind_counted_run(loadgen, server, connections, 2 * messages, config, cpus)
            per_trip = (second - first) / max(trips_second - trips_first, 1)
            results.instructions[server.name][connections] = per_trip
            log(f"  {server.name:>14} {connections:>6} conn  {per_trip:7.0f} instructions per round trip")


# ---- Memory ---------------------------------------------------------------------------------------------------

def resident_bytes(pid: int) -> int:
    """The process's resident memory (Rss in /proc/PID/smaps_rollup, else VmRSS)."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Rss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def idle_memory(loadgen: Path, server: Server, connections: int, cpus: Pinning) -> dict:
    """Resident memory per idle connection: with `connections` open and idle, less what it was before, after a
    few connections have come and gone (so that what a server allocates once is not counted)."""
    with RunningServer(server, cpus.server) as running:
        warm = subprocess.run([str(loadgen), "--connect", running.address, "--connections", "8", "--messages", "4"],
                              capture_output=True, text=True, timeout=60)
        if warm.returncode != 0:
            raise RuntimeError(f"loadgen against {server.name} failed:\n{warm.stdout}{warm.stderr}")
        time.sleep(0.2)  # the server closes those connections on their EOF
        before = resident_bytes(running.pid)
        holder = subprocess.Popen([str(loadgen), "--connect", running.address, "--connections", str(connections),
                                   "--idle", *cpus.loadgen_arguments()], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        line = holder.stdout.readline()  # "idle N connections", once each has made one round trip
        after = resident_bytes(running.pid)
        holder.stdin.close()  # the load generator closes its connections and exits
        holder.stdout.read()
        holder.wait(60)
        held = int(line.split()[1]) if line.startswith("idle ") else 0
        return {"connections": held, "rss_before": before, "rss_after": after,
                "bytes_per_connection": (after - before) / held if held else 0}


# ---- The machine ----------------------------------------------------------------------------------------------

def machine_facts() -> dict:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cpus": os.cpu_count(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "python": sys.version.split()[0]}
