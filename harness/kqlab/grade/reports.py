"""What `./kqlab grade` writes: a table on the terminal, and in the folder the teacher names

    results.csv    one line per student and lesson: passed, total, status, the first failing test and why, and
                   the hints used, when the submission includes its workspace/.progress (grade/hint_use.py)
    gradebook.csv  one line per student: passed/total per lesson, and in all (to paste into a gradebook)
    junit.xml      JUnit XML, one test suite per student, one test case per lesson test
    index.html     a static page: the table, then each student's failures with their full messages
    logs/STUDENT/  each lesson's build and test output (capped), and what was left out of the submission

Everything a submission can influence (its compiler errors, its servers' output inside failure messages, its file
names) is treated as text to show: control characters and bidirectional overrides replaced (text.clean), escaped
in HTML and XML, kept from being read as a formula by spreadsheets, and cut to a length.
"""
from __future__ import annotations

import csv
import re
import shutil
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from . import hint_use
from .grading import LessonResult, StudentResult
from .text import clean

MESSAGE_LIMIT = 16 * 1024  # characters of one failure message kept in junit.xml and index.html


def _cut(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = clean(text)  # also what XML 1.0 cannot hold
    return text if len(text) <= limit else text[:limit] + f"\n[... {len(text) - limit} more characters cut ...]"


def _cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: one starting with = + - @ would be read as a formula."""
    text = _cut(str(value), 1000).replace("\n", " ").replace("\t", " ")
    return "'" + text if text.lstrip()[:1] in ("=", "+", "-", "@") else text


# The terminal ------------------------------------------------------------------------------------------------------

def table(students: list[StudentResult], lessons: list[str], width: int) -> str:
    names = [clean(student.name) for student in students]
    name_width = max([len("student"), *map(len, names)])
    cells = [[lesson.cell for lesson in student.lessons] if not student.problem else ["?"] * len(lessons)
             for student in students]
    widths = [max([len(lesson), *(len(row[i]) for row in cells)]) for i, lesson in enumerate(lessons)]
    header = "  ".join(["student".ljust(name_width), *(l.ljust(w) for l, w in zip(lessons, widths)),
                        "first problem"])
    lines = [header, "-" * min(len(header) + 20, width)]
    used = name_width + sum(w + 2 for w in widths) + 2
    for student, row in zip(students, cells):
        problem = clean(student.first_problem() or "-").replace("\n", " ").replace("\t", " ")
        room = max(width - used, 30)
        problem = problem if len(problem) <= room else problem[:room - 3] + "..."
        lines.append("  ".join([clean(student.name).ljust(name_width), *(c.ljust(w) for c, w in zip(row, widths)),
                                problem]))
    lines.append("")
    lines.append("Cells: tests passed/total; build: does not compile; -: not submitted; N/M!: stopped (time, "
                 "processes, memory or output limit), see first problem.")
    return "\n".join(lines)


# The folder --------------------------------------------------------------------------------------------------------

def write(out: Path, students: list[StudentResult], lessons: list[str], isolation: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    for student in students:
        _write_logs(logs / student.name, student)
    _write_results_csv(out / "results.csv", students)
    _write_gradebook_csv(out / "gradebook.csv", students, lessons)
    _write_junit(out / "junit.xml", students)
    (out / "index.html").write_text(_html(students, lessons, isolation), encoding="utf-8")


def _write_logs(folder: Path, student: StudentResult) -> None:
    folder.mkdir(parents=True)
    summary = [f"submission: {student.origin}"]
    if student.problem:
        summary.append(f"not graded: {student.problem}")
    summary += student.notes
    (folder / "submission.txt").write_text(clean("\n".join(summary) + "\n"), encoding="utf-8")
    for result in student.lessons:
        for kind, log in result.logs.items():
            (folder / f"{result.lesson}-{kind}.log").write_text(clean(log), encoding="utf-8")


def _write_results_csv(path: Path, students: list[StudentResult]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "lesson", "passed", "total", "status", "first failing test", "reason",
                         "hints used"])
        for student in students:
            if student.problem:
                writer.writerow([_cell(student.name), "", 0, 0, "not graded", "", _cell(student.problem), ""])
            for result in student.lessons:
                first = result.failures[0].test if result.failures and result.status != "passed" else ""
                writer.writerow([_cell(student.name), result.lesson, result.passed, result.total, result.status,
                                 _cell(first), _cell(result.reason),
                                 _cell(hint_use.summary(student.progress, result.lesson))])


def _write_gradebook_csv(path: Path, students: list[StudentResult], lessons: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["student", *lessons, "passed", "total"])
        for student in students:
            results = {result.lesson: result for result in student.lessons}
            row = [f"{results[l].passed}/{results[l].total}" if l in results else "" for l in lessons]
            writer.writerow([_cell(student.name), *row, sum(r.passed for r in student.lessons),
                             sum(r.total for r in student.lessons)])


def _write_junit(path: Path, students: list[StudentResult]) -> None:
    suites = ElementTree.Element("testsuites", name="kqlab grade")
    for student in students:
        cases = [(result, failure.test, failure) for result in student.lessons for failure in result.failures]
        failed = {(result.lesson, failure.test) for result, _, failure in cases}
        suite = ElementTree.SubElement(suites, "testsuite", name=student.name, time=f"{student.seconds:.1f}")
        count = failures = 0
        if student.problem:
            case = ElementTree.SubElement(suite, "testcase", classname=student.name, name="submission")
            ElementTree.SubElement(case, "error", message=_cut(student.problem, 500)).text = _cut(student.problem)
            count, failures = 1, 1
        for result in student.lessons:
            failing = {failure.test: failure for failure in result.failures}
            for test in _tests_of(result):
                count += 1
                case = ElementTree.SubElement(suite, "testcase", classname=f"{student.name}.{result.lesson}",
                                              name=test)
                if (result.lesson, test) in failed:
                    failures += 1
                    message = failing[test].message
                    ElementTree.SubElement(case, "failure", message=_cut(message.splitlines()[0] if message else
                                                                         "failed", 500)).text = _cut(message)
        suite.set("tests", str(count))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", "0")
    ElementTree.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _tests_of(result: LessonResult) -> list[str]:
    """The lesson's tests, in the harness's order, then any other test that failed."""
    names = list(result.tests)
    return names + [failure.test for failure in result.failures if failure.test not in names]


# The page ----------------------------------------------------------------------------------------------------------

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _html(students: list[StudentResult], lessons: list[str], isolation: list[str]) -> str:
    """index.html, from templates/grade.html. Jinja2 escapes every value it is given (autoescape), so nothing a
    submission wrote can become markup."""
    import jinja2  # Debian's python3-jinja2, which ./kqlab installs for grade

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                                     lstrip_blocks=True, finalize=_shown)
    return environment.get_template("grade.html").render(
        when=time.strftime("%Y-%m-%d %H:%M"), lessons=lessons, isolation=isolation,
        students=[_student_view(student) for student in students])


def _shown(value):
    """Every value the page shows passes here first (Jinja2's finalize), before it is escaped: a student's text loses
    its control characters (text.clean), so nothing they wrote can reorder or hide what a teacher reads."""
    return clean(value) if isinstance(value, str) else value


def _student_view(student: StudentResult) -> dict:
    """What the page shows of one student."""
    return {
        "name": student.name, "anchor": _anchor(student.name), "origin": student.origin, "problem": student.problem,
        "notes": student.notes, "first_problem": student.first_problem() or "-",
        "lessons": [{
            "lesson": result.lesson, "status": result.status, "cell": result.cell, "passed": result.passed,
            "total": result.total,
            "kind": {"passed": "passed", "failed": "failed", "missing": "missing"}.get(result.status, "bad"),
            "reason": result.reason if result.status != "passed" else "",
            "hints": hint_use.summary(student.progress, result.lesson),
            "failures": [(failure.test, _cut(failure.message)) for failure in result.failures],
            "build": _cut(result.logs["build"]) if result.status == "does not compile" and "build" in result.logs
            else "",
        } for result in student.lessons],
    }


def _anchor(name: str) -> str:
    return "student-" + re.sub(r"[^\w-]", "_", name)
