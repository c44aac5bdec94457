"""A Gradescope autograder made of this project: `./kqlab grade --export gradescope DIR`.

Gradescope's autograder specification (gradescope-autograders.readthedocs.io, "Autograder Specifications"): a zip
with `setup.sh` (run once, as root, when the autograder's Docker image is built) and `run_autograder` (run for each
submission, from /autograder) at its root. The zip's contents land in /autograder/source; the student's files in
/autograder/submission; what is graded is written to /autograder/results/results.json:

    {"score": ..., "execution_time": ..., "output": "...", "stdout_visibility": "hidden",
     "tests": [{"name": ..., "score": ..., "max_score": ..., "output": ..., "visibility": "visible"}, ...]}

DIR gets setup.sh, run_autograder, kqlab/ (the project's sources: build files, lessons, tests, this harness) and
autograder.zip of the three, to upload. run_autograder runs `python3 -m kqlab.grade.gradescope run`, which grades
/autograder/submission exactly as `./kqlab grade` does (same build files, same tests, same sandbox where the
container lets bubblewrap work), and writes one test per lesson test, worth one point. KQLAB_AUTOGRADER_ROOT
moves /autograder elsewhere (the project's own tests run it on a simulated tree).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import time
import zipfile
from pathlib import Path

from .. import course
from ..course import Lesson
from . import command, view
from .grading import StudentResult
from .text import clean

OUTPUT_LIMIT = 8000  # characters of one test's output shown (Gradescope shows it to the student)
PROJECT = (*view.PROJECT_ENTRIES, "kqlab", "README.md")

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image: the tools, then the project's own
# code built for grading (compat/, lessons/common), so that each submission builds only its lessons.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-pytest cmake make g++ bubblewrap util-linux
chmod -R a+rX /autograder/source
cd /autograder/source/kqlab
PYTHONPATH=harness python3 -m kqlab.grade.gradescope prepare --lessons {lessons}
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for each submission: grade /autograder/submission with the project's own tests, in the
# sandbox of ./kqlab grade, into /autograder/results/results.json. KQLAB_AUTOGRADER_ROOT replaces /autograder.
set -uo pipefail
root="${{KQLAB_AUTOGRADER_ROOT:-/autograder}}"
cd "$root/source/kqlab" || exit 1
code='import sys; sys.path.insert(0, "harness"); from kqlab.grade import gradescope
sys.exit(gradescope.main(sys.argv[1:]))'
exec /usr/bin/python3 -I -c "$code" run --root "$root" --lessons {lessons}
"""


def export(folder: Path, lessons: list[Lesson]) -> Path:
    """Writes the autograder into `folder`; returns its zip."""
    chosen = ",".join(lesson.name for lesson in lessons)
    folder.mkdir(parents=True, exist_ok=True)
    project = folder / "kqlab"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir()
    for name in PROJECT:
        source = course.ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "html",
                                                                               "latex"))
        elif source.is_file():
            shutil.copy2(source, project / name)
    for name, text in (("setup.sh", SETUP), ("run_autograder", RUN)):
        (folder / name).write_text(text.format(lessons=chosen))
        (folder / name).chmod(0o755)
    archive = folder / "autograder.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted([folder / "setup.sh", folder / "run_autograder", *project.rglob("*")]):
            if path.is_file():
                # With the file's own time: a tree unzipped beside a build made from an earlier one rebuilds only
                # what changed since.
                info = zipfile.ZipInfo.from_file(path, str(path.relative_to(folder)), strict_timestamps=False)
                info.external_attr = (stat.S_IFREG | (0o755 if os.access(path, os.X_OK) else 0o644)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zipped.writestr(info, path.read_bytes())
    return archive


def results_json(student: StudentResult | None, tests: dict[str, list[str]], isolation: list[str],
                 seconds: float, problem: str = "") -> dict:
    """Gradescope's results.json for one submission: one test per lesson test, a point each."""
    entries = []
    for lesson, names in tests.items():
        result = next((r for r in student.lessons if r.lesson == lesson), None) if student else None
        failures = {failure.test: failure.message for failure in result.failures} if result else {}
        why_not = problem or (student.problem if student else "") or "not graded"
        for name in names:
            passed = result is not None and result.status in ("passed", "failed", "stopped") and name not in failures
            output = "passed" if passed else failures.get(name) or (result.reason if result else why_not)
            entries.append({"name": f"{lesson}: {name}", "score": 1.0 if passed else 0.0, "max_score": 1.0,
                            "output": _shown(output), "visibility": "visible"})
    notes = [f"how this submission was isolated: {line}" for line in isolation]
    if student:
        notes += student.notes
        if student.problem:
            notes.insert(0, f"not graded: {student.problem}")
    if problem:
        notes.insert(0, f"not graded: {problem}")
    return {"score": sum(entry["score"] for entry in entries), "execution_time": round(seconds),
            "output": _shown("\n".join(notes)), "stdout_visibility": "hidden", "tests": entries}


def _shown(text: str) -> str:
    text = clean(text)
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n[... cut ...]"


def run(root: Path, lessons: list[Lesson], test_seconds: float) -> int:
    """Grades root/submission into root/results/results.json; 0 once it is written, whatever the grade."""
    started = time.monotonic()
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    tests = {lesson.name: [] for lesson in lessons}
    student, isolation, problem = None, [], ""
    try:
        from . import grading
        tests = grading.expected_tests(lessons)
        graded, isolation = command.grade([root / "submission"], lessons, course.ROOT / "build" / "grade",
                                          test_seconds, jobs=1)
        student = graded[0]
    except (RuntimeError, ValueError, OSError) as failure:  # the grader's own: the submission is not to blame
        problem = f"the autograder failed: {failure}"
    finally:
        from . import sandbox
        sandbox.stop_all()
    report = results_json(student, tests, isolation, time.monotonic() - started, problem)
    # Written whole, then moved into place: nothing the student ran can see or hold it half written.
    partial = results / "results.json.partial"
    partial.write_text(json.dumps(report, indent=1))
    partial.replace(results / "results.json")
    print(f"kqlab: {report['score']:g} of {len(report['tests'])} points; {results / 'results.json'}")
    return 0 if not problem else 1


def prepare(lessons: list[Lesson]) -> int:
    """At image build: the project's own code built for grading, once (a grade of no submission)."""
    command.grade([], lessons, course.ROOT / "build" / "grade", 60, jobs=1)
    return 0


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kqlab.grade.gradescope")
    parser.add_argument("what", choices=("run", "prepare"))
    parser.add_argument("--root", default=os.environ.get("KQLAB_AUTOGRADER_ROOT", "/autograder"))
    parser.add_argument("--lessons", default=None)
    parser.add_argument("--timeout", type=float, default=300)
    options = parser.parse_args(arguments)
    lessons = command.select_lessons(options.lessons)
    if options.what == "prepare":
        return prepare(lessons)
    return run(Path(options.root), lessons, options.timeout * float(os.environ.get("KQLAB_TIMEOUT_SCALE") or 1))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
