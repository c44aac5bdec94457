"""Mutants: a lesson's solution with one classic mistake put back.

Each lesson lists its mutants in harness/NN-topic/mutants.py, as MUTANTS = [Mutant(...), ...]. `./kqlab test`
writes each one, patched, under build/<preset>/mutants/<name>/NN-topic/ (solutions/CMakeLists.txt builds whatever
it finds there as the target mutant-<name>_NN-topic), runs the test named for the mistake against it, and fails
unless that test fails. A mistake no test catches is a bug in the tests.

A patch is plain text replacement: each `old` must occur exactly once in the solution's file, so a solution that
changed under a mutant stops the suite with a message, instead of silently testing the unchanged solution.
"""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import course, tools
from .course import Lesson


class MutantDoesNotApply(Exception):
    pass


@dataclass(frozen=True)
class Mutant:
    name: str  # a few words with dashes, e.g. "forgets-to-close"
    mistake: str  # the classic mistake it makes, in one sentence
    caught_by: str  # the test that must fail against it; a parametrized test's case is named as pytest does,
    #                 e.g. "test_partial_writes[epoll]"
    file: str  # the solution file it patches, relative to the lesson's directory (e.g. "epoll/poller.cpp")
    replacements: tuple[tuple[str, str], ...]  # (old, new) pairs; each old occurs exactly once
    program: str | None = None  # for a lesson of several programs, the one caught_by runs: only it is built
    linux_only: bool = False  # caught_by needs kqlab's Linux layer (its trace, its fault switch): skipped elsewhere
    # The mistake shows only when the test's processes race (workers woken together for one connection): the test
    # provokes the race but cannot force it, and a machine too busy to run them side by side may never race.
    # harness/test_course.py gives such a mutant more tries, and ./kqlab test runs it after the crowd of the others.
    races: bool = False

    def write(self, lesson: Lesson, build_dir: Path) -> Path:
        """Writes the solution with this mistake into the build tree; returns the lesson directory written.

        Files are rewritten only when their text changes, so the build does not recompile an unchanged mutant.
        """
        tree = build_dir / "mutants" / self.name / lesson.name
        for relative, text in self.files(lesson).items():
            target = tree / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                target.write_text(text, encoding="utf-8")
        return tree

    def is_written(self, lesson: Lesson, build_dir: Path) -> bool:
        """Whether the build tree holds this mutant as write() would write it (False if it no longer applies)."""
        tree = build_dir / "mutants" / self.name / lesson.name
        try:
            return all((tree / relative).is_file() and (tree / relative).read_text(encoding="utf-8") == text
                       for relative, text in self.files(lesson).items())
        except MutantDoesNotApply:
            return False

    def files(self, lesson: Lesson) -> dict[Path, str]:
        """The files of this mutant's lesson directory, by their path in it: the solution's, one of them patched."""
        if not (lesson.solution / self.file).is_file():
            raise MutantDoesNotApply(f"mutant {self.name}: solutions/{lesson.name}/{self.file} does not exist")
        files = {}
        for source in lesson.program_files(lesson.solution):
            relative = source.relative_to(lesson.solution)
            text = source.read_text(encoding="utf-8")
            files[relative] = self.patch(text, lesson) if relative.as_posix() == self.file else text
        return files

    def patch(self, text: str, lesson: Lesson) -> str:
        for old, new in self.replacements:
            count = text.count(old)
            if count != 1:
                raise MutantDoesNotApply(
                    f"mutant {self.name} no longer applies: the text below occurs {count} times in "
                    f"solutions/{lesson.name}/{self.file} (it must occur once). Update harness/{lesson.name}/"
                    f"mutants.py to match the solution.\n{old}")
            text = text.replace(old, new)
        return text


