"""Rule registers: every rule a lesson teaches, with the proof that the course checks it.

Each lesson lists, in harness/NN-topic/rules.py, `RULES = [Rule(...), ...]`: each Pitfalls bullet of its README and
each rule its steps state as a must. A rule names the mutants that break it (harness/NN-topic/mutants.py, each with
the test that must catch it), or says why no portable provocation exists. `./kqlab test` (harness/test_rules.py)
fails when a rule has neither, names a mutant that does not exist, or sends the reader to a section the README does
not have; docs/mistakes.md, the site's "Common mistakes" page, is made from these registers (mistakes_page.py), so
it claims no more than the tests prove.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from . import mutants as mutants_module
from .course import Lesson


@dataclass(frozen=True)
class Rule:
    name: str  # a kebab-case id, unique in its lesson, e.g. "check-every-receipt"
    rule: str  # the rule as the lesson teaches it, one sentence
    section: str  # the README heading (## or ###) that teaches it, as written
    mutants: tuple[str, ...] = ()  # the mutants that break it (harness/NN-topic/mutants.py)
    unprovable: str | None = None  # or: why no portable provocation exists


def of(lesson: Lesson) -> list[Rule] | None:
    """The rules in harness/NN-topic/rules.py; None when the lesson has no register."""
    path = lesson.tests / "rules.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"kqlab_rules_{lesson.number:02d}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.RULES)


def problems(lesson: Lesson) -> list[str]:
    """What is wrong with the lesson's register, one sentence each; [] when every rule is proven or excused."""
    rules = of(lesson)
    where = f"harness/{lesson.name}/rules.py"
    if rules is None:
        return [f"lesson {lesson.name} has no rule register ({where}): list every rule its README teaches, each "
                f"with its mutants or the reason no portable provocation exists"]
    if not rules:
        return [f"{where} lists no rule"]
    found = []
    known = {mutant.name for mutant in mutants_module.of(lesson)}
    sections = set(lesson.sections())
    seen: set[str] = set()
    for rule in rules:
        label = f"{where}, rule {rule.name!r}"
        if not isinstance(rule, Rule):
            found.append(f"{where}: {rule!r} is not a kqlab.rules.Rule")
            continue
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.name):
            found.append(f"{label}: the name must be kebab-case (lower-case words joined by dashes)")
        if rule.name in seen:
            found.append(f"{label}: the name is used twice")
        seen.add(rule.name)
        if not rule.rule.strip():
            found.append(f"{label}: says no rule")
        if rule.section not in sections:
            found.append(f"{label}: the section {rule.section!r} is no heading of {lesson.readme.name}")
        if isinstance(rule.mutants, str):
            found.append(f"{label}: mutants must be a tuple of names, e.g. (\"{rule.mutants}\",)")
            continue
        if bool(rule.mutants) == bool(rule.unprovable and rule.unprovable.strip()):
            found.append(f"{label}: give exactly one of mutants (the mistakes that break it, each caught by a test) "
                         f"and unprovable (why no portable provocation exists)")
        for name in rule.mutants:
            if name not in known:
                found.append(f"{label}: names mutant {name!r}, which harness/{lesson.name}/mutants.py does not "
                             f"list")
    return found


def uncovered_mutants(lesson: Lesson) -> list[str]:
    """The lesson's mutants no rule names: a mistake the tests catch but the register does not say it teaches."""
    rules = of(lesson) or []
    named = {name for rule in rules for name in rule.mutants}
    return [mutant.name for mutant in mutants_module.of(lesson) if mutant.name not in named]
