"""Hints that lead without handing over (see kqlab/ladders.py for the format).

For every lesson: each gap has a ladder of three rungs, the idea, the tools and the shape; rungs 1 and 2 hold no
line of the gap's answer (the lines the solution has in the gap and the exercise lacks); the lesson's README holds
at most a handful of them; and the README asks its "Predict, then look" questions, answered in hints.md.
"""
from __future__ import annotations

import re

import pytest

from kqlab import course, ladders

LESSONS = course.lessons()
README_ANSWER_LINES = 5  # "a handful": a text may show a call or two as an example, not the gaps' statements


def gap_numbers(lesson: course.Lesson) -> list[int]:
    text = "\n".join(path.read_text(encoding="utf-8") for path in lesson.program_files(lesson.exercise))
    return sorted({int(number) for number in re.findall(r"TODO\((\d+)\)", text)})


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_every_gap_has_three_rungs(lesson: course.Lesson) -> None:
    ladder = ladders.read(lesson)
    problems = list(ladder.problems)
    for number in gap_numbers(lesson):
        if number not in ladder.gaps:
            problems.append(f"TODO({number}) has no '## TODO({number}): title' section")
    problems += [f"TODO({number}) is not a gap of the exercise" for number in ladder.gaps
                 if number not in gap_numbers(lesson)]
    assert not problems, f"{lesson.hints} breaks the hint-ladder format:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_rungs_one_and_two_hold_no_answer(lesson: course.Lesson) -> None:
    ladder = ladders.read(lesson)
    answers = ladders.answer_lines(lesson)
    leaks = []
    for number, gap in sorted(ladder.gaps.items()):
        for rung in (1, 2):
            leaks += [f"TODO({number}) rung {rung}: {line.strip()}"
                      for line in ladders.contained(gap.rung(rung), answers.get(number, []))]
    assert not leaks, (f"{lesson.hints}: rungs 1 and 2 must lead, not hand the answer over; these lines of the "
                       f"solution's answer are in them:\n  " + "\n  ".join(leaks))


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_readme_holds_at_most_a_handful_of_answer_lines(lesson: course.Lesson) -> None:
    everything = [line for lines in ladders.answer_lines(lesson).values() for line in lines]
    found = ladders.contained(lesson.readme.read_text(encoding="utf-8"), everything)
    assert len(found) <= README_ANSWER_LINES, (
        f"{lesson.readme} states {len(found)} lines of the gaps' answers (at most {README_ANSWER_LINES}): a step "
        f"says what must hold and which calls do it, and leaves the statements to the student:\n  " +
        "\n  ".join(line.strip() for line in found))


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_predictions_are_asked_and_answered(lesson: course.Lesson) -> None:
    assert "## Predict, then look" in lesson.readme.read_text(encoding="utf-8"), \
        f"{lesson.readme} has no '## Predict, then look' section"
    assert ladders.read(lesson).predict_answers, \
        f"{lesson.hints} has no '## {ladders.PREDICT_ANSWERS}' section, or it is empty"


# The checks themselves: a check that cannot fail is no check.

SOLUTION = """int f(int fd) {
  // given
  const int n = read(fd, buffer, sizeof buffer);
  if (n == -1) {
    close_client(fd);
    return 0;
  }
  return n;
}
"""
EXERCISE = """int f(int fd) {
  // given
  // TODO(1): read, and close on error.
  return 0;
}
"""
LADDER = """# hints
## TODO(1): read
### Rung 1: the idea
What must hold afterwards.
### Rung 2: the tools
`read()`, and then {leak}.
### Rung 3: the shape
`const int n = read(fd, buffer, sizeof buffer);`
## Predict, then look: answers
Two.
"""


@pytest.fixture
def toy_lesson(tmp_path, monkeypatch: pytest.MonkeyPatch) -> course.Lesson:
    monkeypatch.setattr(course, "LESSONS", tmp_path / "lessons")
    monkeypatch.setattr(course, "SOLUTIONS", tmp_path / "solutions")
    for tree, text in ((tmp_path / "lessons" / "01-toy", EXERCISE), (tmp_path / "solutions" / "01-toy", SOLUTION)):
        tree.mkdir(parents=True)
        (tree / "toy.cpp").write_text(text)
    return course.Lesson("01-toy")


