"""An event loop's life, read from its KQLAB_TRACE lines, laid out as a timeline and written as one HTML page.

kqlab's Linux layer prints, when KQLAB_TRACE=1, each kevent() call on stderr:

    kevent(kq=4) call   changes=1 events=64 timeout=none at=918.378593
    kevent(kq=4) change EVFILT_READ fd=3 EV_ADD|EV_RECEIPT
    kevent(kq=4) receipt EVFILT_READ fd=3: ok (EV_ERROR, data=0)    (an older layer: "event ... EV_ERROR")
    kevent(kq=4) event  EVFILT_READ fd=5 data=6 udata=0x1
    kevent(kq=4) returns 0 (timeout)
    kevent(kq=4) fails   EINTR (Interrupted system call)

This reads them (an older trace without `call` lines too: a change after results starts a call), together with what
the clients did and when, into one time-ordered sequence of columns, each a kevent() call or a client's action, and
one lane per descriptor (or timer, signal, process). It marks where the program spun (the same call again and
again, at once) and where it stalled (a long time between a call's return and the next call: a handler blocked).
./kqlab trace (trace.py) records a scripted session; a failing lesson test writes the timeline of its own run.
"""
from __future__ import annotations

import errno
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

LINE = re.compile(r"^kevent\(kq=(?P<kq>-?\d+)\) (?P<kind>call|change|event|receipt|returns|fails)\s+(?P<text>.*)$")
RECEIPT = re.compile(r"^(?P<filter>\S+) (?P<ident>\S+?): .*\(EV_ERROR, data=(?P<data>-?\d+)\)\s*$")
CALL = re.compile(r"changes=(?P<changes>\d+) events=(?P<events>\d+) timeout=(?P<timeout>\S+) at=(?P<at>[\d.]+)")
# A spin: this many identical calls in a row, their events' data unchanged, one every SPIN_PERIOD seconds or
# faster. (A loop that reads a fast sender 64 KiB at a time also repeats a call, but each takes the time of a read.)
SPIN_RUN, SPIN_PERIOD = 20, 0.0003
STALL = 0.2  # seconds between a call's return and the next call, with work waiting: a stall
COLUMNS_SHOWN = 400


@dataclass
class Kevent:
    """One struct kevent as the trace printed it (kqlab::describe), decoded."""

    text: str
    filter: str = ""
    ident: str = ""  # "fd=5", "pid=812", "sig=15(SIGTERM)", "id=1"
    flags: list[str] = field(default_factory=list)
    fflags: str = ""
    data: int = 0
    udata: str = ""

    @classmethod
    def parse_receipt(cls, text: str) -> Kevent:
        """A `receipt` line's text: "EVFILT_READ fd=5: ok (EV_ERROR, data=0)", or the errno in place of ok."""
        found = RECEIPT.match(text.strip())
        if not found:
            return cls.parse(text)
        return cls(text.strip(), found.group("filter"), found.group("ident"), ["EV_ERROR"],
                   data=int(found.group("data")))

    @classmethod
    def parse(cls, text: str) -> Kevent:
        event = cls(text.strip())
        receipt_ok = "receipt: ok" in text
        words = re.sub(r"\(?receipt: ok\)?", "", text).split()
        if words:
            event.filter = words.pop(0)
        if words and "=" in words[0] and not words[0].startswith(("data=", "fflags=", "udata=")):
            event.ident = words.pop(0)
        for word in words:
            key, _, value = word.partition("=")
            if key == "data":
                event.data = int(value) if re.fullmatch(r"-?\d+", value) else 0
            elif key == "fflags":
                event.fflags = value
            elif key == "udata":
                event.udata = value
            elif re.fullmatch(r"[A-Z_|0-9x]+", word):
                event.flags += [flag for flag in word.split("|") if flag != "0"]
        if receipt_ok and "EV_ERROR" not in event.flags:
            event.flags.append("EV_ERROR")
        return event

    @property
    def lane(self) -> str:
        """Which lane it belongs to: a descriptor, or a timer's, signal's, process's or user event's ident."""
        if self.ident.startswith("fd="):
            return self.ident
        kind = {"EVFILT_TIMER": "timer", "EVFILT_SIGNAL": "signal", "EVFILT_PROC": "process",
                "EVFILT_USER": "user event"}.get(self.filter, self.filter.lower())
        return f"{kind} {self.ident.split('=', 1)[-1]}"

    @property
    def short_filter(self) -> str:
        return self.filter.removeprefix("EVFILT_")

    def receipt(self) -> str | None:
        """For an EV_ERROR entry: "ok" for a successful receipt, else the error's name (ENOENT...)."""
        if "EV_ERROR" not in self.flags:
            return None
        return "ok" if self.data == 0 else errno.errorcode.get(self.data, str(self.data))

    def summary(self, incoming: bool) -> str:
        """A few words for a cell of the timeline: what was asked (incoming), or what came back."""
        flags = [flag for flag in self.flags if flag != "EV_ERROR"]
        if incoming:
            return f"{self.short_filter} {'|'.join(flag.removeprefix('EV_') for flag in flags) or '0'}"
        receipt = self.receipt()
        if receipt is not None:
            return f"{self.short_filter} receipt: {receipt}"
        parts = [self.short_filter]
        if "EV_EOF" in flags:
            parts.append("EOF" + (f" fflags={self.fflags}" if self.fflags else ""))
        elif self.fflags:
            parts.append(f"fflags={self.fflags}")
        if self.data:
            parts.append(f"data={self.data}")
        return " ".join(parts)


