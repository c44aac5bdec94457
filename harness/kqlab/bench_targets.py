"""The first table of the bench's report: the targets the kqueue layer is held to, each with what this run
measured and whether it meets it. Issue 6 set them for the layer's first version (CPU within 5% of raw epoll's,
memory per idle connection); issue 15 tightened the CPU to 3% at 1,000 connections and added the layer's own
user-space instructions per round trip."""
from __future__ import annotations

from dataclasses import dataclass

from .bench_setup import Config, Measurements

# Issue 6's targets.
CPU_TARGET = 0.05          # server CPU per round trip at most 5% above raw epoll's
MEMORY_TARGET = 100        # bytes of the layer's own heap per idle connection
# Issue 15's.
TIGHT_CPU_TARGET = 0.03    # ... and at most 3% above at 1,000 connections
TIGHT_CPU_CONNECTIONS = 1000
INSTRUCTION_TARGET = 200   # the layer's own user-space instructions per round trip (callgrind)


def _ratio_text(layer: tuple[float, float, float], base: tuple[float, float, float]) -> tuple[str, float]:
    ratio = layer[0] / base[0] - 1 if base[0] else 0.0
    return f"{ratio:+.1%}", ratio


def _cpu_comparison(summary: dict, config: Config, ours: str, theirs: str) -> tuple[list[str], float]:
    """Per connection count, `ours` against `theirs` in server CPU per round trip; and the worst ratio."""
    parts, worst = [], float("-inf")
    for connections in config.connections:
        mine, base = summary.get((ours, connections)), summary.get((theirs, connections))
        if not mine or not base:
            continue
        text, ratio = _ratio_text(mine["server_cpu_us"], base["server_cpu_us"])
        worst = max(worst, ratio)
        parts.append(f"{connections:,} conn: {mine['server_cpu_us'][0]:.2f} vs {base['server_cpu_us'][0]:.2f} us "
                     f"({text})")
    return parts, worst


