"""The course's checks on itself. The lesson tests (harness/NN-topic/) show that every solution passes; these show
that the tests and the exercises are honest:

- every untouched exercise builds, starts, and fails its tests (a gap that changes nothing is not a gap);
- every mutant, a solution with one classic mistake put back, fails the test named for that mistake (a mistake no
  test catches is a bug in the tests);
- each exercise differs from its solution only at numbered TODO(N) gaps, numbered from 1 without holes, and each
  gap has its step in the lesson's README and its hint in hints.md.

They run lesson tests in a pytest of their own (a subprocess), against the programs in --build-dir, which
`./kqlab test` has just built.
"""
from __future__ import annotations

import difflib
import platform
import re
from pathlib import Path

import pytest

from kqlab import course, mutants, tools

LESSONS = course.lessons()
MUTANTS = [(lesson, mutant) for lesson in LESSONS for mutant in mutants.of(lesson)]


@pytest.fixture(scope="session")
def build_dir(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.getoption("--build-dir"))


def lesson_tests(selection: list[str], impl: str, build_dir: Path, junit: Path) -> tuple[int, tools.Tally, str]:
    """Runs lesson tests against one build of a lesson; returns pytest's exit status, the tally and its output."""
    command = tools.pytest_command([*selection, "--impl", impl, "--build-dir", str(build_dir), "-q"], junit)
    status, output = tools.capture(command)
    return status, tools.read_junit(junit), output


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_untouched_exercise_fails(lesson: course.Lesson, build_dir: Path, tmp_path: Path) -> None:
    program = course.program(build_dir, "exercise", lesson)
    assert program.exists(), f"{program} was not built"
    # -x: the first failure is all this needs to know.
    status, tally, output = lesson_tests([str(lesson.tests), "-x"], "exercise", build_dir, tmp_path / "junit.xml")
    if status == 0:
        pytest.fail(f"The untouched exercise of lesson {lesson.name} passes its tests: either a gap changes "
                    f"nothing, or a test cannot fail.\n{output}", pytrace=False)
    if status != 1 or tally.failed == 0:
        pytest.fail(f"pytest could not run lesson {lesson.name}'s tests against its exercise (exit status "
                    f"{status}).\n{output}", pytrace=False)


@pytest.fixture(scope="session")
def mutant_trees(build_dir: Path) -> dict[tuple[str, str], str]:
    """Writes every mutant into the build tree and builds them all in one CMake run (mutants.build_all; ./kqlab test
    has usually built them already, while the lessons' tests ran, and then this finds them done, without running
    CMake). Returns, for each mutant that no longer applies to its solution, why. (With pytest-xdist each worker does
    this; the build lock makes the later ones find it done.)"""
    broken, configure_failure = mutants.build_all(build_dir)
    if configure_failure:
        pytest.fail(f"CMake could not configure the mutants:\n{configure_failure}", pytrace=False)
    return broken


ATTEMPTS = 2  # tries of a mutant's test, for it to fail at least once
ATTEMPTS_WHEN_RACING = 6


def defining_file(lesson: course.Lesson, test: str) -> Path | None:
    """The test file that defines `test` (a function, or a test taken from another lesson: `test_x = rerun(...)`);
    for a parametrized case such as "test_x[epoll]", the file that defines test_x."""
    function = test.partition("[")[0]
    for path in sorted(lesson.tests.glob("test_*.py")):
        if re.search(rf"^(def {re.escape(function)}\(|{re.escape(function)} = )", path.read_text(encoding="utf-8"),
                     re.MULTILINE):
            return path
    return None


@pytest.mark.parametrize("lesson,mutant", [pytest.param(l, m, marks=[pytest.mark.races] if m.races else [])
                                            for l, m in MUTANTS], ids=[f"{l.name}/{m.name}" for l, m in MUTANTS])
def test_mutant_is_caught(lesson: course.Lesson, mutant: mutants.Mutant, mutant_trees: dict, build_dir: Path,
                          tmp_path: Path) -> None:
    if (lesson.name, mutant.name) in mutant_trees:
        pytest.fail(mutant_trees[(lesson.name, mutant.name)], pytrace=False)
    test_file = defining_file(lesson, mutant.caught_by)
    if test_file is None:
        pytest.fail(f"Mutant {mutant.name} names {mutant.caught_by}, but no test file in {lesson.tests} defines "
                    f"it.", pytrace=False)
    if mutant.linux_only and platform.system() != "Linux":
        pytest.skip(f"{mutant.caught_by} needs kqlab's Linux layer (its trace or its fault switch, KQLAB_FAULT), and "
                    f"is skipped on native kqueue: so is this mutant")
    if mutant.program and not course.program(build_dir, "solution", lesson, mutant.program).exists():
        pytest.skip(f"lesson {lesson.name}'s {mutant.program} program is not built here (lessons/lessons.cmake "
                    f"leaves out what the platform cannot build), nor is its mutant")
    impl = f"mutant-{mutant.name}"
    if not mutants.is_built(build_dir, lesson, mutant):  # built already by mutant_trees, unless it failed there
        with tools.build_lock(build_dir):
            status, output = tools.capture(["cmake", "--build", str(build_dir), "--parallel", str(tools.jobs()),
                                            "--target", mutants.target(lesson, mutant)])
        if status:
            pytest.fail(f"Mutant {mutant.name} does not build:\n{output}", pytrace=False)
    # A mistake that shows under a timing the test provokes but cannot force every time (a write that did not
    # block on a lightly loaded kernel) gets a second chance to show, and one that needs a race (mutant.races) up
    # to six: caught once is caught.
    for attempt in range(ATTEMPTS_WHEN_RACING if mutant.races else ATTEMPTS):
        status, tally, output = lesson_tests([f"{test_file}::{mutant.caught_by}"], impl, build_dir,
                                             tmp_path / f"junit-{attempt}.xml")
        if status != 0:
            break
    if status == 0:
        pytest.fail(f"Mutant {mutant.name} survives: {mutant.caught_by} passes against a solution that makes this "
                    f"mistake: {mutant.mistake}\nA mistake no test catches is a bug in the tests.", pytrace=False)
    if mutant.caught_by not in tally.failures:
        pytest.fail(f"{mutant.caught_by} did not run against mutant {mutant.name} (pytest exit status {status})."
                    f"\n{output}", pytrace=False)