@dataclass
class Call:
    """One kevent() call: when it began and returned (seconds of the monotonic clock; None when the trace does not
    say), its changes, and what it returned."""

    kq: int
    start: float | None = None
    end: float | None = None
    nchanges: int | None = None
    nevents: int | None = None
    timeout: str = ""
    changes: list[Kevent] = field(default_factory=list)
    events: list[Kevent] = field(default_factory=list)
    outcome: str = ""  # "3 events", "0 (timeout)", "fails EINTR ..."
    repeats: int = 1  # identical calls folded into this one
    steady: bool = True  # and their events' data never changed: nothing was consumed, nothing moved

    def signature(self) -> tuple:
        """What makes two calls the same for a reader: the kinds of changes and events per lane, not the counts."""
        return (self.kq, tuple((k.lane, k.filter, tuple(k.flags)) for k in self.changes),
                tuple((k.lane, k.filter, tuple(k.flags), k.receipt()) for k in self.events), self.outcome[:5])

    @property
    def slept(self) -> float | None:
        """How long it waited: from its start to its last line read. None for a call that cannot have waited (it
        brought changes with EV_RECEIPT and got their receipts back: kevent() returns those at once)."""
        if self.start is None or self.end is None or (self.events and all(k.receipt() for k in self.events)):
            return None
        return max(0.0, self.end - self.start)


def parse(lines: list[tuple[float | None, str]]) -> list[Call]:
    """The calls of a trace. `lines`: (when the line was read, or None; the line), other lines mixed in are
    skipped. A call's end is when its last result line was read."""
    calls: list[Call] = []
    for read_at, line in lines:
        found = LINE.match(line.strip())
        if not found:
            continue
        kq, kind, text = int(found.group("kq")), found.group("kind"), found.group("text")
        current = calls[-1] if calls else None
        if kind == "call":
            numbers = CALL.search(text)
            call = Call(kq)
            if numbers:
                call.nchanges, call.nevents = int(numbers.group("changes")), int(numbers.group("events"))
                call.timeout, call.start = numbers.group("timeout"), float(numbers.group("at"))
            calls.append(call)
            continue
        # Without `call` lines (an older layer), a change or an outcome after an outcome begins a new call, and so
        # does anything after "returns" or "fails"; so does a line of another queue.
        ended = current is not None and current.outcome and (not current.events or kind not in ("event", "receipt"))
        if current is None or current.kq != kq or (current.nevents is None and ended):
            current = Call(kq, start=read_at)
            calls.append(current)
        if kind == "change":
            current.changes.append(Kevent.parse(text))
        elif kind in ("event", "receipt"):
            current.events.append(Kevent.parse(text) if kind == "event" else Kevent.parse_receipt(text))
            current.outcome = f"{len(current.events)} event{'s' if len(current.events) != 1 else ''}"
        elif kind == "returns":
            current.outcome = "0 (timeout)" if current.nevents else "0"
        else:
            current.outcome = "fails " + text.strip()
        if read_at is not None:
            current.end = read_at if current.start is None else max(read_at, current.start)
    return calls