def targets_table(results: Measurements, config: Config, summary: dict, baseline: str, query: str,
                  layer: str) -> list[str]:
    lines = [f"## The layer's cost: `{layer}` on kqueue (through compat/) against `{baseline}`, the same server on "
             f"raw epoll", "",
             "| target | measured | met? |", "|---|---|---|"]
    end_to_end, _ = _cpu_comparison(summary, config, layer, baseline)
    query_end_to_end, _ = _cpu_comparison(summary, config, query, baseline)
    own_end_to_end, _ = _cpu_comparison(summary, config, layer, query)
    # The verdict rests on the tight-loop figures (per event: the query, and the layer's own code), set against
    # the raw-epoll server's CPU per round trip at each connection count. What an event costs depends on how many
    # events one call returns (the call's own work is shared by them), so each count is paired with the batch its
    # server was seen to get in the counted runs: events per call = 1 / (waits per round trip). Where none was
    # counted, one event per call, the dearest case. The servers' CPU times are shown beside them, but on a loaded
    # machine they move by more than 5% from run to run.
    cost = results.event_cost
    pairings = _cost_pairings(summary, config, cost, results.syscalls.get(layer, {}), baseline)
    if pairings:
        worst = max(pairings, key=lambda pairing: pairing.share)
        round_trip_ns = worst.reference_us * 1000
        each = "; ".join(f"{p.connections:,} conn: +{p.share:.1%} ({p.batch:.0f} events per call)" for p in pairings)
        lines.append(f"| server CPU per round trip within {CPU_TARGET:.0%} of raw epoll | **+{worst.share:.1%}** at "
                     f"{worst.connections:,} connections: {worst.query_ns + worst.own_ns:.0f} ns per event through "
                     f"the layer (`kevent` less `epoll` in the tight loop, at {worst.batch:.0f} events per call), "
                     f"against `{baseline}`'s {worst.reference_us:.2f} us per round trip. Each count: {each}. The "
                     f"servers' CPU times, medians (noisy): {'; '.join(end_to_end)} | "
                     f"{'yes' if worst.share <= CPU_TARGET else 'no'} |")
        lines.append(f"| of which the one query per event for `data`, had it been a `FIONREAD` each (the next "
                     f"target allows it) | +{worst.query_ns / round_trip_ns:.1%} ({worst.query_ns:.0f} ns per "
                     f"event). Servers: `{query}` against `{baseline}`: {'; '.join(query_end_to_end)}. From 8 "
                     f"readable sockets per batch the layer asks for their counts in one io_uring submission "
                     f"instead (compat/src/readable_queries.hpp), which is why the next line can be negative | |")
        instructions = ""
        if results.instructions.get(layer) and results.instructions.get(query):
            instructions = " User-space instructions per round trip (callgrind): " + "; ".join(
                f"{n:,} conn: +{count - results.instructions[query].get(n, 0):,.0f}"
                for n, count in sorted(results.instructions[layer].items())) + "."
        own_share = worst.own_ns / round_trip_ns
        lines.append(f"| of which the layer's own code, less what batching the queries saves | {own_share:+.1%} "
                     f"({worst.own_ns:.0f} ns per event).{instructions} "
                     f"Servers: `{layer}` against `{query}`: {'; '.join(own_end_to_end)} | "
                     f"{'within' if own_share <= CPU_TARGET else 'beyond'} {CPU_TARGET:.0%} |")
    else:
        _, worst = _cpu_comparison(summary, config, layer, baseline)
        lines.append(f"| server CPU per round trip within {CPU_TARGET:.0%} of raw epoll | servers' CPU times, medians: "
                     f"{'; '.join(end_to_end)} | {'yes' if worst <= CPU_TARGET else 'no'} |")
    counted = results.syscalls.get(layer, {})
    if counted:
        parts, met = [], True
        for connections, per_trip in sorted(counted.items()):
            ctl = per_trip.get("epoll_ctl", 0.0)
            queries = sum(per_trip.get(name, 0.0) for name in ("ioctl", "getsockopt", "poll"))
            batches = per_trip.get("io_uring_enter", 0.0)  # each asks for a whole batch's counts at once
            met = met and ctl < 0.01 and queries + batches <= 1.01
            batched = f" + {batches:.2f} io_uring submissions (each a batch's counts)" if batches else ""
            parts.append(f"{connections:,} conn: {queries:.2f} queries (ioctl, getsockopt, poll){batched} and "
                         f"{ctl:.2f} epoll_ctl per round trip")
        lines.append(f"| steady state: only the one query per delivered event that `data` needs, no `epoll_ctl` per "
                     f"event | {'; '.join(parts)} | {'yes' if met else 'no'} |")
    else:
        lines.append(f"| steady state: one query per delivered event, no `epoll_ctl` per event | not measured: "
                     f"{results.syscall_note} | ? |")
    lines += _issue15_rows(results, summary, pairings, baseline, query, layer)
    if results.layer_memory:
        read_only = results.layer_memory["bytes_read_only"]
        lines.append(f"| under {MEMORY_TARGET} bytes of layer memory per idle connection | {read_only:.0f} bytes "
                     f"(EVFILT_READ only; {results.layer_memory['bytes_read_write']:.0f} with EVFILT_WRITE too) | "
                     f"{'yes' if read_only < MEMORY_TARGET else 'no'} |")
    return lines + [""]


def _per_event_ns(cost: dict, way: str, batch: float) -> float:
    """bench/event_cost's CPU per event for `way` at `batch` events per call. It measured 1 and 64; between them
    the cost is a per-event part plus a per-call part shared by the batch: a + b / batch."""
    one, full = cost["1"][way], cost["64"][way]
    per_call = (one - full) / (1 - 1 / 64)
    batch = min(max(batch, 1.0), 64.0)
    return one - per_call + per_call / batch


@dataclass
class _Pairing:
    """One connection count the raw-epoll server ran at, set against the tight loop's cost per event."""
    connections: int
    batch: float  # events per call, as seen in the counted runs
    query_ns: float  # the query for `data`, had it been a FIONREAD per event
    own_ns: float  # the layer's own code, less what batching the queries saves
    reference_us: float  # the raw-epoll server's CPU per round trip

    @property
    def share(self) -> float:
        """What the layer adds to the round trip, as a fraction of it."""
        return (self.query_ns + self.own_ns) / (self.reference_us * 1000)


