"""Hint ladders: how a lesson's hints.md is laid out, read, and checked against the lesson's answer.

Each gap of a lesson has three rungs, each shown only after the one before it:

    ## TODO(2): accept every waiting client
    ### Rung 1: the idea      what the gap must achieve, the question to ask, the README section that answers it
    ### Rung 2: the tools     the calls, flags and fields by name, and the trap; never a whole answer statement
    ### Rung 3: the shape     near-code for what is left (may quote the answer)

and the answers to the README's "Predict, then look" questions sit under `## Predict, then look: answers`.

A student learns what they work out, so rungs 1 and 2 must not hand the answer over. The answer of a gap is what
the solution has there and the exercise lacks (answer_lines()); contained() finds those lines in a text, so that
harness/test_hints.py can refuse a rung 1 or 2, or a README, that gives them away.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from .course import Lesson

RUNG_NAMES = ("the idea", "the tools", "the shape")
PREDICT_ANSWERS = "Predict, then look: answers"

_GAP = re.compile(r"^## TODO\((\d+)\):\s*(.*?)\s*$")
_RUNG = re.compile(r"^### Rung (\d+):\s*(.*?)\s*$")


@dataclass
class Gap:
    number: int
    title: str
    rungs: dict[int, str] = field(default_factory=dict)  # rung number (1 to 3) -> its text, without its heading

    def rung(self, number: int) -> str:
        return self.rungs.get(number, "")


@dataclass
class Ladders:
    gaps: dict[int, Gap] = field(default_factory=dict)
    predict_answers: str = ""
    problems: list[str] = field(default_factory=list)  # where the file breaks the format, one line each


def parse(text: str) -> Ladders:
    """Reads a hints.md. Whatever breaks the format is listed in `problems`, and the rest is still read."""
    ladders = Ladders()
    gap: Gap | None = None
    rung = 0
    in_answers = False
    lines: list[str] = []

    def close() -> None:
        body = "\n".join(lines).strip()
        if gap is not None and rung:
            gap.rungs[rung] = body
        elif gap is not None and body:
            ladders.problems.append(f"TODO({gap.number}): text before its '### Rung 1: the idea'")
        elif in_answers:
            ladders.predict_answers = body
        lines.clear()

    for line in text.splitlines():
        if line.startswith("## "):
            close()
            found = _GAP.match(line)
            gap, rung, in_answers = None, 0, line[3:].strip() == PREDICT_ANSWERS
            if found:
                number = int(found.group(1))
                if number in ladders.gaps:
                    ladders.problems.append(f"TODO({number}) has two sections")
                gap = ladders.gaps.setdefault(number, Gap(number, found.group(2)))
            continue
        found = _RUNG.match(line)
        if found and gap is not None:
            close()
            rung = int(found.group(1))
            expected = len(gap.rungs) + 1
            if rung != expected or rung > len(RUNG_NAMES):
                ladders.problems.append(f"TODO({gap.number}): '### Rung {rung}' where rung {expected} belongs")
            elif found.group(2) != RUNG_NAMES[rung - 1]:
                ladders.problems.append(f"TODO({gap.number}): rung {rung} is named '{found.group(2)}', not "
                                        f"'{RUNG_NAMES[rung - 1]}'")
            continue
        lines.append(line)
    close()
    for gap in ladders.gaps.values():
        for number in range(1, len(RUNG_NAMES) + 1):
            if not gap.rung(number):
                ladders.problems.append(f"TODO({gap.number}) has no rung {number} ({RUNG_NAMES[number - 1]}), or "
                                        f"it is empty")
    return ladders


def read(lesson: Lesson) -> Ladders:
    return parse(lesson.hints.read_text(encoding="utf-8"))


# The answer a gap hides ------------------------------------------------------------------------------------------

# Lines that say nothing on their own: braces, a bare else, break, continue, return.
_TRIVIAL = re.compile(r"[{}();]*|\}?else\{?|(break|continue|return|default:);?|\}while\(.*\)")


def normal(line: str) -> str:
    """A line of code as compared: without its comment, its spaces, and a trailing ; or {."""
    code = re.sub(r"//.*$", "", line)
    code = re.sub(r"\s+", "", code)
    return code.rstrip(";{").rstrip()


def trivial(line: str) -> bool:
    stripped = line.strip()
    if not stripped or stripped.startswith(("//", "/*", "*")):
        return True
    return bool(_TRIVIAL.fullmatch(normal(line))) or len(normal(line)) < 4


def answer_lines(lesson: Lesson) -> dict[int, list[str]]:
    """Each gap's answer: the lines the solution has in the gap that the exercise lacks anywhere, trivial lines
    left out. By gap number, as written in the solution."""
    answers: dict[int, list[str]] = {}
    for exercise_file in lesson.program_files(lesson.exercise):
        relative = exercise_file.relative_to(lesson.exercise)
        solution_file = lesson.solution / relative
        if not solution_file.exists():
            continue
        exercise = exercise_file.read_text(encoding="utf-8").splitlines()
        solution = solution_file.read_text(encoding="utf-8").splitlines()
        given = {normal(line) for line in exercise}
        matcher = difflib.SequenceMatcher(None, solution, exercise, autojunk=False)
        for tag, s1, s2, e1, e2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            numbers = [int(n) for n in re.findall(r"TODO\((\d+)\)", "\n".join(exercise[e1:e2]))]
            for number in numbers:
                answers.setdefault(number, []).extend(
                    line for line in solution[s1:s2] if not trivial(line) and normal(line) not in given)
    return answers


def contained(text: str, answers: list[str]) -> list[str]:
    """The answer lines that appear whole in `text` (spaces, a trailing ; or { and comments not counted)."""
    flat = re.sub(r"\s+", "", text)
    return [line for line in dict.fromkeys(answers) if normal(line) in flat]
