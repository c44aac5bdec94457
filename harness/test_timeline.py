"""./kqlab trace and the timelines of failed tests (kqlab/trace.py, kqlab/timeline.py): the trace is read in every form
the layer prints it, spins and stalls are marked where they happen and nowhere else, the scripted session against
lesson 01's solution gives a page with its lanes, its clients' actions and a write interest for the slow reader,
that page renders in a browser without errors, and a failing test's report names a timeline of its own run.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kqlab import browser, course, timeline
from vocabulary import Story

jinja2 = pytest.importorskip("jinja2", reason="the timeline is written with Jinja2: apt-get install python3-jinja2")


def lines(text: str, start: float = 100.0, step: float = 0.001) -> list[tuple[float, str]]:
    """Trace lines, each read `step` seconds after the one before."""
    return [(start + index * step, line.strip()) for index, line in enumerate(text.strip().splitlines())]


def test_receipts_read_in_both_forms_and_errors_decoded() -> None:
    # An older layer printed a receipt as an event with EV_ERROR; this one prints "receipt ...: ok".
    calls = timeline.parse(lines("""
        kevent(kq=4) call   changes=3 events=3 timeout=none at=100.000000
        kevent(kq=4) change EVFILT_READ fd=3 EV_ADD|EV_RECEIPT
        kevent(kq=4) change EVFILT_WRITE fd=5 EV_ADD|EV_RECEIPT
        kevent(kq=4) change EVFILT_READ fd=9 EV_DELETE|EV_RECEIPT
        kevent(kq=4) event  EVFILT_READ fd=3 EV_ERROR
        kevent(kq=4) receipt EVFILT_WRITE fd=5: ok (EV_ERROR, data=0)
        kevent(kq=4) receipt EVFILT_READ fd=9: ENOENT, No such file or directory (EV_ERROR, data=2)
        kevent(kq=4) call   changes=0 events=64 timeout=0.250000s at=100.010000
        kevent(kq=4) returns 0 (timeout)
        kevent(kq=4) call   changes=0 events=64 timeout=none at=100.300000
        kevent(kq=4) fails   EINTR (Interrupted system call)
        """))
    assert len(calls) == 3
    first = calls[0]
    assert [k.lane for k in first.changes] == ["fd=3", "fd=5", "fd=9"]
    assert [k.receipt() for k in first.events] == ["ok", "ok", "ENOENT"]
    assert first.events[1].summary(False) == "WRITE receipt: ok"
    assert calls[1].timeout == "0.250000s" and calls[1].outcome == "0 (timeout)" and calls[1].start == 100.01
    assert calls[2].outcome.startswith("fails EINTR")


def test_a_trace_without_call_lines_is_split_at_each_new_change() -> None:
    calls = timeline.parse(lines("""
        kevent(kq=3) change EVFILT_READ fd=3 EV_ADD
        kevent(kq=3) returns 0 (timeout)
        kevent(kq=3) event  EVFILT_READ fd=3 data=1
        kevent(kq=3) change EVFILT_READ fd=6 EV_ADD|EV_CLEAR udata=0x1
        kevent(kq=3) event  EVFILT_READ fd=6 EV_CLEAR|EV_EOF fflags=0x68 udata=0x1
        listening on 127.0.0.1:4000
        """))
    assert [len(call.changes) for call in calls] == [1, 0, 1]
    eof = calls[2].events[0]
    assert eof.flags == ["EV_CLEAR", "EV_EOF"] and eof.fflags == "0x68" and eof.udata == "0x1"
    assert eof.summary(False) == "READ EOF fflags=0x68"


def spinning(count: int, period: float, data: int = 1) -> str:
    return "\n".join(f"kevent(kq=4) call   changes=0 events=64 timeout=none at={100 + i * period:.6f}\n"
                     f"kevent(kq=4) event  EVFILT_WRITE fd=5 data={data if data else i}" for i in range(count))


def test_a_spin_is_marked_and_a_busy_reader_is_not() -> None:
    spin = timeline.columns(timeline.parse(lines(spinning(40, 0.00005), step=0.000025)), [])
    assert [column.mark for column in spin] == ["spin"] and spin[0].call.repeats == 40
    busy = timeline.columns(timeline.parse(lines(spinning(40, 0.00005, data=0), step=0.000025)), [])
    assert [column.mark for column in busy] == [""], "calls whose data moves are work, not a spin"
    slow = timeline.columns(timeline.parse(lines(spinning(40, 0.002), step=0.001)), [])
    assert [column.mark for column in slow] == [""], "a call every 2 ms is no spin"


def test_a_stall_is_marked_where_the_loop_was_away() -> None:
    trace = lines("""
        kevent(kq=4) call   changes=0 events=64 timeout=none at=100.000000
        kevent(kq=4) event  EVFILT_READ fd=5 data=14
        """) + [(100.9, "kevent(kq=4) call   changes=0 events=64 timeout=none at=100.800000"),
                (101.0, "kevent(kq=4) event  EVFILT_READ fd=5 data=3")]
    columns = timeline.columns(timeline.parse(trace), [timeline.Action(100.5, "client 1", "sends 3 bytes", "fd=5")])
    assert [column.mark for column in columns] == ["", "", "stall"]
    assert columns[1].action is not None and "799 ms" in columns[2].note


def test_the_page_escapes_what_it_shows(tmp_path: Path) -> None:
    trace = lines("kevent(kq=4) call   changes=0 events=1 timeout=none at=100.0\n"
                  "kevent(kq=4) event  EVFILT_READ fd=5 data=1")
    page = timeline.write_page(tmp_path / "page.html", "<script>alert(1)</script>", ["a & b"],
                               timeline.columns(timeline.parse(trace), [timeline.Action(99.0, "client <1>", "x")]),
                               {"fd=5": "client <1>"}, [line for _, line in trace])
    text = page.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "client &lt;1&gt;" in text


# The scripted session, against lesson 01's solution -----------------------------------------------------------------

LINUX = pytest.mark.skipif(platform.system() != "Linux", reason="kqueue prints no trace outside kqlab's Linux layer")


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`./kqlab trace 1 --solution --out DIR`, as a student types it (it builds in build/default)."""
    out = tmp_path_factory.mktemp("trace")
    done = subprocess.run([sys.executable, "-m", "kqlab", "trace", "1", "--solution", "--out", str(out)],
                          cwd=course.ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(course.HARNESS)))
    page = out / "01-echo-solution.html"
    assert done.returncode == 0 and page.exists(), f"./kqlab trace failed:\n{done.stdout}\n{done.stderr}"
    calls = int(re.search(r"The timeline of (\d+) kevent", done.stdout).group(1))
    assert calls > 10, f"only {calls} kevent() calls in the session"
    assert str(page) in done.stdout, "the command does not say where the page is"
    return page