@dataclass
class Action:
    """Something a client (or a test) did, at a time of the monotonic clock, in a lane if it is known which."""

    at: float
    actor: str
    text: str
    lane: str = ""


@dataclass(frozen=True)
class Sample:
    """What the program was doing at a moment: its state (R running, S asleep...) and, asleep, where (wchan)."""

    at: float
    state: str
    wchan: str

    def in_kevent(self) -> bool:
        return "epoll" in self.wchan or self.wchan.startswith("ep_")


@dataclass
class Column:
    """One column of the timeline: a call (possibly folded with identical ones) or an action."""

    at: float
    call: Call | None = None
    action: Action | None = None
    mark: str = ""  # "spin" or "stall"
    note: str = ""  # what the mark says


def columns(calls: list[Call], actions: list[Action], samples: list[Sample] | None = None) -> list[Column]:
    """Calls and actions in time order, runs of identical calls folded into one column, spins and stalls marked."""
    folded: list[Call] = []
    for call in calls:
        previous = folded[-1] if folded else None
        away = (call.start - previous.end) if previous is not None and previous.end is not None and \
            call.start is not None else 0.0
        if previous is not None and previous.signature() == call.signature() and away < STALL:
            previous.steady = previous.steady and [k.data for k in call.events] == [k.data for k in previous.events]
            previous.repeats += 1
            previous.end = call.end if call.end is not None else previous.end
            continue
        folded.append(Call(**{**call.__dict__}))
    timed = [call for call in folded if call.start is not None]
    # Calls the trace gives no time for take the time of the call before them.
    last = min([call.start for call in timed] + [action.at for action in actions], default=0.0)
    result: list[Column] = []
    for call in folded:
        last = call.start if call.start is not None else last
        result.append(Column(last, call=call))
    result += [Column(action.at, action=action) for action in actions]
    result.sort(key=lambda column: (column.at, column.call is None))
    _mark(result, samples or [])
    return result


def _mark(result: list[Column], samples: list[Sample]) -> None:
    calls = [column for column in result if column.call is not None]
    for column in calls:
        call = column.call
        quick = call.end is None or call.start is None or (call.end - call.start) / call.repeats < SPIN_PERIOD
        if call.repeats >= SPIN_RUN and call.events and call.steady and quick:
            span = (call.end - call.start) if call.start is not None and call.end is not None else 0
            column.mark, column.note = "spin", (f"spun: the same {len(call.events)} event(s) {call.repeats} times in "
                                                f"a row" + (f", in {span * 1000:.0f} ms" if span else ""))
    for before, after in zip(calls, calls[1:]):
        if before.call.end is None or after.call.start is None or before.call.kq != after.call.kq:
            continue
        away = after.call.start - before.call.end
        if away >= STALL and before.call.events and not after.mark:
            after.mark, after.note = "stall", _stall_note(away, [sample for sample in samples
                                                                  if before.call.end <= sample.at <= after.call.start])


def _stall_note(away: float, samples: list[Sample]) -> str:
    """What the loop did while it was away from kevent(), from the samples taken meanwhile, if any."""
    blocked = [sample.wchan for sample in samples if sample.state in ("S", "D") and not sample.in_kevent()]
    running = sum(1 for sample in samples if sample.state == "R")
    ms = f"{away * 1000:.0f} ms"
    if blocked:
        where = max(set(blocked), key=blocked.count)
        return f"stalled: {ms} away from kevent(), blocked in the kernel ({where}): a call that should not block did"
    if samples and running >= len(samples) / 2:
        return f"stalled: {ms} away from kevent(), working: one handler kept every other client waiting"
    return f"stalled: {ms} between the last call's return and this one (a handler blocked, or worked)"


