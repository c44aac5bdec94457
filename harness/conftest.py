"""pytest's setup for the lesson tests: which build of a lesson to test (--impl), and the fixtures each test uses.

A lesson's tests live in harness/NN-topic/ (the lesson's own name), so the fixtures know which lesson a test is
about from where it is.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from kqlab import course
from kqlab.grade import launch, plain_pytest
from vocabulary import Server, Story

DEFAULT_BUILD_DIR = course.ROOT / "build" / "default"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kqlab")
    group.addoption("--impl", default="solution",
                    help="the build of each lesson to test: solution, exercise, workspace (your copy), mutant-NAME")
    group.addoption("--build-dir", default=str(DEFAULT_BUILD_DIR),
                    help="the CMake build tree that holds the programs, as bin/IMPL/NN-topic")
    group.addoption("--workspace", default=None,
                    help="a student's workspace/ folder: build its lessons and test them (with --impl workspace; "
                         "for teachers, see README.md). Built in --build-dir, by default build/workspaces/NAME")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # With --workspace, only the lessons' tests run: the course's checks on itself (harness/test_*.py) are for
    # ./kqlab test.
    if config.getoption("--workspace") and collection_path.parent == course.HARNESS and \
            collection_path.name.startswith("test_"):
        return True
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    # Keeps each phase's report on the test, so a fixture's teardown can tell whether the test itself passed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    """pytest's tmp_path; under ./kqlab grade, readable by the student's program, which runs in a sandbox as
    another user (grade/launch.py) and is given files from here (a configuration, a log to follow)."""
    if os.environ.get(launch.VARIABLE):
        for folder in [tmp_path, *tmp_path.parents][:3]:  # the test's folder, pytest's numbered one, basetemp
            folder.chmod(0o755)
    return tmp_path


@pytest.fixture
def lesson(request: pytest.FixtureRequest) -> course.Lesson:
    return course.lesson(request.path.parent.name)


@pytest.fixture
def impl(request: pytest.FixtureRequest) -> str:
    return "workspace" if request.config.getoption("--workspace") else request.config.getoption("--impl")


@pytest.fixture
def program_name() -> str | None:
    """Which of the lesson's programs a test runs, for a lesson that has several (course.Lesson.programs()): its
    test module overrides this fixture, e.g. parametrized over them all. None for a lesson of one program."""
    return None


@pytest.fixture
def program(request: pytest.FixtureRequest, lesson: course.Lesson, impl: str, program_name: str | None) -> Path:
    workspace = request.config.getoption("--workspace")
    if workspace:
        given = Path(request.config.getoption("--build-dir"))
        built, problem = plain_pytest.program(Path(workspace), given if given != DEFAULT_BUILD_DIR else
                                              plain_pytest.build_dir_for(Path(workspace)), lesson, program_name)
        if built is None:
            pytest.fail(problem, pytrace=False)
        return built
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
def start_server(request: pytest.FixtureRequest, program: Path, story: Story, lesson: course.Lesson, impl: str,
                 program_name: str | None):
    """Starts the lesson's program for this test: start_server() as the `server` fixture does, or with options,
    start_server("--idle-ms", "500") or start_server("--max-backlog", "65536"), or under a descriptor limit, start_server(descriptor_limit=64). Every server
    started is stopped after the test, and one that ended on its own before the test was over fails the test (a
    crash, a sanitizer report, or an exit nobody asked for)."""
    started: list[Server] = []

    def start(*arguments: str, descriptor_limit: int | None = None) -> Server:
        label = f"{impl} of {lesson.name}" + (f", program {program_name}" if program_name else "")
        running = Server(program, story, label, arguments, descriptor_limit)
        started.append(running)
        return running

    yield start
    ended_on_its_own = [running for running in started if not running.running() and not running.exit_expected]
    for running in started:
        running.stop()
    call = getattr(request.node, "report_call", None)
    if ended_on_its_own and call is not None and call.passed:
        story.fail("the server to keep running until the test stops it", f"it {ended_on_its_own[0].state()}")


@pytest.fixture
def server(start_server) -> Server:
    """The lesson's program, started for this test with its default options and stopped after it."""
    return start_server()
