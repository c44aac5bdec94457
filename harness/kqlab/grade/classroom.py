"""A GitHub Classroom template made of this project: `./kqlab grade --export classroom DIR`.

GitHub Classroom grades a student's repository (their copy of kqlab, with their workspace/ committed) on each
push, with GitHub Actions: one step per test, each a command whose exit status gives its points, and a reporter
step that adds them up. Here a test is a lesson: `./kqlab check N` builds the student's copy of lesson N and runs
its tests, and exits 0 only when all of them pass; a lesson is worth POINTS.

DIR gets
    .github/classroom/autograding.json   the test list, in GitHub Classroom's format (name, setup, run, input,
                                         output, comparison, timeout in minutes, points)
    .github/workflows/classroom.yml      the workflow that runs that list with classroom-resources'
                                         autograding-command-grader, one step per lesson, and reports the points
    .gitignore                           the project's, less /workspace/: the student's work must be committed
to copy into the assignment's template repository (a copy of kqlab). Both files are written from one list,
tests(), which the project's own tests also run, command by command.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import course
from ..course import Lesson

POINTS = 10
TIMEOUT_MINUTES = 10
SETUP = ("sudo apt-get update && sudo apt-get install -y --no-install-recommends python3-pytest cmake make g++ "
         "doctest-dev")


def tests(lessons: list[Lesson]) -> list[dict]:
    """The autograding test list: one test per lesson."""
    return [{"name": f"{lesson.name}", "setup": SETUP if index == 0 else "", "run": f"./kqlab check {lesson.number}",
             "input": "", "output": "", "comparison": "included", "timeout": TIMEOUT_MINUTES, "points": POINTS}
            for index, lesson in enumerate(lessons)]


def workflow(listed: list[dict]) -> str:
    lines = ["# GitHub Classroom's autograding, written by ./kqlab grade --export classroom: each lesson is one test,",
             "# ./kqlab check N, worth its points when all of the lesson's tests pass.",
             "name: Autograding Tests", "'on':", "- push", "- repository_dispatch", "permissions:",
             "  checks: write", "  actions: read", "  contents: read", "jobs:", "  run-autograding-tests:",
             "    runs-on: ubuntu-latest", "    if: github.actor != 'github-classroom[bot]'", "    steps:",
             "    - name: Checkout code", "      uses: actions/checkout@v4"]
    ids = []
    for test in listed:
        step = "lesson-" + test["name"]
        ids.append(step)
        lines += [f"    - name: {test['name']}", f"      id: {step}",
                  "      uses: classroom-resources/autograding-command-grader@v1", "      with:",
                  f"        test-name: {test['name']}", f"        setup-command: {json.dumps(test['setup'])}",
                  f"        command: {json.dumps(test['run'])}", f"        timeout: {test['timeout']}",
                  f"        max-score: {test['points']}"]
    lines += ["    - name: Autograding Reporter", "      uses: classroom-resources/autograding-grading-reporter@v1",
              "      env:"]
    lines += [f"        {step.upper()}_RESULTS: \"${{{{steps.{step}.outputs.result}}}}\"" for step in ids]
    lines += ["      with:", f"        runners: {','.join(ids)}"]
    return "\n".join(lines) + "\n"


def export(folder: Path, lessons: list[Lesson]) -> list[Path]:
    listed = tests(lessons)
    written = [folder / ".github" / "classroom" / "autograding.json", folder / ".github" / "workflows" /
               "classroom.yml", folder / ".gitignore"]
    for path in written:
        path.parent.mkdir(parents=True, exist_ok=True)
    written[0].write_text(json.dumps({"tests": listed}, indent=2) + "\n")
    written[1].write_text(workflow(listed))
    ignored = (course.ROOT / ".gitignore").read_text().splitlines()
    written[2].write_text("\n".join(line for line in ignored if line.strip() != "/workspace/") + "\n")
    return written