def of(lesson: Lesson) -> list[Mutant]:
    """The mutants listed in harness/NN-topic/mutants.py (none if the file does not exist)."""
    path = lesson.tests / "mutants.py"
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location(f"kqlab_mutants_{lesson.number:02d}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.MUTANTS)


def remove_stale(build_dir: Path, keep: set[str]) -> None:
    """Deletes mutant trees that no lesson lists any more, so CMake stops building them."""
    root = build_dir / "mutants"
    if root.exists():
        for tree in root.iterdir():
            if tree.name not in keep:
                shutil.rmtree(tree)


# The mutants' targets, one a line, for solutions/CMakeLists.txt's target kqlab_mutants (in the build tree).
TARGETS = "mutant-targets.txt"


def target(lesson: Lesson, mutant: Mutant) -> str:
    """The CMake target that builds `mutant` (only the program its test runs, for a lesson of several)."""
    return f"mutant-{mutant.name}_{lesson.name}" + (f"_{mutant.program}" if mutant.program else "")


def _programs(lesson: Lesson, mutant: Mutant) -> list[str | None]:
    """The programs target(lesson, mutant) builds: the one its test runs, or all of the lesson's (None: its one)."""
    return [mutant.program] if mutant.program else (lesson.programs() or [None])


def is_built(build_dir: Path, lesson: Lesson, mutant: Mutant) -> bool:
    """Whether the mutant's programs are there and newer than all they are built from: the mutant's tree (write()
    touches only what changes), the solution's programs, whose objects it links and which the project's build remakes
    whenever a solution file, a header, kqlab's common code or compat changes, and the compile and link commands CMake
    wrote for it (its Makefile generator rewrites them only when they change). Then building it again would change
    nothing, and the CMake run that would find that out is skipped: each such run checks every CMake glob of the
    tree under its build lock, which ./kqlab test's checks of the kqlab command hold for each of their builds
    meanwhile. With another generator this says no, and the mutant is built as before."""
    sources = [path for path in (build_dir / "mutants" / mutant.name / lesson.name).rglob("*") if path.is_file()]
    if not sources:
        return False
    for name in _programs(lesson, mutant):
        built = course.program(build_dir, f"mutant-{mutant.name}", lesson, name)
        program_target = f"mutant-{mutant.name}_{lesson.name}" + (f"_{name}" if name else "")
        commands = build_dir / "solutions" / "CMakeFiles" / f"{program_target}.dir"
        inputs = [*sources, course.program(build_dir, "solution", lesson, name),
                  *(commands / file for file in ("flags.make", "link.txt", "build.make"))]
        if not built.is_file() or not all(path.is_file() for path in inputs):
            return False
        if built.stat().st_mtime_ns < max(path.stat().st_mtime_ns for path in inputs):
            return False
    return True


def build_all(build_dir: Path, *, nice: int = 0) -> tuple[dict[tuple[str, str], str], str]:
    """Writes every lesson's mutants into the build tree, has CMake pick them up, and builds them all in one CMake run
    (one make, every compiler busy, instead of one run per mutant), holding the tree's build lock. Returns, for each
    mutant that no longer applies to its solution, why (by (lesson, mutant) name), and CMake's complaint if it could
    not configure ("" if it could). A mutant that does not compile stops the build; its test then builds it alone and
    says why. nice: the niceness to build with (./kqlab test builds the mutants while the lessons' tests run). When
    every mutant is built already (is_built), CMake is not run at all, nor the lock taken."""
    listed = [(lesson, mutant) for lesson in course.lessons() for mutant in of(lesson)]
    if _all_built(build_dir, listed):  # without the lock, which CMake runs hold for minutes meanwhile
        return {}, ""
    broken = {}
    prefix = ["nice", "-n", str(nice)] if nice else []
    with tools.build_lock(build_dir):
        for lesson, mutant in listed:
            try:
                mutant.write(lesson, build_dir)
            except MutantDoesNotApply as problem:
                broken[(lesson.name, mutant.name)] = str(problem)
        remove_stale(build_dir, {mutant.name for _, mutant in listed})
        # One target that depends on them all: make builds the targets named on its command line one after
        # another (CMake's Makefile has .NOTPARALLEL), each a compile and a link, so with every mutant named there
        # only one compiler would run; the dependencies of one target it builds in parallel.
        targets = _targets(build_dir, [(lesson, mutant) for lesson, mutant in listed
                                       if (lesson.name, mutant.name) not in broken])
        listing, text = build_dir / TARGETS, "".join(f"{name}\n" for name in targets)
        if listing.exists() and listing.read_text(encoding="utf-8") == text:  # unchanged: no reconfiguring
            if all(is_built(build_dir, lesson, mutant) for lesson, mutant in listed
                   if (lesson.name, mutant.name) not in broken and target(lesson, mutant) in targets):
                return broken, ""
        else:
            listing.write_text(text, encoding="utf-8")
        status, output = tools.capture([*prefix, "cmake", "-S", str(course.ROOT), "-B", str(build_dir)])
        if status:
            return broken, output
        tools.capture([*prefix, "cmake", "--build", str(build_dir), "--parallel", str(tools.jobs()),
                       "--target", "kqlab_mutants"])
    return broken, ""


def _targets(build_dir: Path, listed: list[tuple[Lesson, Mutant]]) -> list[str]:
    """The targets of the mutants listed, but those whose program this platform does not build."""
    return [target(lesson, mutant) for lesson, mutant in listed
            if not mutant.program or course.program(build_dir, "solution", lesson, mutant.program).exists()]


def _all_built(build_dir: Path, listed: list[tuple[Lesson, Mutant]]) -> bool:
    """Whether build_all has nothing to do: every mutant applies, is written and built, and CMake knows them all."""
    listing = build_dir / TARGETS
    if not all(mutant.is_written(lesson, build_dir) for lesson, mutant in listed) or not listing.exists():
        return False
    targets = _targets(build_dir, listed)
    if listing.read_text(encoding="utf-8") != "".join(f"{name}\n" for name in targets):
        return False
    return all(is_built(build_dir, lesson, mutant) for lesson, mutant in listed if target(lesson, mutant) in targets)
