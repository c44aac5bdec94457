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
def locate_program(request: pytest.FixtureRequest, lesson: course.Lesson, impl: str):
    """locate_program(name, missing) -> Path: the lesson's built program called `name` (None: the lesson's one
    program), from the build folder the options chose (plain_pytest.locate): every fixture that runs a program
    finds it here. Fails the test when there is none, with `missing` (what to do about it) when it was not built."""
    workspace = request.config.getoption("--workspace")
    given = Path(request.config.getoption("--build-dir"))

    def locate(name: str | None, missing: str = "") -> Path:
        found, problem = plain_pytest.locate(lesson, impl, given, Path(workspace) if workspace else None, name,
                                             build_dir_given=given != DEFAULT_BUILD_DIR)
        if found is None:
            pytest.fail(problem if workspace else
                        f"{problem}. {missing or 'Build it first'}: ./kqlab check {lesson.number} builds your "
                        f"workspace copy, ./kqlab test builds everything.", pytrace=False)
        return found

    return locate


@pytest.fixture
def program(locate_program, program_name: str | None) -> Path:
    return locate_program(program_name)


@pytest.fixture
def story(request: pytest.FixtureRequest, lesson: course.Lesson, impl: str) -> Story:
    marker = request.node.get_closest_marker("see")
    if marker is None:
        pytest.fail(f"{request.node.name} has no @see(section): which part of the lesson should a failure point "
                    f"to?", pytrace=False)
    section = marker.args[0]
    if section not in lesson.sections():
        pytest.fail(f'{request.node.name} sends the reader to the section "{section}", which {lesson.readme} '
                    f"does not have.", pytrace=False)
    story = Story(request.node.name, str(lesson.readme.relative_to(course.ROOT)), section)
    story.draws_timeline = not impl.startswith("mutant-")  # a mutant's failure is expected: nobody reads its report
    story.close_section = getattr(request.module, "CLOSE_SECTION", "")
    story.diagnoses = list(getattr(request.module, "DIAGNOSES", []))
    for named in [story.close_section, *(section for _, section, _ in story.diagnoses)]:
        if named and named not in lesson.sections():
            pytest.fail(f"{request.path.name} names the section \"{named}\" (CLOSE_SECTION or DIAGNOSES), which "
                        f"{lesson.readme} does not have.", pytrace=False)
    return story


@pytest.fixture
def start_server(request: pytest.FixtureRequest, program: Path, story: Story, lesson: course.Lesson, impl: str,
                 program_name: str | None):
    """Starts the lesson's program for this test: start_server() as the `server` fixture does, or with options,
    start_server("--idle-ms", "500") or start_server("--max-backlog", "65536"), under a descriptor limit,
    start_server(descriptor_limit=64), or with more environment, start_server(environment={"KQLAB_FAULT":
    "EVFILT_READ:ENOMEM:2"}). Every server started is stopped after the test, and one that ended on its own before
    the test was over fails the test (a crash, a sanitizer report, or an exit nobody asked for)."""
    started: list[Server] = []

    def start(*arguments: str, descriptor_limit: int | None = None, environment: dict[str, str] | None = None) \
            -> Server:
        label = f"{impl} of {lesson.name}" + (f", program {program_name}" if program_name else "")
        running = Server(program, story, label, arguments, descriptor_limit, environment)
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
