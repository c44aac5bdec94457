"""./kqlab grade: a teacher's command, to check a whole class's submissions in one go.

    ./kqlab grade [--lessons 01-05] [--out DIR] [--jobs N] [--timeout S] SUBMISSION...

Each submission (a folder or an archive, see submissions.py) is built and tested lesson by lesson with the
project's own build files and tests, in a scratch folder of its own, under the limits and isolation of
sandbox.py; up to --jobs at once (one per CPU by default). A submission that does not compile, hangs, crashes,
forks without end or floods its output costs its own row only, with the reason. reports.py says what is written.

The exit status says whether everything ran, not whether the students passed: 0 every submission was graded,
1 some could not be (unreadable, no workspace/, an error of the grader's), 2 the grading could not start.

    ./kqlab grade [--lessons 01-05] --export gradescope|classroom DIR

writes, instead, a Gradescope autograder (gradescope.py) or a GitHub Classroom template (classroom.py) that grade
the same lessons with the same tests, one submission per run, on those platforms.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue

from .. import course
from ..course import Lesson
from . import grading, reports, sandbox, submissions, text
from .grading import Slot, StudentResult

USAGE = ("./kqlab grade [--lessons 01-05] [--out DIR] [--jobs N] [--timeout SECONDS] SUBMISSION...\n"
         "       ./kqlab grade [--lessons 01-05] --export gradescope|classroom DIR")


def select_lessons(text: str | None) -> list[Lesson]:
    """The lessons named by --lessons: numbers, names and ranges, comma-separated ("01-05", "1,3", "02-", "01-echo").
    A range may reach past the last lesson (so "01-05" means what exists of them); a single lesson must exist."""
    every = course.lessons()
    if not text:
        return every
    chosen: list[Lesson] = []
    for part in text.split(","):
        part = part.strip()
        bounds = re.fullmatch(r"(\d+)?-(\d+)?", part)
        if bounds and (bounds.group(1) or bounds.group(2)):
            low, high = int(bounds.group(1) or 0), int(bounds.group(2) or 99)
            chosen += [lesson for lesson in every if low <= lesson.number <= high]
        else:
            chosen.append(course.lesson(part))  # ValueError names the lessons there are
    if not chosen:
        raise ValueError(f"--lessons {text} selects no lesson; the lessons are "
                         f"{', '.join(lesson.name for lesson in every)}")
    return sorted(set(chosen), key=lambda lesson: lesson.number)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="./kqlab grade", usage=USAGE, description=(
        "Build and test each SUBMISSION (a folder holding a student's workspace/, or a clone of kqlab with one, "
        "or a .tar.gz/.zip of it) with the project's own tests, each in its own sandbox; write a table, CSV, "
        "JUnit XML and an HTML report."))
    parser.add_argument("submissions", nargs="*", metavar="SUBMISSION")
    parser.add_argument("--lessons", help="which lessons: 01-05, 1,3, 02-, 01-echo (default: all)")
    parser.add_argument("--out", default="grades", help="the folder to write the reports to (default: grades)")
    parser.add_argument("--jobs", type=int, default=0, help="submissions graded at once (default: one per CPU)")
    parser.add_argument("--timeout", type=float, default=0,
                        help="seconds one lesson's tests may take (default: 300, times KQLAB_TIMEOUT_SCALE)")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="do not use bubblewrap, even where it works (limits and watchdog only)")
    parser.add_argument("--export", nargs=2, metavar=("PLATFORM", "DIR"),
                        help="instead of grading: write a Gradescope autograder (gradescope) or a GitHub Classroom "
                             "template (classroom) for --lessons into DIR; README.md says what each isolates")
    parser.add_argument("--scratch", default=str(course.ROOT / "build" / "grade"),
                        help="where the scratch builds live, kept from one run to the next (default: build/grade)")
    return parser


class Progress:
    """One line, rewritten in place on a terminal (a line per finished submission otherwise)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.doing: dict[str, str] = {}
        self.lock = threading.Lock()
        self.live = sys.stderr.isatty()

    def update(self, student: str, what: str) -> None:
        with self.lock:
            self.doing[student] = what
            self._show()

    def finish(self, student: StudentResult) -> None:
        with self.lock:
            self.done += 1
            self.doing.pop(student.name, None)
            if not self.live:
                cells = " ".join(f"{r.lesson} {r.cell}" for r in student.lessons) or student.problem
                print(text.clean(f"grade: [{self.done}/{self.total}] {student.name}: {cells}"), file=sys.stderr,
                      flush=True)
            self._show()

    def _show(self) -> None:
        if self.live:
            doing = "; ".join(f"{name}: {what}" for name, what in self.doing.items())
            line = text.clean(f"grade: {self.done}/{self.total} done" + (f"; {doing}" if doing else ""))
            width = shutil.get_terminal_size().columns - 1
            print("\r" + line[:width].ljust(width), end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            print(file=sys.stderr)


def main(arguments: list[str]) -> int:
    parser = _parser()
    options = parser.parse_args(arguments)
    lessons = select_lessons(options.lessons)
    if options.export:
        return _export(*options.export, lessons)
    if not options.submissions:
        parser.error("no SUBMISSION to grade")
    origins = [Path(path) for path in options.submissions]
    absent = [str(path) for path in origins if not path.exists()]
    if absent:
        print(f"kqlab grade: no such submission: {', '.join(absent)}", file=sys.stderr)
        return 2
    scale = float(os.environ.get("KQLAB_TIMEOUT_SCALE") or 1)
    test_seconds = options.timeout or 300 * scale
    scratch = Path(options.scratch).absolute()
    try:
        return _grade(options, lessons, origins, scratch, test_seconds)
    except RuntimeError as problem:
        print(f"kqlab grade: {problem}", file=sys.stderr)
        return 2
    finally:
        sandbox.stop_all()


def _export(platform: str, folder: str, lessons: list[Lesson]) -> int:
    from . import classroom, gradescope
    if platform == "gradescope":
        archive = gradescope.export(Path(folder), lessons)
        print(f"kqlab grade: a Gradescope autograder for {', '.join(l.name for l in lessons)} in {folder}/; "
              f"upload {archive} as the assignment's autograder (Ubuntu base image)")
    elif platform == "classroom":
        written = classroom.export(Path(folder), lessons)
        print(f"kqlab grade: a GitHub Classroom template in {folder}/: {', '.join(map(str, written))}; copy them "
              f"into the assignment's template repository (see README.md, For teachers)")
    else:
        print(f"kqlab grade: --export {platform}: the platforms are gradescope and classroom", file=sys.stderr)
        return 2
    return 0


def _grade(options, lessons: list[Lesson], origins: list[Path], scratch: Path, test_seconds: float) -> int:
    started = time.monotonic()
    names = [lesson.name for lesson in lessons]
    results, isolation = grade(origins, lessons, scratch, test_seconds, options.jobs, not options.no_sandbox)
    out = Path(options.out)
    reports.write(out, results, names, isolation)
    # On a terminal, each row fits its width; into a file or a pipe, nothing is cut.
    print(reports.table(results, names, shutil.get_terminal_size().columns if sys.stdout.isatty() else 10_000))
    ungraded = [result.name for result in results if not result.graded]
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(f"\nkqlab grade: {len(results) - len(ungraded)} of {_count(len(results), 'submission')} graded in "
          f"{minutes}m{seconds:02d}s" + (f"; not graded: {', '.join(ungraded)}" if ungraded else "") +
          f". Reports: {out}/index.html, results.csv, gradebook.csv, junit.xml, logs/")
    return 1 if ungraded else 0


def grade(origins: list[Path], lessons: list[Lesson], scratch: Path, test_seconds: float, jobs: int = 0,
          use_bwrap: bool = True) -> tuple[list[StudentResult], list[str]]:
    """Grades the submissions at `origins`: their results, and how they were isolated (lines to show). RuntimeError
    when grading cannot start. Used by the command, and by the Gradescope autograder (gradescope.py)."""
    grading.make_reachable(scratch)
    with tempfile.TemporaryDirectory(prefix="probe-", dir=scratch) as probe:
        grading.make_reachable(Path(probe))
        isolation = sandbox.detect(Path(probe), use_bwrap=use_bwrap)
    print("kqlab grade: how submissions are isolated:", file=sys.stderr)
    for line in isolation.describe():
        print(f"  {'WARNING: ' if line.startswith('NO ') else ''}{line}", file=sys.stderr)

    names = [lesson.name for lesson in lessons]
    tests = grading.expected_tests(lessons)
    students = _read_all(origins, names)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(students)))
    build_jobs = max(1, (os.cpu_count() or 1) // jobs)
    with contextlib.ExitStack() as held:
        prepared = [held.enter_context(slot) for slot in grading.free_slots(scratch, jobs, isolation, build_jobs)]
        print(f"kqlab grade: {_count(len(students), 'submission')}, lessons {', '.join(names)}, {jobs} at a "
              f"time; bringing {_count(len(prepared), 'scratch build')} of the project up to date in {scratch}",
              file=sys.stderr, flush=True)
        outcomes = _in_parallel(Slot.prepare, prepared, jobs)
        for outcome in outcomes:
            if not outcome.ok:
                raise RuntimeError("the project itself does not build for grading: "
                                   f"{outcome.stopped or 'see below'}\n{outcome.output[-4000:]}")
        return _grade_all(students, prepared, lessons, tests, test_seconds), isolation.describe()


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _grade_all(students, prepared: list[Slot], lessons: list[Lesson], tests: dict[str, list[str]],
               test_seconds: float) -> list[StudentResult]:
    """Grades the submissions, as many at once as there are slots, with a progress line."""
    slots: Queue[Slot] = Queue()
    for slot in prepared:
        slots.put(slot)
    progress = Progress(len(students))

    def grade_one(pair: tuple[submissions.Submission, StudentResult]) -> StudentResult:
        submission, result = pair
        if not result.problem:
            slot = slots.get()
            began = time.monotonic()
            try:
                result.lessons = slot.grade(submission, lessons, tests, test_seconds, progress.update)
            except Exception as problem:  # the grader's own failure: this row says so, the others go on
                result.problem = f"the grader failed: {type(problem).__name__}: {problem}"
            finally:
                slots.put(slot)
            result.seconds = time.monotonic() - began
        progress.finish(result)
        return result

    try:
        return _in_parallel(grade_one, students, len(prepared))
    finally:
        progress.close()


def _in_parallel(function, items: list, workers: int) -> list:
    """function(item) for each item, `workers` at a time, in threads; Ctrl-C stops every run at once."""
    pool = ThreadPoolExecutor(workers)
    try:
        return list(pool.map(function, items))
    except KeyboardInterrupt:
        sandbox.stop_all()  # before waiting for the threads, whose runs would otherwise go on to their deadlines
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def _read_all(origins: list[Path], lessons: list[str]) -> list[tuple[submissions.Submission, StudentResult]]:
    pairs, taken = [], set()
    for origin in origins:
        submission = submissions.read_confined(origin, lessons)
        name, number = submission.name, 2
        while name in taken:  # two alice.tar.gz from different folders
            name, number = f"{submission.name}-{number}", number + 1
        taken.add(name)
        submission.name = name
        progress = submission.progress.decode("utf-8", "replace") if submission.progress is not None else None
        pairs.append((submission, StudentResult(name, str(origin), submission.problem, submission.notes,
                                                progress=progress)))
    return pairs