def _cost_pairings(summary: dict, config: Config, cost: dict, counted: dict, baseline: str) -> list[_Pairing]:
    """Per connection count the raw-epoll server ran at, in order: the layer's cost per event at the batch size
    that count was seen to get, beside the server's CPU per round trip."""
    if not cost or "1" not in cost or "64" not in cost:
        return []
    pairings = []
    for connections in config.connections:
        base = summary.get((baseline, connections))
        if not base:
            continue
        seen = [n for n in counted if n <= connections]
        batch = 1.0
        if seen:
            waits = sum(counted[max(seen)].get(name, 0.0) for name in ("epoll_pwait2", "epoll_wait"))
            batch = 1 / waits if waits > 0 else 1.0
        pairings.append(_Pairing(
            connections=connections, batch=min(batch, 64.0),
            query_ns=_per_event_ns(cost, "epoll_fionread", batch) - _per_event_ns(cost, "epoll", batch),
            own_ns=_per_event_ns(cost, "kevent", batch) - _per_event_ns(cost, "epoll_fionread", batch),
            reference_us=base["server_cpu_us"][0]))
    return pairings


def _issue15_rows(results: Measurements, summary: dict, pairings: list[_Pairing], baseline: str, query: str,
                  layer: str) -> list[str]:
    """Issue 15's two targets, each read both ways this bench can read it."""
    return _tight_cpu_row(summary, pairings, baseline, layer) + _instructions_row(results, baseline, query, layer)


def _tight_cpu_row(summary: dict, pairings: list[_Pairing], baseline: str, layer: str) -> list[str]:
    """CPU per message within 3% of raw epoll's at 1,000 connections: by the servers' medians, and by the tight
    loop's cost per event set against the raw-epoll server's round trip (steadier, but a model)."""
    mine, base = summary.get((layer, TIGHT_CPU_CONNECTIONS)), summary.get((baseline, TIGHT_CPU_CONNECTIONS))
    if not mine or not base:
        return []
    text, ratio = _ratio_text(mine["server_cpu_us"], base["server_cpu_us"])
    measured = f"servers' medians: {mine['server_cpu_us'][0]:.2f} vs {base['server_cpu_us'][0]:.2f} us (**{text}**)"
    verdict = f"{'yes' if ratio <= TIGHT_CPU_TARGET else 'no'} by the medians"
    paired = [p for p in pairings if p.connections == TIGHT_CPU_CONNECTIONS]
    if paired:
        p = paired[0]
        measured += (f"; in the tight loop, {p.query_ns + p.own_ns:.0f} ns per event ({p.query_ns:.0f} for the "
                     f"query for `data` as a FIONREAD per event, {p.own_ns:+.0f} for the layer's own code, which "
                     f"batches the queries): {p.share:+.1%} of the round trip")
        verdict += (f"; {'yes' if p.share <= TIGHT_CPU_TARGET else 'no'} by the tight loop (the query: "
                    f"compat/README.md, deviation 33)")
    return [f"| server CPU per message within {TIGHT_CPU_TARGET:.0%} of raw epoll at {TIGHT_CPU_CONNECTIONS:,} "
            f"connections | {measured} | {verdict} |"]


def _instructions_row(results: Measurements, baseline: str, query: str, layer: str) -> list[str]:
    """The layer's own user-space instructions per round trip under 200: the kqueue server's count less the
    raw-epoll server's making the same query for `data` (and, shown beside it, less the raw-epoll server's alone,
    which makes no query)."""
    ours, with_query, alone = (results.instructions.get(name, {}) for name in (layer, query, baseline))
    counts = sorted(n for n in ours if n in with_query)
    if not counts:
        return []
    parts, met = [], []
    for n in counts:
        extra = ours[n] - with_query[n]
        if extra < INSTRUCTION_TARGET:
            met.append(f"{n:,}")
        beside = f" ({ours[n] - alone[n]:+,.0f} against `{baseline}`'s {alone[n]:,.0f})" if n in alone else ""
        parts.append(f"{n:,} conn: {ours[n]:,.0f} against {with_query[n]:,.0f}, **{extra:+,.0f}**{beside}")
    verdict = "yes" if len(met) == len(counts) else (f"at {', '.join(met)} connections" if met else "no")
    return [f"| the layer's own user-space instructions per round trip under {INSTRUCTION_TARGET} (callgrind: "
            f"`{layer}` less `{query}`) | {'; '.join(parts)} | {verdict} |"]
