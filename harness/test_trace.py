"""KQLAB_TRACE, as a beginner reads it (Linux only: native kqueue has no trace). A receipt answers a change, and
prints as an answer ("receipt ...: ok"), never as an event that looks like an error; an event for a registration
made with EV_RECEIPT carries that flag, as on FreeBSD (lesson 01 explains it)."""
from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
from pathlib import Path

import pytest

from kqlab import course

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="KQLAB_TRACE is printed by kqlab's Linux "
                                "layer; native kqueue prints no trace")


def test_a_receipt_reads_as_ok(request: pytest.FixtureRequest) -> None:
    program = course.program(Path(request.config.getoption("--build-dir")), "solution", course.lesson(1))
    assert program.exists(), f"{program} was not built"
    server = subprocess.Popen([str(program), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ, KQLAB_TRACE="1"))
    try:
        listening = re.match(r"listening on ([\d.]+):(\d+)", server.stdout.readline())
        assert listening, "the server did not say where it listens"
        with socket.create_connection((listening.group(1), int(listening.group(2))), timeout=5) as client:
            client.sendall(b"ping\n")
            assert client.recv(16) == b"ping\n"
    finally:
        server.terminate()
        _, trace = server.communicate(timeout=10)
    receipts = [line for line in trace.splitlines() if " receipt " in line]
    assert any(re.search(r"receipt +EVFILT_READ fd=\d+: ok \(EV_ERROR, data=0\)$", line) for line in receipts), trace
    events = [line for line in trace.splitlines() if re.match(r"kevent\(kq=\d+\) event ", line)]
    assert events and not any("EV_ERROR" in line for line in events), trace
    assert any("EV_RECEIPT" in line for line in events), "an event keeps the flags its registration was made with"
