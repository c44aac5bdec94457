"""The student's commands: the course map (./kqlab), list, check, hint, reset and solution. (watch is in watch.py.)

The student edits only workspace/NN-topic/, a copy of the exercise made the first time they reach the lesson. So
the course's own tests always see untouched exercises, a course update never conflicts with the student's work,
and starting a lesson over is a copy.
"""
from __future__ import annotations

import argparse
import difflib
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import course, ladders, tools, ui
from .commands import Command
from .course import Lesson


def _relative(path: Path) -> str:
    path = path if path.is_absolute() else course.ROOT / path
    return str(path.relative_to(course.ROOT)) if path.is_relative_to(course.ROOT) else str(path)


def _ensure_workspace(lesson: Lesson) -> None:
    if not lesson.workspace.exists():
        lesson.copy_exercise_to(lesson.workspace)
        print(f"Copied the exercise of lesson {lesson.number:02d} to {_relative(lesson.workspace)}/: "
              f"that copy is yours to edit.")


def files_to_edit(lesson: Lesson) -> str:
    return ", ".join(_relative(path) for path in lesson.program_files(lesson.workspace))


def _chosen(key: str | None) -> Lesson:
    if key:
        return course.lesson(key)
    return course.current() or course.lessons()[-1]


def _status_shown(status: str) -> str:
    if status == "done":
        return ui.paint("done", "green")
    if status.startswith("failing"):
        return ui.paint(status, "yellow")
    return ui.paint(status, "dim") if status == "not started" else status


# ./kqlab and ./kqlab list ---------------------------------------------------------------------------------------

def course_map(args: argparse.Namespace | None = None) -> int:
    del args
    lessons = course.lessons()
    here = course.current()
    if here is not None:
        _ensure_workspace(here)
    done = sum(course.status(lesson) == "done" for lesson in lessons)
    print("\n" + ui.paint("kqlab: event-driven network programming with kqueue", "bold") + "\n")
    print("  " + ui.progress_bar(done, len(lessons)) + "\n")
    width = max(len(lesson.title) for lesson in lessons)
    for lesson in lessons:
        where = ui.paint("   <- you are here", "cyan", "bold") if lesson == here else ""
        print(f"  {lesson.number:02d}  {lesson.title:<{width}}  {_status_shown(course.status(lesson))}{where}")
    print()
    if here is None:
        ui.success("Every lesson is done. Well done!")
        print("Compare your code with the reference: ./kqlab solution N. The course's pages: ./kqlab docs.")
        return 0
    print(f"Next: read {_relative(here.readme)} (or ./kqlab docs, in a browser),")
    print(f"      then fill in the TODO(N) gaps in {files_to_edit(here)}.")
    print(f"      ./kqlab watch rechecks it each time you save; ./kqlab check {here.number} once;"
          f" stuck? ./kqlab hint")
    return 0


def list_lessons(args: argparse.Namespace) -> int:
    del args
    lessons = course.lessons()
    width = max(len(lesson.name) for lesson in lessons)
    title_width = max(len(lesson.title) for lesson in lessons)
    for lesson in lessons:
        status = course.status(lesson)
        rungs = course.rungs_used(lesson)
        hints = ui.paint(f"  hints: {course.rungs_text(rungs)}", "dim") if rungs else ""
        print(f"{lesson.name:<{width}}  {_status_shown(status)}{' ' * max(1, 12 - len(status))}"
              f"{lesson.title:<{title_width if rungs else 0}}{hints}")
    return 0


# Building and testing the student's copy (check, and watch) ------------------------------------------------------

@dataclass
class Outcome:
    """How a check went. kind: passed, failed, crashed, no-build, no-toolchain, could-not-run."""

    kind: str
    tally: tools.Tally = field(default_factory=tools.Tally)
    summary: str = ""  # one line
    raw: str = ""  # what to show below the summary or the problem's paragraph
    test: str = ""  # the first test that failed (or the one during which the server crashed)
    crash: str = ""  # what the crash was, e.g. "AddressSanitizer reported a heap-use-after-free"


_FIRST_ERROR = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<what>.*)$", re.M)
_SANITIZER = re.compile(r"ERROR: (?P<tool>\w+Sanitizer): (?P<kind>[\w-]+)|(?P<ub>runtime error): (?P<what>.*)")
_KILLED = re.compile(r"was killed by (SIG\w+)")


