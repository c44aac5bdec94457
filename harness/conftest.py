"""pytest's setup for the lesson tests: which build of a lesson to test (--impl), and the fixtures each test uses.

A lesson's tests live in harness/NN-topic/ (the lesson's own name), so the fixtures know which lesson a test is
about from where it is.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kqlab import course
from vocabulary import Server, Story


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kqlab")
    group.addoption("--impl", default="solution",
                    help="the build of each lesson to test: solution, exercise, workspace (your copy), mutant-NAME")
    group.addoption("--build-dir", default=str(course.ROOT / "build" / "default"),
                    help="the CMake build tree that holds the programs, as bin/IMPL/NN-topic")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    # Keeps each phase's report on the test, so a fixture's teardown can tell whether the test itself passed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def lesson(request: pytest.FixtureRequest) -> course.Lesson:
    return course.lesson(request.path.parent.name)


@pytest.fixture
def impl(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--impl")


@pytest.fixture
def program_name() -> str | None:
    """Which of the lesson's programs a test runs, for a lesson that has several (course.Lesson.programs()): its
    test module overrides this fixture, e.g. parametrized over them all. None for a lesson of one program."""
    return None


@pytest.fixture
def program(request: pytest.FixtureRequest, lesson: course.Lesson, impl: str, program_name: str | None) -> Path:
    path = course.program(Path(request.config.getoption("--build-dir")), impl, lesson, program_name)
    if not path.exists():
        pytest.fail(f"{path} does not exist. Build it first: ./kqlab check {lesson.number} builds your workspace "
                    f"copy, ./kqlab test builds everything.", pytrace=False)
    return path


@pytest.fixture
def story(request: pytest.FixtureRequest, lesson: course.Lesson) -> Story:
    marker = request.node.get_closest_marker("see")
    if marker is None:
        pytest.fail(f"{request.node.name} has no @see(section): which part of the lesson should a failure point "
                    f"to?", pytrace=False)
    section = marker.args[0]
    if section not in lesson.sections():
        pytest.fail(f'{request.node.name} sends the reader to the section "{section}", which {lesson.readme} '
                    f"does not have.", pytrace=False)
    return Story(request.node.name, str(lesson.readme.relative_to(course.ROOT)), section)


@pytest.fixture
def server(request: pytest.FixtureRequest, program: Path, story: Story, lesson: course.Lesson, impl: str,
           program_name: str | None):
    """The lesson's program, started for this test and stopped after it. A server that ends on its own before the
    test is over fails the test (a crash, a sanitizer report, or an exit nobody asked for)."""
    label = f"{impl} of {lesson.name}" + (f", program {program_name}" if program_name else "")
    running = Server(program, story, label)
    yield running
    ended_on_its_own = not running.running()
    running.stop()
    call = getattr(request.node, "report_call", None)
    if ended_on_its_own and call is not None and call.passed:
        story.fail("the server to keep running until the test stops it", f"it {running.state()}")