@LINUX
def test_the_session_is_drawn(traced: Path) -> None:
    text = traced.read_text()
    for lane in ("listening socket", "client 1 (port", "client 2 (port", "client 3 (port"):
        assert lane in text, f"no lane for the {lane}"
    for action in ("connects", "half-closes (SHUT_WR)", "resets (SO_LINGER 0)", "reads nothing"):
        assert action in text, f"the client's action '{action}' is not drawn"
    # The slow reader leaves output waiting: the solution asks for EVFILT_WRITE, and the page shows it.
    assert re.search(r"→ WRITE ADD", text), "no write interest drawn for the slow reader"
    assert "spun:" not in text, "the solution is marked as spinning"
    assert "blocked in the kernel" not in text, "the solution is marked as blocking outside kevent()"


@LINUX
@pytest.mark.skipif(browser.executable() is None, reason="no Chromium to render the page: " + browser.INSTALL)
def test_the_page_renders_in_a_browser(traced: Path) -> None:
    with browser.Browser.start() as chromium:
        visit = chromium.visit(traced.as_uri(), 1280)
        assert not visit.problems, visit.problems
        drawn = visit.evaluate("[document.querySelectorAll('svg text').length, "
                               "document.querySelector('svg').getBoundingClientRect().height]")
        assert drawn[0] > 50 and drawn[1] > 100, f"the timeline looks empty: {drawn}"


# A failing test names its own timeline ------------------------------------------------------------------------------

class _TracedServer:
    """What Story.report asks of a server: a report, and its trace with when each line was read."""

    label = "solution of 99-fixture"

    def report(self) -> list[str]:
        return ["The server is still running."]

    def timed_trace(self) -> list[tuple[float, str]]:
        return lines("kevent(kq=4) call   changes=0 events=64 timeout=none at=100.0\n"
                     "kevent(kq=4) event  EVFILT_READ fd=3 data=1")


def test_a_failing_tests_report_names_its_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline, "FAILED_RUNS", tmp_path)
    monkeypatch.setattr(timeline.write_for_test, "__defaults__", (tmp_path,))
    story = Story("test_fixture[case 1]", "lessons/99-fixture/README.md", "A section")
    story.step("connected client 1")
    story.servers.append(_TracedServer())
    report = story.report("an echo", "nothing")
    found = re.search(r"drawn: (\S+\.html)", report)
    assert found, report
    page = Path(found.group(1))
    assert page.parent == tmp_path and page.exists()
    assert "connected client 1" in page.read_text() and "A section" in page.read_text()
    story.servers[0].timed_trace = lambda: []  # a native kqueue: no trace, no drawing, no line about one
    assert "drawn:" not in story.report("an echo", "nothing")
