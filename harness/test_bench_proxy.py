"""The bench's lesson-12 part runs: the proxy and a direct connection, every byte checked, and its report section.
A tiny configuration against the programs in --build-dir; the figures come from `./kqlab bench` itself."""
from __future__ import annotations

import platform
from pathlib import Path

import pytest

from kqlab import bench, bench_proxy

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="the bench measures kqlab's Linux layer")

TINY = bench.Config(repeats=1, duration=0.2, warmup=0.05)


def test_proxy_against_direct(request: pytest.FixtureRequest) -> None:
    build = Path(request.config.getoption("--build-dir"))
    if not (build / "bin" / "solution" / bench_proxy.LESSON).is_file():
        pytest.skip(f"lesson {bench_proxy.LESSON}'s solution is not built in {build}")
    results = bench_proxy.measure(build, TINY, bench.Pinning(), log=lambda *_: None)
    assert set(results) == set(bench_proxy.CONNECTIONS), f"not every connection count was measured: {results}"
    for connections, runs in results.items():
        for way in ("direct", "proxy"):
            assert runs[way], f"no {way} run with {connections} connections"
            bad = [run for run in runs[way] if run["errors"] or run["mismatches"] or not run["round_trips"]]
            assert not bad, f"{way} runs with errors, mismatches or no round trips: {bad}"
    section = "\n".join(bench_proxy.report_lines(results))
    assert "## Lesson 12's proxy against a direct connection" in section and "| 10 |" in section, section