def build(lesson: Lesson, *, show_warnings: bool = True) -> Outcome | None:
    """Configures and builds the student's copy of `lesson`. None if it built; otherwise what went wrong, its
    paragraph already printed."""
    if not (tools.build_dir("default") / "CMakeCache.txt").exists():
        print("(The first build also compiles the course's own libraries: a minute or so.)", flush=True)
    with tools.build_lock(tools.build_dir("default")):
        status, output = tools.capture(["cmake", "--preset", "default"])
    if status == 127:
        return _no_toolchain("CMake is not installed, or not on PATH.", output)
    if status:
        if re.search(r"CMAKE_(CXX|C)_COMPILER|CMAKE_MAKE_PROGRAM|Could not find.*compiler", output):
            return _no_toolchain("CMake found no working C++ compiler (or no make) to build with.", output)
        ui.problem("CMake could not set up the build.", "Its messages are below; a stale build tree is a common "
                   "cause: delete build/default and try again.", output, title="Cannot build")
        return Outcome("no-build", summary="CMake could not set up the build", raw=output)
    target = f"{course.WORKSPACE_KIND}_{lesson.name}"
    with tools.build_lock(tools.build_dir("default")):
        status, output = tools.capture(["cmake", "--build", tools.shown(tools.build_dir("default")),
                                        "--parallel", str(tools.jobs()), "--target", target])
    if status:
        first = _FIRST_ERROR.search(output)
        where = (f" The first error is at {_relative(Path(first.group('file')))}:{first.group('line')}: "
                 f"{first.group('what').rstrip('.')}." if first else "")
        mine = str(lesson.workspace) in output
        what = (f"Your copy of lesson {lesson.number:02d} does not compile.{where}" if mine or not first else
                f"The build failed outside your copy of lesson {lesson.number:02d}.{where}")
        advice = ("Fix the first error the compiler reports first: the ones after it often follow from it. The "
                  "compiler's output is below." if mine or not first else
                  "That is not your code: update the course, or report it, with the output below.")
        ui.problem(what, advice, output, title="Build error")
        return Outcome("no-build", summary=f"does not compile{':' + where if where else ''}", raw=output)
    if show_warnings and "warning:" in output:
        print(ui.paint("The compiler has advice for your copy (warnings, not errors):", "yellow"))
        print(output.rstrip())
    return None


def _no_toolchain(what: str, output: str) -> Outcome:
    ui.problem(what, "The lessons need CMake 3.21 or newer, make and a C++20 compiler. Run ./kqlab as root on "
               "Debian or Ubuntu to install them, or: sudo apt-get install cmake make g++ (macOS: xcode-select "
               "--install and brew install cmake).", output, title="No toolchain")
    return Outcome("no-toolchain", summary="no C++ toolchain", raw=output)


def crash_of(tally: tools.Tally) -> tuple[str, str] | None:
    """The first failure in which the server crashed (a sanitizer report, or killed by a signal): (test, what)."""
    for test in tally.failures:
        report = tally.reports.get(test, "")
        found = _SANITIZER.search(report)
        if found and found.group("tool") == "LeakSanitizer":
            return test, "LeakSanitizer found memory that was never freed"
        if found and found.group("tool"):
            return test, f"{found.group('tool')} reported a {found.group('kind')}"
        if found:
            return test, f"UndefinedBehaviorSanitizer reported undefined behaviour ({found.group('what').strip()})"
        killed = _KILLED.search(report)
        if killed and killed.group(1) not in ("SIGTERM", "SIGKILL"):
            return test, f"it was killed by {killed.group(1)}"
    return None


_CRASH_ADVICE = {
    "heap-use-after-free": "memory used after it was freed (often a reference to a client that an earlier "
                           "handler closed)",
    "heap-buffer-overflow": "a read or write past the end of a heap buffer",
    "stack-buffer-overflow": "a read or write past the end of a local array",
    "double-free": "the same memory freed twice",
    "SEGV": "a read or write of an address that is not mapped (often a null or dangling pointer)",
}


def crash_paragraph(lesson: Lesson, test: str, what: str, report: str, *, shown_above: bool = False) -> None:
    """Says what the crash was and where in the student's code, then the report, unless the live test output
    above showed it already (`shown_above`): a sanitizer report is printed once."""
    kind = next((k for k in _CRASH_ADVICE if k in what), "")
    # The first frame of the sanitizer's stack in one of the lesson's files ("#3 0x55d0 in Class::f(int)
    # /path/to/workspace/01-echo/echo_server.cpp:206:5"; macOS may print the file's name alone).
    mine = {path.name for path in lesson.program_files(lesson.exercise)}
    frame = next((found for found in re.finditer(r"#\d+ 0x[0-9a-f]+ in (.+?) (\S+?):(\d+)", report)
                  if Path(found.group(2)).name in mine), None)
    where = (f" The first line of your code in its report: {Path(frame.group(2)).name}:{frame.group(3)}, in "
             f"{frame.group(1)}." if frame else "")
    explained = f": {_CRASH_ADVICE[kind]}" if kind else ""
    where_report = "in that test's failure above" if shown_above else "below"
    ui.problem(f"Your server crashed during {test}: {what}{explained}.{where}",
               f"A crash is a bug in your copy even when other tests pass: the report {where_report} says what "
               f"happened and where (read the stack from the top; for freed memory, 'freed by thread' says where it "
               f"was freed).", "" if shown_above else report, title="Crash")


