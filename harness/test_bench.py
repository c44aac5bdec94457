"""The bench's tools work: the load generator checks what comes back, and `./kqlab bench` runs end to end.

Tiny configurations against the programs in --build-dir (the default preset's, with the sanitizers): these check
that the bench runs, never how fast anything is. Every figure comes from `./kqlab bench` itself.
"""
from __future__ import annotations

import json
import platform
import socket
import subprocess
import threading
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from kqlab import bench
from vocabulary import seconds

# ./kqlab test runs the course's checks in parallel (pytest-xdist, --dist loadgroup): this file's tests share
# state (a build tree or a site), so they all run in one worker, one after the other.
pytestmark = [pytest.mark.skipif(platform.system() != "Linux", reason="the bench measures kqlab's Linux layer"),
              pytest.mark.xdist_group("bench")]

TINY = bench.Config(connections=(1, 20), repeats=1, duration=0.2, warmup=0.05, counted_connections=(),
                    idle_connections=50, layer_descriptors=100, event_iterations=500, mode_iterations=200)


@pytest.fixture(scope="module")
def build_dir(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.getoption("--build-dir"))


def loadgen(build_dir: Path, *arguments: str) -> tuple[int, dict, str]:
    program = build_dir / "bin" / "loadgen"
    assert program.exists(), f"{program} was not built"
    done = subprocess.run([str(program), *arguments, "--json", "-"], capture_output=True, text=True,
                          timeout=seconds(60))
    lines = done.stdout.strip().splitlines()
    return done.returncode, json.loads(lines[-1]) if lines else {}, done.stderr


@pytest.mark.parametrize("server", ["solution/01-echo", "bench/epoll_echo"])
def test_every_byte_comes_back(build_dir: Path, server: str) -> None:
    # 1000-byte messages, 3 in flight: the server often reads parts of messages, and several at once.
    status, results, errors = loadgen(build_dir, "--server", str(build_dir / "bin" / server), "--connections", "8",
                                      "--depth", "3", "--size", "1000", "--messages", "50")
    assert status == 0 and results, f"loadgen against {server} failed (status {status}): {results} {errors}"
    assert (results["mismatches"], results["errors"]) == (0, 0), f"against {server}: {results}"
    assert results["round_trips_total"] == 8 * 50, f"against {server}: {results}"


def test_a_connection_per_request(build_dir: Path) -> None:
    status, results, errors = loadgen(build_dir, "--server", str(build_dir / "bin" / "solution" / "01-echo"),
                                      "--connections", "4", "--connect-per-request", "--duration", "0.3",
                                      "--warmup", "0.05")
    assert status == 0 and results["round_trips"] > 0, f"status {status}: {results} {errors}"
    assert results["connects"] >= results["round_trips"], results


class CorruptingEcho:
    """An echo server that changes one byte in every `every` it sends back: what the generator must catch."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    def _echo(self, connection: socket.socket) -> None:
        echoed = 0
        with connection:
            while data := connection.recv(65536):
                changed = bytearray(data)
                for at in range(-echoed % self.every, len(changed), self.every):
                    changed[at] ^= 0x20
                echoed += len(changed)
                connection.sendall(changed)

    def close(self) -> None:
        self.listener.close()


def test_a_wrong_byte_is_a_mismatch(build_dir: Path) -> None:
    server = CorruptingEcho(every=10_000)
    try:
        status, results, errors = loadgen(build_dir, "--connect", f"127.0.0.1:{server.port}", "--connections", "2",
                                          "--size", "100", "--messages", "300")
    finally:
        server.close()
    # 30,000 bytes per connection, one changed in every 10,000: 3 messages of 300 per connection are wrong.
    assert results.get("mismatches") == 6, f"expected 6 mismatched messages, got {results} {errors}"
    assert status == 1, "a run with mismatches must end with status 1"


def test_bench_writes_its_report(build_dir: Path, tmp_path: Path) -> None:
    results = bench.measure(build_dir, TINY, tmp_path, log=lambda *_: None)
    built = {name for name in bench.ECHO_LESSONS if (build_dir / "bin" / "solution" / name).is_file()}
    assert "01-echo" in built
    assert {run["server"] for run in results.runs} == built | {bench.QUERY, bench.BASELINE}
    bad = [run for run in results.runs if run["errors"] or run["mismatches"] or not run["round_trips"]]
    assert not bad, f"runs with errors, mismatches or no round trips: {bad}"
    failed = {mode: entry["error"] for mode, entry in results.modes.items() if "error" in entry}
    assert set(results.modes) == set(bench.MODES) and not failed, f"bench/mode_costs failed: {failed}"
    report = (tmp_path / "report.md").read_text()
    if (build_dir / "bin" / "solution" / "11-threads" / "workers").is_file():
        loads = results.threads.get("loads", {})
        assert set(loads) == {"small", "mixed"} and all(set(servers) == {"workers", "reuseport"} and
                                                        all(figures["requests_per_second"] > 0
                                                            for figures in servers.values())
                                                        for servers in loads.values()), \
            f"lesson 11's servers were not both measured under both loads: {results.threads}"
        assert "Lesson 11: threads on one queue" in report, "report.md has no section on lesson 11"
    if (build_dir / "bin" / "solution" / "12-proxy").is_file():  # its own run is checked in test_bench_proxy.py
        assert all(runs["direct"] and runs["proxy"] for runs in results.proxy.values()) and results.proxy, \
            f"lesson 12's proxy was not measured: {results.proxy}"
        assert "## Lesson 12's proxy against a direct connection" in report, "report.md has no section on lesson 12"
    for heading in ("The layer's cost", "Throughput, CPU and latency", "Memory per idle connection"):
        assert heading in report, f"report.md has no section '{heading}':\n{report}"
    for chart in ("throughput.svg", "cpu_per_round_trip.svg", "latency_p99.svg"):
        assert f"]({chart})" in report, f"report.md does not include {chart}"
        ElementTree.parse(tmp_path / chart)  # well-formed SVG