def gaps(text: str) -> list[int]:
    return [int(number) for number in re.findall(r"TODO\((\d+)\)", text)]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_exercise_differs_from_solution_only_at_gaps(lesson: course.Lesson) -> None:
    exercise_files = [path.relative_to(lesson.exercise).as_posix() for path in lesson.program_files(lesson.exercise)]
    solution_files = [path.relative_to(lesson.solution).as_posix() for path in lesson.program_files(lesson.solution)]
    assert exercise_files == solution_files, "an exercise and its solution must have the same files"
    numbers = []
    for name in exercise_files:
        exercise = (lesson.exercise / name).read_text(encoding="utf-8").splitlines()
        solution = (lesson.solution / name).read_text(encoding="utf-8").splitlines()
        assert not gaps("\n".join(solution)), f"solutions/{lesson.name}/{name} still has a TODO(N)"
        numbers += gaps("\n".join(exercise))
        for tag, s1, s2, e1, e2 in difflib.SequenceMatcher(None, solution, exercise, autojunk=False).get_opcodes():
            if tag != "equal" and not gaps("\n".join(exercise[e1:e2])):
                shown = "\n".join(exercise[e1:e2] or solution[s1:s2])
                pytest.fail(f"lessons/{lesson.name}/{name}, line {e1 + 1}: the exercise differs from its solution "
                            f"outside a TODO(N) gap:\n{shown}", pytrace=False)
    assert sorted(numbers) == list(range(1, len(numbers) + 1)), \
        f"the gaps of lessons/{lesson.name} must be TODO(1) to TODO(N), each once; they are {sorted(numbers)}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_every_gap_has_a_step_and_a_hint(lesson: course.Lesson) -> None:
    count = len(gaps("\n".join(p.read_text(encoding="utf-8") for p in lesson.program_files(lesson.exercise))))
    assert count > 0, f"lessons/{lesson.name} has no TODO(N) gap"
    readme, hints = lesson.readme.read_text(encoding="utf-8"), lesson.hints.read_text(encoding="utf-8")
    for number in range(1, count + 1):
        assert f"TODO({number})" in readme, f"{lesson.readme} does not explain TODO({number})"
        assert re.search(rf"^#+ .*TODO\({number}\)", hints, re.MULTILINE), \
            f"{lesson.hints} has no heading for TODO({number})"


def program_names(lesson: course.Lesson) -> list[str | None]:
    """What the lesson's fixtures may ask for: its one program (None), or each of its programs."""
    return list(lesson.programs()) or [None]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_fixtures_use_the_chosen_build_folder(lesson: course.Lesson, tmp_path: Path) -> None:
    """`pytest harness/NN-topic --impl workspace --workspace DIR [--build-dir B]` must find every program of the
    lesson (lesson 10's unit tests too) in the build folder those options chose, as `--build-dir B` alone must for
    --impl solution: every fixture goes through conftest's locate_program, that is plain_pytest.locate."""
    from kqlab.grade import plain_pytest
    for path in sorted(lesson.tests.glob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        for bypass in ('getoption("--build-dir")', 'getoption("--workspace")', "course.program("):
            assert bypass not in text, (f"{path.relative_to(course.ROOT)} finds a program itself ({bypass}): use the "
                                        f"locate_program or program fixture, which honour --workspace and --build-dir")
    workspace, chosen = tmp_path / "alice" / "workspace", tmp_path / "build-alice"
    asked: list[Path] = []

    def build(workspace_given: Path, build_dir: Path, lesson_given: course.Lesson, name: str | None):
        asked.append(build_dir)
        return course.program(build_dir, "workspace", lesson_given, name), ""

    for name in program_names(lesson):
        found, _ = plain_pytest.locate(lesson, "workspace", chosen, workspace, name, build=build)
        assert asked[-1] == chosen and found.is_relative_to(chosen), \
            f"with --workspace and --build-dir {chosen}, {lesson.name}'s {name or 'program'} was looked for in {found}"
        found, _ = plain_pytest.locate(lesson, "workspace", course.ROOT / "build" / "default", workspace, name,
                                       build_dir_given=False, build=build)
        assert asked[-1] == plain_pytest.build_dir_for(workspace), \
            f"with --workspace alone, {lesson.name}'s {name or 'program'} was built in {asked[-1]}"
        solution_tree = tmp_path / "tree"
        course.program(solution_tree, "solution", lesson, name).parent.mkdir(parents=True, exist_ok=True)
        course.program(solution_tree, "solution", lesson, name).touch()
        found, _ = plain_pytest.locate(lesson, "solution", solution_tree, None, name)
        assert found == course.program(solution_tree, "solution", lesson, name), \
            f"with --build-dir {solution_tree}, {lesson.name}'s {name or 'program'} was not found in it"