def run_tests(lesson: Lesson, *, live: bool, first_failure_only: bool = False) -> Outcome:
    """Runs the lesson's tests against the student's built copy."""
    junit = tools.build_dir("default") / "junit" / f"check-{course.WORKSPACE_KIND}-{lesson.name}.xml"
    arguments = [tools.shown(lesson.tests), "--impl", course.WORKSPACE_KIND, "--no-header"]
    arguments += ["-x"] if first_failure_only else []
    if live:
        status, tally = tools.pytest(arguments + ["-v"], junit)
        raw = ""
    else:
        status, raw = tools.capture(tools.pytest_command(arguments + ["-q"], junit))
        tally = tools.read_junit(junit)
    if status not in (0, 1) or tally.total == 0:
        ui.problem(f"The tests could not run (pytest exit status {status}).", "That is a problem with the course "
                   "or this machine rather than your code: pytest's output is " + ("above." if live else "below."),
                   raw, title="Cannot test")
        return Outcome("could-not-run", tally, "the tests could not run", raw)
    if tally.failed == 0:
        return Outcome("passed", tally, f"all {tally.total} tests pass")
    first = tally.failures[0]
    crash = crash_of(tally)
    if crash is not None:
        return Outcome("crashed", tally, f"the server crashed during {crash[0]}: {crash[1]}",
                       tally.reports.get(crash[0], ""), *crash)
    return Outcome("failed", tally, f"{tally.passed} of {tally.total} tests pass; the first to fail: {first}",
                   tally.reports.get(first, ""), first)


def record(lesson: Lesson, outcome: Outcome) -> None:
    if outcome.kind == "passed":
        course.record(lesson, "done")
    elif outcome.kind == "no-build":
        course.record(lesson, "failing: does not compile")
    elif outcome.kind in ("failed", "crashed") and outcome.tally.total:
        course.record(lesson, f"failing: {outcome.tally.passed} of {outcome.tally.total} tests pass")


def check(args: argparse.Namespace) -> int:
    lesson = _chosen(args.lesson)
    _ensure_workspace(lesson)
    tools.banner(f"Building your copy of lesson {lesson.number:02d} ({_relative(lesson.workspace)}), with "
                 f"AddressSanitizer and UndefinedBehaviorSanitizer")
    failed = build(lesson)
    if failed is not None:
        record(lesson, failed)
        return 1
    tools.banner(f"Testing it ({_relative(lesson.tests)})")
    outcome = run_tests(lesson, live=True)
    if outcome.kind == "could-not-run":
        return 1
    record(lesson, outcome)
    print()
    if outcome.kind == "passed":
        following = course.current()
        ui.success(f"Lesson {lesson.number:02d} is done: all {outcome.tally.total} tests pass.")
        print(f"Compare with the reference solution: ./kqlab solution {lesson.number}")
        if following is not None and following != lesson:
            print(f"Next: lesson {following.number:02d}, {following.title}. Run ./kqlab to start it.")
        return 0
    if outcome.kind == "crashed":
        crash_paragraph(lesson, outcome.test, outcome.crash, outcome.raw, shown_above=True)
    ui.note(f"Lesson {lesson.number:02d}: {outcome.tally.passed} of {outcome.tally.total} tests pass. Each "
            f"failure above replays what the test did and names the section of {_relative(lesson.readme)} to "
            f"reread.")
    print(f"Stuck? ./kqlab hint {lesson.number}")
    return 1


# ./kqlab hint -----------------------------------------------------------------------------------------------------
# Each gap has a ladder of three rungs (ladders.py): the idea, the tools, the shape. A student climbs one rung per
# call, so the answer is the last thing they see, not the first.

def open_gaps(lesson: Lesson) -> list[int]:
    """The TODO(N) gaps still in the student's copy (all of them before the copy exists)."""
    tree = lesson.workspace if lesson.workspace.exists() else lesson.exercise
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in lesson.program_files(tree))
    return sorted({int(n) for n in re.findall(r"TODO\((\d+)\)", text)})


