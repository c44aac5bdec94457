"""The bench's report: report.md and its SVG plots, from what harness/kqlab/bench.py measured."""
from __future__ import annotations

import statistics
from pathlib import Path
from . import bench_proxy, bench_threads, plots
from .bench_setup import Config, Measurements, Server
from .bench_targets import targets_table


def write(results: Measurements, config: Config, chosen: list[Server], out: Path, baseline: str, query: str,
          layer: str) -> None:
    """Writes report.md and the plots into `out`. `baseline` names the raw-epoll server, `layer` the kqueue server
    of the same structure (the pair the layer's cost is read from), `query` the baseline making the layer's query
    for `data` (which splits that cost into the query and the layer's own code)."""
    names = [server.name for server in chosen]
    summary = _summarise(results, config, names)
    charts = {  # file: title, unit, measure, logarithmic
        "throughput.svg": ("Round trips per second", "round trips / s", "throughput_per_s", False),
        "cpu_per_round_trip.svg": ("Server CPU time per round trip", "microseconds", "server_cpu_us", False),
        "latency_p99.svg": ("Latency, 99th percentile (log scale)", "microseconds", "p99", True),
    }
    categories = [f"{n:,}" for n in config.connections]
    for file_name, (title, unit, key, log_y) in charts.items():
        series = {name: [summary.get((name, n), {}).get(key) for n in config.connections] for name in names}
        (out / file_name).write_text(plots.line_chart(title, categories, series, unit, baseline=baseline,
                                                      log_y=log_y))

    lines = ["# Echo servers on kqueue (kqlab's Linux layer) and on raw epoll", ""]
    lines += _machine(results)
    lines += ["", "| server | what it is |", "|---|---|"]
    lines += [f"| `{server.name}` | {server.description} (`{server.program.name}`) |" for server in chosen]
    lines += ["", f"Every run: {config.size}-byte messages, {config.depth} in flight per connection, every echoed "
              f"byte checked; {config.duration:g} s measured after {config.warmup:g} s of warm-up; "
              f"{config.repeats} round(s), interleaved (each round runs every server, in a rotating order). "
              f"Figures are medians, with the lowest and highest run in brackets. Produced by `./kqlab bench` "
              f"(harness/kqlab/bench.py); the load generator is harness/loadgen/, the baseline "
              f"bench/epoll_echo.cpp.", ""]
    if layer in names and baseline in names:
        lines += targets_table(results, config, summary, baseline, query, layer)
    lines += _load_table(config, names, summary)
    lines += _per_request_table(results, names)
    lines += ["", "![Round trips per second](throughput.svg)", "",
              "![Server CPU time per round trip](cpu_per_round_trip.svg)", "",
              "![Latency, 99th percentile](latency_p99.svg)", ""]
    lines += _syscall_table(results, names)
    lines += _instructions_table(results, names)
    lines += _modes_table(results)
    lines += _memory_table(results, names)
    lines += _event_cost_table(results)
    lines += bench_threads.report_lines(results.threads)
    lines += bench_proxy.report_lines(results.proxy)
    lines += ["## Running it", "",
              "`./kqlab bench` (a few minutes) or `./kqlab bench --quick` (seconds); `./kqlab bench --help` for the "
              "connection counts, rounds and duration. The load generator runs on its own against any server that "
              "prints `listening on HOST:PORT`:", "",
              "```sh",
              "build/release/bin/loadgen --server build/release/bin/solution/01-echo --connections 1000 --duration 5",
              "build/release/bin/loadgen --connect 127.0.0.1:7000 --connections 100 --size 4096 --depth 4 --json -",
              "```", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def median_and_spread(values: list[float]) -> tuple[float, float, float]:
    return (statistics.median(values), min(values), max(values)) if values else (0.0, 0.0, 0.0)


def _summarise(results: Measurements, config: Config, names: list[str]) -> dict:
    """(server, connections) -> {measure: (median, lowest, highest)} over the rounds."""
    summary = {}
    for name in names:
        for connections in config.connections:
            runs = [r for r in results.runs if r["server"] == name and r["connections"] == connections]
            if not runs:
                continue
            pick = {
                "throughput_per_s": lambda r: r["throughput_per_s"],
                "server_cpu_us": lambda r: r.get("server_cpu_us_per_round_trip", 0),
                "server_cpu_share": lambda r: 100 * r.get("server_cpu_s", 0) / max(r["seconds"], 1e-9),
                "loadgen_cpu_share": lambda r: 100 * r["loadgen_cpu_s"] / max(r["seconds"], 1e-9),
                "p50": lambda r: r["latency_us"]["p50"],
                "p99": lambda r: r["latency_us"]["p99"],
                "p999": lambda r: r["latency_us"]["p999"],
            }
            summary[(name, connections)] = {key: median_and_spread([get(r) for r in runs]) for key, get in pick.items()}
            summary[(name, connections)]["errors"] = sum(r["errors"] for r in runs)
            summary[(name, connections)]["mismatches"] = sum(r["mismatches"] for r in runs)
    return summary


def _spread(value: tuple[float, float, float], digits: int = 0) -> str:
    median, low, high = value
    return f"{median:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def _machine(results: Measurements) -> list[str]:
    machine = results.machine
    before, after = machine.get("load_before", (0, 0, 0)), machine.get("load_after", (0, 0, 0))
    lines = [f"Measured {machine.get('date')} on {machine.get('cpu')}, {machine.get('cpus')} CPUs, Linux "
             f"{machine.get('kernel')}. Load average (1 min) {before[0]:.2f} at the start, {after[0]:.2f} at the end."]
    if before[0] > 0.5:  # before: the bench's own two busy processes raise the load average while it runs
        lines += ["", "> **Measured on a loaded, shared machine**: other work was running (see the load average). "
                  "Throughput and latency move with it from run to run; the CPU time per round trip, the system-call "
                  "counts and the memory figures move much less, and the servers were measured interleaved so that "
                  "the load falls on all of them alike."]
    return lines


def _load_table(config: Config, names: list[str], summary: dict) -> list[str]:
    lines = ["## Throughput, CPU and latency", "",
             "| connections | server | round trips/s | server CPU per round trip (us) | server CPU (% of a core) | "
             "load generator CPU (%) | p50 (us) | p99 (us) | p99.9 (us) | errors | mismatches |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for connections in config.connections:
        for name in names:
            s = summary.get((name, connections))
            if not s:
                continue
            lines.append(f"| {connections:,} | `{name}` | {_spread(s['throughput_per_s'])} | "
                         f"{_spread(s['server_cpu_us'], 2)} | {s['server_cpu_share'][0]:.0f} | "
                         f"{s['loadgen_cpu_share'][0]:.0f} | {_spread(s['p50'], 1)} | {_spread(s['p99'], 1)} | "
                         f"{s['p999'][0]:,.1f} | {s['errors']} | {s['mismatches']} |")
    lines += ["", "The load generator is one thread. Where its CPU share is near 100% it is what limits throughput; "
              "the server's CPU time per round trip is then the figure that tells the servers apart. It includes "
              "the kernel's work for the server's reads and writes (on loopback, a write delivers to the peer's "
              "socket in the writer's time) and the wake-ups when the server sleeps between events."]
    return lines


def _per_request_table(results: Measurements, names: list[str]) -> list[str]:
    if not results.per_request_runs:
        return []
    at_once = results.per_request_runs[0]["connections"]
    lines = ["", f"### A new connection per request ({at_once} at a time)", "",
             "| server | requests/s | server CPU per request (us) | p50 (us) | p99 (us) | errors | mismatches |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        runs = [r for r in results.per_request_runs if r["server"] == name]
        if not runs:
            continue
        rate = median_and_spread([r["throughput_per_s"] for r in runs])
        cpu = median_and_spread([r.get("server_cpu_us_per_round_trip", 0) for r in runs])
        p50 = median_and_spread([r["latency_us"]["p50"] for r in runs])
        p99 = median_and_spread([r["latency_us"]["p99"] for r in runs])
        lines.append(f"| `{name}` | {_spread(rate)} | {_spread(cpu, 2)} | {_spread(p50, 1)} | {_spread(p99, 1)} | "
                     f"{sum(r['errors'] for r in runs)} | {sum(r['mismatches'] for r in runs)} |")
    lines += ["", "Each request: connect, send one message, read it back, close. The latency runs from the connect() "
              "to the last byte back. The server's cost per request includes accepting and registering the "
              "connection and closing it: for a kqueue server on the layer, the knote's creation (the descriptor's "
              "kind is learnt once, with `fstat` and `getsockopt`) and the close hook."]
    return lines


def _syscall_table(results: Measurements, names: list[str]) -> list[str]:
    lines = ["", "## System calls per round trip", ""]
    if not results.syscalls:
        return lines + [results.syscall_note or "Not measured.", ""]
    columns = sorted({call for counted in results.syscalls.values() for per_trip in counted.values()
                      for call in per_trip})
    lines += ["| server | connections | total | " + " | ".join(f"`{c}`" for c in columns) + " |",
              "|---|---:|---:|" + "---:|" * len(columns)]
    for name in names:
        for connections, per_trip in sorted(results.syscalls.get(name, {}).items()):
            cells = " | ".join(f"{per_trip.get(c, 0):.2f}" for c in columns)
            lines.append(f"| `{name}` | {connections:,} | {sum(per_trip.values()):.2f} | {cells} |")
    lines += ["", "Counted with `strace -c -f` attached to the server, in two counted runs (M and 2M round trips); "
              "the difference divided by the difference in round trips leaves out start-up and connection set-up. "
              "Under strace the server is slowed down, so it finds fewer events per wait than at full speed: the "
              "`epoll_wait`/`epoll_pwait2` figure is an upper bound; the others are per event and do not depend on "
              "batching. On the layer, `ioctl` is `FIONREAD`, the query for `data` of "
              "`EVFILT_READ`.", ""]
    return lines


def _instructions_table(results: Measurements, names: list[str]) -> list[str]:
    lines = ["## Instructions per round trip, in user space", ""]
    if not results.instructions:
        return lines + [results.instructions_note or "Not measured.", ""]
    counts = sorted({connections for counted in results.instructions.values() for connections in counted})
    lines += ["| server | " + " | ".join(f"{n:,} conn" for n in counts) + " |", "|---|" + "---:|" * len(counts)]
    for name in names:
        counted = results.instructions.get(name, {})
        lines.append(f"| `{name}` | " + " | ".join(f"{counted.get(n, 0):,.0f}" for n in counts) + " |")
    lines += ["", "Instructions the server executed in user space (its own code, the layer, libc) per round trip: "
              "callgrind's `Ir`, in two counted runs whose difference leaves out start-up and set-up, as above. The "
              "kernel's share (the system calls) is not in it. Under callgrind the server runs some fifty times "
              "slower, so it finds more events per wait than at full speed, which lowers its per-wait costs; the "
              "per-event costs (the layer's dispatch and `data` query) are not affected.", ""]
    return lines


def _modes_table(results: Measurements) -> list[str]:
    if not results.modes:
        return []
    lines = ["## A delivery in each of the layer's modes", "",
             "| mode | compat/README.md says | system calls per event | CPU per event |", "|---|---|---|---:|"]
    for mode, entry in results.modes.items():
        claim = entry["claim"]
        if "error" in entry:
            lines.append(f"| `{mode}` | {claim} | **failed**: {entry['error']} | |")
            continue
        calls = entry.get("syscalls")
        shown = ", ".join(f"`{name}` {value:.2f}" for name, value in calls.items()) if calls else "not counted"
        lines.append(f"| `{mode}` | {claim} | {shown} | {entry.get('cpu_ns_per_event', 0):,.0f} ns |")
    lines += ["", "bench/mode_costs.cpp: one loopback TCP connection watched with `EVFILT_READ` in each mode, a "
              "delivery checked each time (the event, and `data`); system calls counted with `strace -c` over N and "
              "2N deliveries (the difference leaves out set-up), CPU time of the thread per delivery (each "
              "`kevent()` call with a 1 s timeout). `clear` includes the peer's `write()` that makes each edge, its "
              "delivery over loopback, and the `read()` that empties the socket again. Where the event comes from the pending list (the last three), "
              "`epoll_wait` is a look at epoll with no timeout for other ready events, once per `kevent()` call, "
              "without letting go of the queue's lock.", ""]
    return lines


def _event_cost_table(results: Measurements) -> list[str]:
    cost = results.event_cost
    if not cost:
        return []
    lines = ["## What one event costs, in a tight loop", "",
             "| events per call | raw `epoll_wait` | + `FIONREAD` per event | `kevent()` through the layer | the query "
             "| the layer's own code |", "|---:|---:|---:|---:|---:|---:|"]
    for key, c in sorted(cost.items(), key=lambda item: int(item[0])):
        lines.append(f"| {key} | {c['epoll']:.0f} ns | {c['epoll_fionread']:.0f} ns | {c['kevent']:.0f} ns | "
                     f"{c['epoll_fionread'] - c['epoll']:.0f} ns | {c['kevent'] - c['epoll_fionread']:.0f} ns |")
    lines += ["", "CPU time of the thread per delivered event (bench/event_cost.cpp: the best of 15 rounds, the three "
              "taking turns): loopback "
              "TCP connections with a byte waiting on each, registered level-triggered, asked again and again. With "
              "no wake-ups and nothing else running in between, these figures hardly move with the machine's load, "
              "unlike the servers' CPU times above; they split the layer's cost into the one query per event that "
              "BSD's `data` needs and the layer's own code (locking, dispatch, copy-out).", ""]
    return lines


def _memory_table(results: Measurements, names: list[str]) -> list[str]:
    lines = ["## Memory per idle connection", "", "| server | idle connections | resident memory per connection |",
             "|---|---:|---:|"]
    for name in names:
        memory = results.idle_memory.get(name)
        if memory:
            lines.append(f"| `{name}` | {memory['connections']:,} | {memory['bytes_per_connection']:,.0f} bytes |")
    lines += ["", "Resident memory (`Rss` in /proc/PID/smaps_rollup) with the connections open and idle (each made "
              "one round trip), less before them: the server's own per-connection state plus, for kqueue servers, "
              "the layer's. The kernel's socket and epoll memory is not in it, and is the same for both."]
    if results.layer_memory:
        memory = results.layer_memory
        lines += ["", f"The layer alone (bench/layer_memory.cpp: heap in use, `mallinfo2`, around registering "
                  f"{memory['descriptors']:,} descriptors in one kqueue): **{memory['bytes_read_only']:.0f} bytes** "
                  f"per descriptor with `EVFILT_READ`, {memory['bytes_read_write']:.0f} bytes with `EVFILT_READ` and "
                  f"`EVFILT_WRITE`."]
    return lines + [""]