def lanes(columns_: list[Column], names: dict[str, str]) -> list[tuple[str, str]]:
    """The lanes, in the order they first appear (the listening socket first when it is known): (key, label)."""
    seen: dict[str, None] = {}
    for column in columns_:
        if column.call is not None:
            for kevent in column.call.changes + column.call.events:
                seen.setdefault(kevent.lane, None)
        elif column.action is not None:
            seen.setdefault(column.action.lane or column.action.actor, None)
    ordered = sorted(seen, key=lambda key: (0 if "listening" in names.get(key, "") else 1, list(seen).index(key)))
    return [(key, f"{key.replace('=', ' ')}" + (f": {names[key]}" if key in names else "")) for key in ordered]


# The page ----------------------------------------------------------------------------------------------------------

COLUMN_WIDTH, ACTION_WIDTH, LABEL_WIDTH, LINE_HEIGHT, HEADER = 156, 132, 190, 13, 56
CHAR_WIDTH = 6.4  # of the SVG's 10.5 px monospace text, to cut what would not fit
MAX_LINES = 6  # per cell; more become "+N more"


@dataclass
class Cell:
    x: float
    y: float
    chars: int  # how many characters fit on a line
    lines: list[tuple[str, str]]  # (text, css class): "in", "out", "error", "action"
    title: str  # the whole of it, for a tooltip


def layout(columns_: list[Column], lane_list: list[tuple[str, str]]) -> dict:
    """Positions of everything the SVG draws, for the template."""
    shown = columns_[:COLUMNS_SHOWN]
    keys = [key for key, _ in lane_list]
    per_lane: dict[str, int] = {key: 1 for key in keys}
    contents: list[dict[str, list[tuple[str, str]]]] = []
    for column in shown:
        cell: dict[str, list[tuple[str, str]]] = {}
        if column.call is not None:
            for kevent in column.call.changes:
                cell.setdefault(kevent.lane, []).append(("→ " + kevent.summary(True), "in"))
            for kevent in column.call.events:
                receipt = kevent.receipt()
                kind = "error" if receipt not in (None, "ok") or "EV_EOF" in kevent.flags else "out"
                cell.setdefault(kevent.lane, []).append(("← " + kevent.summary(False), kind))
        elif column.action is not None:  # a sentence: wrapped to the column
            wrapped = textwrap.wrap(column.action.text, int((ACTION_WIDTH - 8) / CHAR_WIDTH)) or [""]
            cell.setdefault(column.action.lane or column.action.actor, []).extend((line, "action") for line in wrapped)
        for key, lines in cell.items():
            if len(lines) > MAX_LINES:
                lines[MAX_LINES - 1:] = [(f"+{len(lines) - MAX_LINES + 1} more", lines[MAX_LINES - 1][1])]
            per_lane[key] = max(per_lane.get(key, 1), len(lines))
        contents.append(cell)
    lane_y, y = {}, HEADER
    lane_rows = []
    for key, label in lane_list:
        height = per_lane[key] * LINE_HEIGHT + 10
        lane_y[key] = y
        lane_rows.append({"label": label, "y": y, "height": height})
        y += height
    x = LABEL_WIDTH
    drawn_columns, cells = [], []
    start = columns_[0].at if columns_ else 0.0
    number = 0
    several_queues = len({column.call.kq for column in shown if column.call is not None}) > 1
    for column, cell in zip(shown, contents):
        width = ACTION_WIDTH if column.action is not None else COLUMN_WIDTH
        call = column.call
        number += column.call.repeats if column.call is not None else 0
        head = (f"{column.action.actor}" if column.action is not None else
                f"call {number - call.repeats + 1}" + (f"-{number} ×{call.repeats}" if call.repeats > 1 else "")
                + (f" kq {call.kq}" if several_queues else ""))
        sub = (call.outcome or "did not return") if call is not None else ""
        slept = call.slept if call is not None else None
        drawn_columns.append({"x": x, "width": width, "chars": int((width - 8) / CHAR_WIDTH), "head": head, "sub": sub,
                              "time": f"+{(column.at - start) * 1000:.1f} ms",
                              "action": column.action is not None, "mark": column.mark, "note": column.note,
                              "slept": f"waited {slept * 1000:.0f} ms" if slept and slept >= 0.001 else "",
                              "title": _column_title(column)})
        for key, lines in cell.items():
            cells.append(Cell(x + 3, lane_y[key] + 5, int((width - 8) / CHAR_WIDTH), lines,
                              "\n".join(text for text, _ in lines)))
        x += width
    return {"width": x + 10, "height": y + 10, "columns": drawn_columns, "lanes": lane_rows, "cells": cells,
            "line_height": LINE_HEIGHT, "label_width": LABEL_WIDTH, "cut": len(columns_) - len(shown)}