def test_the_answer_is_what_the_solution_adds_at_the_gap(toy_lesson: course.Lesson) -> None:
    answers = ladders.answer_lines(toy_lesson)
    assert [line.strip() for line in answers[1]] == [
        "const int n = read(fd, buffer, sizeof buffer);", "if (n == -1) {", "close_client(fd);", "return n;"], answers
    # Braces, the bare return and the comment are trivial; `return 0;` is the exercise's own line.


def test_a_leaking_rung_is_found_and_a_clean_one_is_not(toy_lesson: course.Lesson) -> None:
    answers = ladders.answer_lines(toy_lesson)[1]
    leaky = ladders.parse(LADDER.format(leak="`close_client( fd );`"))
    clean = ladders.parse(LADDER.format(leak="close the client"))
    assert not leaky.problems and not clean.problems
    assert ladders.contained(leaky.gaps[1].rung(2), answers) == [answers[2]]
    assert ladders.contained(clean.gaps[1].rung(2), answers) == []
    assert ladders.contained(clean.gaps[1].rung(3), answers) == [answers[0]]
    assert clean.predict_answers == "Two."


def test_a_broken_ladder_is_reported() -> None:
    missing = ladders.parse("## TODO(1): x\n### Rung 1: the idea\nidea\n### Rung 3: the shape\nshape\n")
    assert any("rung 2" in problem.lower() for problem in missing.problems), missing.problems
    misnamed = ladders.parse("## TODO(1): x\n### Rung 1: the tools\na\n### Rung 2: the tools\nb\n"
                             "### Rung 3: the shape\nc\n")
    assert any("not 'the idea'" in problem for problem in misnamed.problems), misnamed.problems
    preamble = ladders.parse("## TODO(1): x\nthe answer, first\n### Rung 1: the idea\na\n### Rung 2: the tools\nb\n"
                             "### Rung 3: the shape\nc\n")
    assert any("before" in problem for problem in preamble.problems), preamble.problems


# ./kqlab grade reports the rungs a student used, from the progress file their submission includes.

PROGRESS = ("# Written by ./kqlab\n01-echo done | hints: TODO(1) rung 2, TODO(3) rung 1\n"
            "02-registration failing: 3 of 7 tests pass\n<script>alert(1)</script> | hints: TODO(9) rung 7\n")


def test_grade_reads_the_rungs_a_submission_used(tmp_path) -> None:
    import csv
    import tarfile

    from kqlab.grade import hint_use, reports, submissions
    from kqlab.grade.grading import LessonResult, StudentResult

    used = hint_use.rungs_used(PROGRESS)
    assert used == {"01-echo": {1: 2, 3: 1}, "02-registration": {}}, used  # the <script> line is no lesson
    assert hint_use.summary(PROGRESS, "02-registration") == "none"
    assert hint_use.summary(PROGRESS, "01-echo") == "TODO(1) rung 2, TODO(3) rung 1"
    assert hint_use.summary(None, "01-echo") == "", "no file: not known, not 'none'"

    # The submission reader takes the file with the sources (a folder, or an archive in its confined child).
    folder = tmp_path / "ada" / "workspace"
    (folder / "01-echo").mkdir(parents=True)
    (folder / ".progress").write_text(PROGRESS)
    (folder / "01-echo" / "echo_server.cpp").write_text("// the student's copy\n")
    archive = tmp_path / "bob.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / ".progress", "bob/workspace/.progress")
        tar.add(folder / "01-echo", "bob/workspace/01-echo")
    for origin in (tmp_path / "ada", archive):
        taken = submissions.read_confined(origin, ["01-echo"]).progress
        assert taken is not None and taken.decode() == PROGRESS, (origin, taken)

    student = StudentResult("ada", str(tmp_path / "ada"), progress=PROGRESS, lessons=[LessonResult("01-echo", ["test_one"], 1)])
    reports._write_results_csv(tmp_path / "results.csv", [student])
    rows = list(csv.DictReader(open(tmp_path / "results.csv", encoding="utf-8")))
    assert rows[0]["hints used"] == "TODO(1) rung 2, TODO(3) rung 1", rows
