"""./kqlab watch: rebuild and recheck the current lesson each time one of its files changes.

Changes are noticed by polling the files' modification times and sizes twice a second: the standard library has
no file notifications, and polling a handful of files costs nothing. Keys work too, wherever that polling does
not (a network file system, an editor that keeps files open): Enter or r reruns, h shows a hint, q quits. With
--keys, only the keys rerun.

Each run shows, when something fails, the first failure in full (a build error, a crash, or a test's report)
and one line on how far along the lesson is. When the lesson passes, it asks before moving on to the next one.
"""
from __future__ import annotations

import argparse
import os
import select
import sys
import time

from . import course, student, ui
from .commands import Command
from .course import Lesson

try:
    import termios
    import tty
except ImportError:  # not a POSIX terminal: keys are read a line at a time
    termios = None

INTERVAL = float(os.environ.get("KQLAB_WATCH_INTERVAL") or 0.5)  # seconds between two looks at the files


def snapshot(lesson: Lesson) -> dict[str, tuple[int, int]]:
    """Each file in the lesson's workspace copy: its modification time and size."""
    files = {}
    if lesson.workspace.exists():
        for path in sorted(lesson.workspace.rglob("*")):
            try:
                if path.is_file() and not path.name.startswith("."):
                    stat = path.stat()
                    files[str(path)] = (stat.st_mtime_ns, stat.st_size)
            except OSError:  # removed while we looked (editors replace files)
                continue
    return files


class Keys:
    """Keys from stdin: single keypresses on a terminal, whole lines from a pipe; nothing once stdin is closed."""

    def __init__(self) -> None:
        try:
            self.tty = termios is not None and sys.stdin.isatty()
            self.closed = sys.stdin.closed
        except (AttributeError, OSError, ValueError):  # no usable stdin (a test runner's, say)
            self.tty, self.closed = False, True
        self.saved = None
        self.pending: list[str] = []  # keys read but not used yet (a pipe gives several lines at once)

    def __enter__(self) -> "Keys":
        if self.tty:
            self.saved = termios.tcgetattr(sys.stdin)
            tty.setcbreak(sys.stdin)  # keys arrive one by one; Ctrl-C still interrupts
        return self

    def __exit__(self, *exception) -> None:
        if self.saved is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, self.saved)

    def get(self, timeout: float) -> str | None:
        """The next key ("\\n" for Enter), or None if none came within `timeout` seconds."""
        if self.pending:
            return self.pending.pop(0)
        if self.closed:
            time.sleep(timeout)
            return None
        try:
            ready, _, _ = select.select([sys.stdin], [], [], timeout)
        except (OSError, ValueError):
            self.closed = True
            return None
        if not ready:
            return None
        text = os.read(sys.stdin.fileno(), 1 if self.tty else 4096).decode(errors="replace")
        if not text:
            self.closed = True
            return None
        if self.tty:
            return "\n" if text in ("\r", "\n") else text.lower()
        self.pending = [line.strip().lower()[:1] or "\n" for line in text.splitlines()]
        return self.pending.pop(0) if self.pending else None


def clear_screen() -> None:
    if ui.colour_enabled():
        print("\033[2J\033[H", end="")


def run_once(lesson: Lesson) -> student.Outcome:
    """Builds and tests the student's copy quietly, stopping at the first failing test; shows what matters."""
    clear_screen()
    print(ui.paint(f"==> kqlab watch: lesson {lesson.number:02d}, {lesson.title} "
                   f"({student.files_to_edit(lesson)})", "bold"), flush=True)
    print("Building and testing...", flush=True)
    failed = student.build(lesson, show_warnings=False)
    if failed is not None:
        student.record(lesson, failed)
        return failed
    outcome = student.run_tests(lesson, live=False, first_failure_only=True)
    if outcome.kind == "crashed":
        student.crash_paragraph(lesson, outcome.test, outcome.crash, outcome.raw)
    elif outcome.kind == "failed":
        print()
        print(outcome.raw.rstrip())
    if outcome.kind in ("failed", "crashed"):
        # -x stopped at the first failure: say how far it got, not a count of tests that never ran.
        course.record(lesson, f"failing: {outcome.test} fails")
        passed = outcome.tally.passed
        outcome.summary = (f"{passed} test{'' if passed == 1 else 's'} passed, then {outcome.test} failed"
                           + (" (the server crashed)" if outcome.kind == "crashed" else ""))
    else:
        student.record(lesson, outcome)
    return outcome


def watch(args: argparse.Namespace) -> int:
    lesson = student._chosen(args.lesson)
    student._ensure_workspace(lesson)
    with Keys() as keys:
        while True:
            outcome = run_once(lesson)
            print()
            if outcome.kind == "passed":
                ui.success(f"Lesson {lesson.number:02d} passes: {outcome.summary}.")
                following = course.current()
                if following is None:
                    ui.success("That was the last lesson: every lesson is done. Well done!")
                    print(f"Compare with the reference: ./kqlab solution {lesson.number}")
                    return 0
                print(f"Compare with the reference: ./kqlab solution {lesson.number}")
                if ask_to_move_on(keys, following):
                    lesson = following
                    student._ensure_workspace(lesson)
                    print(f"Now lesson {lesson.number:02d}: read {student._relative(lesson.readme)}, "
                          f"then edit {student.files_to_edit(lesson)}.")
                    continue
            else:
                print(ui.paint(f"Lesson {lesson.number:02d}: {outcome.summary}.", "yellow"))
            if not wait_for_change(lesson, keys, args.keys):
                return 0 if outcome.kind == "passed" else 1


def ask_to_move_on(keys: Keys, following: Lesson) -> bool:
    print(f"Go on to lesson {following.number:02d}, {following.title}? [Y/n] ", end="", flush=True)
    while True:
        key = keys.get(3600)
        if key is None and keys.closed:
            print()
            return False  # nobody to answer: stay
        if key in ("\n", "y"):
            print("yes")
            return True
        if key in ("n", "q"):
            print("no")
            return False


def wait_for_change(lesson: Lesson, keys: Keys, keys_only: bool) -> bool:
    """Waits for a saved file or a key. False when the student quits."""
    how = "press Enter to recheck" if keys_only else "save a file, or press Enter, to recheck"
    print(ui.paint(f"Watching {student._relative(lesson.workspace)}/: {how}; h for a hint, q to quit.", "dim"),
          flush=True)
    if keys.closed and keys_only:
        return False
    before = snapshot(lesson)
    while True:
        key = keys.get(INTERVAL)
        if key == "q":
            return False
        if key in ("\n", "r"):
            return True
        if key == "h":
            student.hint(argparse.Namespace(lesson=lesson.name, gap=None))
            continue
        if keys_only:
            if keys.closed:
                return False
            continue
        now = snapshot(lesson)
        if now != before:
            # Editors save in steps (write a temporary file, rename it): wait until the files stop changing.
            while True:
                time.sleep(INTERVAL / 2)
                settled = snapshot(lesson)
                if settled == now:
                    return True
                now = settled


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lesson", nargs="?", help="the lesson to start with; default: the one you are on")
    parser.add_argument("--keys", action="store_true",
                        help="do not watch the files: rerun only when you press Enter (for file systems where "
                        "saving does not change a file's modification time)")


COMMAND = Command("watch", "recheck the lesson you are on each time you save, and move on when it passes", watch,
                  _arguments, __doc__.split("\n\n", 1)[1].replace("\n", " "))
