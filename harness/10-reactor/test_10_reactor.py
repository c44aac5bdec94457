"""Lesson 10: the reactor's unit tests. Each test here runs one test suite of the doctest program built from
unit_tests/reactor_test.cpp, and reports its failing checks: one part of the reactor's contract each."""
import subprocess
from pathlib import Path

import pytest

from vocabulary import see, seconds

SUITES = ["operations", "registration", "speculative", "ordering", "batch", "cancellation", "timers", "post",
          "threads"]


@pytest.fixture
def unit_tests(locate_program) -> Path:
    return locate_program("unit_tests", "It needs doctest: is it installed (Debian: apt-get install doctest-dev; "
                                        "macOS: brew install doctest; FreeBSD: pkg install doctest)? Then build it")


def run_suite(unit_tests: Path, story, suite: str) -> None:
    command = [str(unit_tests), f"--test-suite={suite}", "--no-colors"]
    story.step(f"ran {unit_tests.name} --test-suite={suite}: the cases of TEST_SUITE(\"{suite}\") in "
               f"unit_tests/reactor_test.cpp")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds(60))
    except subprocess.TimeoutExpired:
        story.fail(f"the suite to finish within {seconds(60):.0f} s", "it was still running: a wait that never ends?")
    output = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0:
        shown = "\n".join(f"  | {line}" for line in output[-60:])
        story.fail("every case of the suite to pass",
                   f"exit status {done.returncode}; what the unit tests printed (last lines):\n{shown}")
    if not any("test cases:" in line and "passed" in line for line in output) or "test cases: 0 |" in done.stdout:
        story.fail(f"the suite {suite!r} to hold test cases", "none ran")


@see("Readiness and completion")
def test_unit_operations(unit_tests, story):
    run_suite(unit_tests, story, "operations")


@see("Step 1: one registration per descriptor")
def test_unit_registration(unit_tests, story):
    run_suite(unit_tests, story, "registration")


@see("Step 2: try first, then wait")
def test_unit_speculative(unit_tests, story):
    run_suite(unit_tests, story, "speculative")


@see("Step 3: one report, every operation it allows")
def test_unit_ordering(unit_tests, story):
    run_suite(unit_tests, story, "ordering")


@see("Handlers run after the batch")
def test_unit_batch(unit_tests, story):
    run_suite(unit_tests, story, "batch")


@see("Step 4: closing cancels")
def test_unit_cancellation(unit_tests, story):
    run_suite(unit_tests, story, "cancellation")


@see("Step 5: timers decide how long to sleep")
def test_unit_timers(unit_tests, story):
    run_suite(unit_tests, story, "timers")


@see("Step 6: post() from any thread")
def test_unit_post(unit_tests, story):
    run_suite(unit_tests, story, "post")


@see("Step 6: post() from any thread")
def test_unit_threads(unit_tests, story):
    run_suite(unit_tests, story, "threads")


@see("Checking your work")
def test_every_suite_is_run(unit_tests, story):
    story.step(f"listed the test suites of {unit_tests.name}")
    done = subprocess.run([str(unit_tests), "--list-test-suites", "--no-colors"], capture_output=True, text=True,
                          timeout=seconds(30))
    listed = {line.strip() for line in done.stdout.splitlines()
              if line.strip() and not line.startswith("[doctest]") and not line.startswith("=")}
    if listed - set(SUITES):
        story.fail(f"each suite of reactor_test.cpp run by a test here ({', '.join(SUITES)})",
                   f"suites no test runs: {', '.join(sorted(listed - set(SUITES)))}")
