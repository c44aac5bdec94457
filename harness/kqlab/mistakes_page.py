"""docs/mistakes.md, the "Common mistakes" page, made from the lessons' rule registers (rules.py).

For each lesson, each rule it teaches, the section that teaches it, and how the course proves that its tests catch
the mistake: the mutants that break the rule, each with the test that fails against it; or why no portable
provocation exists. The page is committed (GitHub shows it as it is, the site converts it); harness/test_rules.py
fails when it differs from what the registers make, and

    /usr/bin/python3 -m kqlab.mistakes_page      (from harness/)

writes it again.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from . import course, mutants, rules
from .course import Lesson

PAGE = course.ROOT / "docs" / "mistakes.md"

INTRODUCTION = """\
# Common mistakes

<!-- Made from harness/NN-topic/rules.py by harness/kqlab/mistakes_page.py: edit the registers, then run it. -->

The mistakes below are the ones that make event-driven servers lose data, hang, spin at 100% CPU or leak
descriptors. Each lesson lists the rules it teaches in a register, and proves each one: the course builds a
*mutant* of the lesson's solution with the rule broken, and checks that the named test fails against it
(`./kqlab test` does, for every mutant). Where no test can provoke the mistake on every system the course runs on,
the page says why, so it never claims more than the tests prove.
"""

OUTRO = """
If one of your servers fails such a test, the test's report replays what it did and names the section to reread.
"""


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (the same rule as the site's)."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def cell(text: str) -> str:
    """Text for a Markdown table cell: one line, no pipe that would split it."""
    return " ".join(text.split()).replace("|", "\\|")


def lesson_table(lesson: Lesson) -> list[str]:
    register = rules.of(lesson) or []
    by_name = {mutant.name: mutant for mutant in mutants.of(lesson)}
    readme = Path(os.path.relpath(lesson.readme, PAGE.parent)).as_posix()  # ../lessons/NN-topic/README.md
    lines = [f"## Lesson {lesson.number:02d}: {lesson.title}", "",
             "| Rule | Taught in | Proven by |", "|---|---|---|"]
    for rule in register:
        taught = f"[{cell(rule.section)}]({readme}#{slug(rule.section)})"
        if rule.mutants:
            proofs = []
            for name in rule.mutants:
                mutant = by_name.get(name)
                caught = f", caught by `{mutant.caught_by}`" if mutant else ""
                proofs.append(f"mutant `{name}`{caught}")
            proven = "; ".join(proofs)
        else:
            proven = f"not tested: {rule.unprovable}"
        lines.append(f"| {cell(rule.rule)} | {taught} | {cell(proven)} |")
    if not register:
        lines.append("| (this lesson has no rule register yet) | | |")
    return lines + [""]


def render() -> str:
    parts = [INTRODUCTION]
    for lesson in course.lessons():
        parts.append("\n".join(lesson_table(lesson)))
    parts.append(OUTRO)
    return "\n".join(parts)


def write(page: Path = PAGE) -> bool:
    """Writes the page; True if it changed."""
    text = render()
    if page.exists() and page.read_text(encoding="utf-8") == text:
        return False
    page.write_text(text, encoding="utf-8")
    return True


if __name__ == "__main__":
    changed = write()
    print(f"{PAGE.relative_to(course.ROOT)} {'written' if changed else 'already up to date'}")
    sys.exit(0)