def _not_started_yet() -> str | None:
    """With no lesson named, hint is about the lesson the student is on. If that one is not started (the one before
    is done, or none is), say so rather than start it: starting a lesson is ./kqlab's job."""
    here = course.current()
    if here is None:
        return "Every lesson is done. ./kqlab hint N T still shows the hints of lesson N's TODO(T)."
    if here.workspace.exists():
        return None
    before = [lesson for lesson in course.lessons() if lesson.number < here.number]
    if before and course.status(before[-1]) == "done":
        return f"Lesson {before[-1].number:02d} is done; run ./kqlab to start {here.number:02d}."
    return f"Lesson {here.number:02d} is not started yet; run ./kqlab to start it."


def _rungs_to_show(args: argparse.Namespace, used: int) -> list[int] | str:
    """Which rungs of one gap to show: the next one up by default; --rung K or --all choose. A str: the error."""
    last = len(ladders.RUNG_NAMES)
    if getattr(args, "all", False):
        return list(range(1, last + 1))
    rung = getattr(args, "rung", None)
    if rung is not None:
        return [rung] if 1 <= rung <= last else f"--rung takes 1 to {last}, not {rung}."
    return [min(used + 1, last)]


def hint(args: argparse.Namespace) -> int:
    if args.lesson is None and (why := _not_started_yet()):
        print(why)
        return 0
    lesson = _chosen(args.lesson)
    ladder = ladders.read(lesson)
    if args.gap == "predict":
        print(ladder.predict_answers or f"Lesson {lesson.number:02d} has no answers to its predictions.")
        return 0
    if args.gap is not None:
        number = int(args.gap) if args.gap.isdigit() else -1
        if number not in ladder.gaps:
            print(f"Lesson {lesson.number:02d} has no gap TODO({args.gap}); its gaps are {sorted(ladder.gaps)}.")
            return 2
    else:
        gaps = [gap for gap in open_gaps(lesson) if gap in ladder.gaps]
        if not gaps:
            print(f"Your copy of lesson {lesson.number:02d} has no TODO(N) left. For the hints of one gap: "
                  f"./kqlab hint {lesson.number} N, for N in {sorted(ladder.gaps)}.")
            return 0
        number = gaps[0]
    gap = ladder.gaps[number]
    used = course.rungs_used(lesson)
    rungs = _rungs_to_show(args, used.get(number, 0))
    if isinstance(rungs, str):
        print(rungs)
        return 2
    for rung in rungs:
        name = ladders.RUNG_NAMES[rung - 1]
        print(ui.paint(f"Lesson {lesson.number:02d}, TODO({number}): {gap.title}. Rung {rung} of "
                       f"{len(ladders.RUNG_NAMES)}: {name}", "bold"))
        print("\n" + (gap.rung(rung) or "(this rung is missing from hints.md)") + "\n")
    # What is shown is remembered, whoever asked and however: the record is honest or it is worth nothing.
    course.record_rung(lesson, number, max(rungs))
    used = course.rungs_used(lesson)
    top = used[number]
    if top < len(ladders.RUNG_NAMES):
        after = (f"./kqlab hint {lesson.number} {number} shows rung {top + 1}, {ladders.RUNG_NAMES[top]}: try the "
                 f"gap first.")
    else:
        after = "That was the last rung of this gap."
    print(ui.paint(f"({after} Hints used in lesson {lesson.number:02d}: {course.rungs_text(used)}.)", "dim"))
    return 0


# ./kqlab reset ----------------------------------------------------------------------------------------------------

def reset(args: argparse.Namespace) -> int:
    lesson = course.lesson(args.lesson)
    if lesson.workspace.exists():
        ui.note(f"This puts a fresh copy of lesson {lesson.number:02d}'s exercise in {_relative(lesson.workspace)}/ "
                f"and forgets its progress and hints. Your copy is moved to {_relative(course.WORKSPACE / '.old')}/,"
                f" not deleted.")
        if not args.yes and not ui.ask(f"Start lesson {lesson.number:02d} over?", default=False):
            print("Nothing changed.")
            return 1
        kept = course.WORKSPACE / ".old" / f"{lesson.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = 1
        while kept.exists():
            suffix += 1
            kept = kept.with_name(f"{kept.name.split('~')[0]}~{suffix}")
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(lesson.workspace), kept)
        print(f"Moved your copy to {_relative(kept)}/.")
    course.forget(lesson)
    _ensure_workspace(lesson)
    return 0


# ./kqlab solution -------------------------------------------------------------------------------------------------

