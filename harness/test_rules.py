"""The course's rule registers (harness/NN-topic/rules.py, see kqlab/rules.py): every rule a lesson teaches is
proven by a mutant its tests catch, or says why no portable provocation exists; and docs/mistakes.md, made from
the registers, is up to date. (That each mutant is caught is test_course.py's test_mutant_is_caught.)"""
from __future__ import annotations

import pytest

from kqlab import course, mistakes_page, rules

LESSONS = course.lessons()


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_every_rule_is_proven_or_excused(lesson: course.Lesson) -> None:
    problems = rules.problems(lesson)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_every_mutant_breaks_a_rule(lesson: course.Lesson) -> None:
    orphans = rules.uncovered_mutants(lesson)
    if orphans:
        pytest.fail(f"harness/{lesson.name}/mutants.py has mutants that no rule in harness/{lesson.name}/rules.py "
                    f"names: {', '.join(orphans)}. Name each under the rule it breaks.", pytrace=False)


def test_mistakes_page_matches_the_registers() -> None:
    committed = mistakes_page.PAGE.read_text(encoding="utf-8") if mistakes_page.PAGE.exists() else ""
    if committed != mistakes_page.render():
        pytest.fail("docs/mistakes.md differs from what the rule registers make. Write it again: "
                    "cd harness && /usr/bin/python3 -m kqlab.mistakes_page", pytrace=False)