def _column_title(column: Column) -> str:
    if column.action is not None:
        return f"{column.action.actor}: {column.action.text}"
    call = column.call
    lines = [f"kevent(kq={call.kq}): {call.nchanges if call.nchanges is not None else len(call.changes)} changes, "
             f"room for {call.nevents if call.nevents is not None else '?'} events, timeout {call.timeout or '?'}"]
    lines += [f"  change {k.text}" for k in call.changes] + [f"  event  {k.text}" for k in call.events]
    lines.append(f"  returned {call.outcome or '?'}" + (f" (the same call {call.repeats} times)" if call.repeats > 1
                                                          else ""))
    return "\n".join(lines)


def write_page(path: Path, title: str, summary: list[str], columns_: list[Column], names: dict[str, str],
               raw: list[str]) -> Path:
    """Writes the self-contained HTML page (jinja2, HTML escaped by default)."""
    import jinja2  # only here: the rest of kqlab does not need it

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                                     autoescape=True, trim_blocks=True, lstrip_blocks=True)
    lane_list = lanes(columns_, names)
    # Each mark's note, with the id of its column in the drawing (when it is drawn), to jump to it.
    spins = [(column.note, f"column-{index}" if index < COLUMNS_SHOWN else "")
             for index, column in enumerate(columns_) if column.mark == "spin"]
    stalls = [(column.note, f"column-{index}" if index < COLUMNS_SHOWN else "")
              for index, column in enumerate(columns_) if column.mark == "stall"]
    first_action = next((column.at for column in columns_ if column.action is not None), None)
    if first_action is not None and any(column.call for column in columns_) and not any(
            column.call is not None and column.call.outcome and column.at >= first_action for column in columns_):
        stalls.append(("no kevent() call returned once the clients began: nothing it waited for happened (is "
                       "everything the clients use registered?)", ""))
    page = environment.get_template("timeline.html").render(
        title=title, summary=summary, layout=layout(columns_, lane_list), spins=spins, stalls=stalls,
        calls=sum(column.call.repeats for column in columns_ if column.call is not None), raw=raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# A failing lesson test's own run ------------------------------------------------------------------------------------

FAILED_RUNS = Path(__file__).resolve().parents[2] / "build" / "trace" / "failed"
TEST_LINES_DRAWN = 20_000  # the end of a long run: where it failed, and quick to draw


def write_for_test(test: str, readme_section: str, steps: list[tuple[float, str]],
                   servers: list[tuple[str, list[tuple[float, str]]]], where: Path = FAILED_RUNS) -> Path | None:
    """The timeline of a failed test's run: its servers' traces (label, [(read at, line)]) and the test's steps as
    the actions. None when there is nothing to draw (no trace: a native kqueue) or it cannot be written."""
    lines = [(read_at, line) for _, trace in servers for read_at, line in trace]
    if not lines:
        return None
    cut = len(lines) > TEST_LINES_DRAWN
    lines = lines[-TEST_LINES_DRAWN:]
    while cut and lines and not lines[0][1].split(") ", 1)[-1].startswith("call"):  # start at a call's first line
        lines = lines[1:]
    try:
        calls = parse(lines)
        actions = [Action(at, "the test", text) for at, text in steps]
        name = re.sub(r"[^\w.-]+", "_", test).strip("_") or "test"
        return write_page(where / f"{name}.html", f"{test}: the server's event loop, as the test ran it",
                          [f"The run of {test}, which failed: each step of the test is a column, between the "
                           f"server's kevent() calls (KQLAB_TRACE=1)" + (f", its last {len(lines):,} trace lines"
                                                                          if cut else "") + ".",
                           f"The section to reread: {readme_section}.",
                           *(f"Server: {label}" for label, _ in servers)],
                          columns(calls, actions), {}, [line for _, line in lines])
    except Exception:  # the timeline is a help: it must never hide the failure it is about
        return None