def _coloured_diff(lines: list[str]) -> str:
    styles = {"+": "green", "-": "red", "@": "cyan"}
    out = []
    for line in lines:
        style = styles.get(line[:1]) if not line.startswith(("+++", "---")) else "bold"
        out.append(ui.paint(line, style) if style else line)
    return "".join(out)


def solution(args: argparse.Namespace) -> int:
    lesson = course.lesson(args.lesson)
    status = course.status(lesson)
    if status != "done":
        print(ui.wrap(f"Lesson {lesson.number:02d} does not pass yet ({status}). Its solution opens once ./kqlab "
                      f"check {lesson.number} passes: finding the way yourself is what the lesson is for. Stuck? "
                      f"./kqlab hint {lesson.number}, and the README's sections that the failing tests name."))
        return 1
    files = lesson.program_files(lesson.solution)
    if args.full or not lesson.workspace.exists():
        for path in files:
            print(ui.paint(f"==> {_relative(path)}", "bold"))
            print(path.read_text(encoding="utf-8"))
        return 0
    diffs = []
    for path in files:
        mine = lesson.workspace / path.name
        old = mine.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True) if mine.exists() else []
        new = path.read_text(encoding="utf-8").splitlines(keepends=True)
        diffs += [line if line.endswith("\n") else line + "\n"
                  for line in difflib.unified_diff(old, new, _relative(mine), _relative(path))]
    if not diffs:
        print(f"Your copy of lesson {lesson.number:02d} is the reference solution, line for line.")
        return 0
    print(f"How your copy differs from the reference solution, {_relative(lesson.solution)}/ (- yours, + the "
          f"reference; ./kqlab solution {lesson.number} --full shows it whole):\n")
    print(_coloured_diff(diffs), end="")
    return 0


# The commands -----------------------------------------------------------------------------------------------------

def _lesson_argument(parser: argparse.ArgumentParser, required: bool) -> None:
    help_text = "the lesson: its number (1, 01) or name (01-echo)"
    if required:
        parser.add_argument("lesson", help=help_text)
    else:
        parser.add_argument("lesson", nargs="?", help=help_text + "; default: the one you are on")


def _hint_arguments(parser: argparse.ArgumentParser) -> None:
    _lesson_argument(parser, required=False)
    parser.add_argument("gap", nargs="?", help="the hint for TODO(GAP) (or 'predict': the answers to the lesson's "
                        "predictions); default: the first gap still open in your copy")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--rung", type=int, metavar="K", help="show rung K (1 the idea, 2 the tools, 3 the shape)")
    shown.add_argument("--all", action="store_true", help="show all three rungs (for teachers)")


def _reset_arguments(parser: argparse.ArgumentParser) -> None:
    _lesson_argument(parser, required=True)
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask first")


def _solution_arguments(parser: argparse.ArgumentParser) -> None:
    _lesson_argument(parser, required=True)
    parser.add_argument("--full", action="store_true", help="print the reference solution whole, not its diff "
                        "against your copy")


MAP = Command("map", "the course map: each lesson, how far you are, and what to do next (also plain ./kqlab)",
              course_map)
LIST = Command("list", "the lessons, one a line, with their status", list_lessons)
CHECK = Command("check", "build your copy of a lesson and run its tests", check,
                lambda parser: _lesson_argument(parser, required=False),
                "Builds your copy of the lesson (workspace/NN-topic/) with AddressSanitizer and "
                "UndefinedBehaviorSanitizer, runs the lesson's tests against it, and remembers the result.")
HINT = Command("hint", "the next rung of a gap's hint ladder: the idea, then the tools, then the shape", hint,
               _hint_arguments,
               "Each gap has three hints, rungs of a ladder: 1 the idea (what the gap must achieve, and the section "
               "of the text that says how), 2 the tools (the calls and flags, and the trap), 3 the shape (near-code: "
               "it may give the answer away). ./kqlab hint shows the next rung for the first TODO(N) still open in "
               "your copy; ./kqlab hint N T the next rung of lesson N's TODO(T). The highest rung shown per gap is "
               "remembered in workspace/.progress (./kqlab list shows it, and a teacher's ./kqlab grade reports it), "
               "also with --rung and --all.")
RESET = Command("reset", "start a lesson over from a fresh copy of its exercise (yours is kept aside)", reset,
                _reset_arguments,
                "Asks first, then moves your copy of the lesson to workspace/.old/ (nothing is deleted), forgets "
                "its progress and hints, and copies the exercise afresh.")
SOLUTION = Command("solution", "once a lesson passes: how your code differs from the reference solution",
                   solution, _solution_arguments)
