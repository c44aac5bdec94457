"""Running CMake, CTest and pytest for the kqlab command, and reading what they report.

Every command is shown before it runs, and its output goes straight to the terminal, so the student sees the build
progress and can rerun any step by hand.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .course import HARNESS, ROOT


def jobs() -> int:
    """How many compilers to run at once: one per CPU."""
    return os.cpu_count() or 2


def banner(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(command: list[str], *, quiet: bool = False) -> int:
    """Runs `command` from the repository's root after showing it. quiet: its output is shown only if it fails."""
    print("$ " + shlex.join(str(part) for part in command), flush=True)
    if not quiet:
        try:
            return subprocess.run(command, cwd=ROOT).returncode
        except FileNotFoundError:
            return _not_installed(command)
    status, output = capture(command)
    if status:
        print(output, end="", flush=True)
    return status


def capture(command: list[str]) -> tuple[int, str]:
    """Runs `command` from the repository's root; returns its exit status and its output (stdout and stderr)."""
    try:
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        return _not_installed(command), ""
    return done.returncode, done.stdout


def _not_installed(command: list[str]) -> int:
    print(f"kqlab: {command[0]} is not installed, or not on PATH.", flush=True)
    return 127


def build_dir(preset: str) -> Path:
    """The build tree of a CMake preset (CMakePresets.json puts each under build/)."""
    return ROOT / "build" / preset


def shown(path: Path) -> str:
    """A path as commands show it: relative to the repository's root, where they run."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@contextlib.contextmanager
def build_lock(tree: Path) -> Iterator[None]:
    """Holds the build tree `tree` for one configure-and-build at a time: `./kqlab test` runs independent test files
    at once (pytest-xdist), and two CMake runs in one tree would trip over each other's files."""
    tree.mkdir(parents=True, exist_ok=True)
    with open(tree / ".kqlab-build-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def configure(preset: str, *definitions: str, quiet: bool = False) -> int:
    return run(["cmake", "--preset", preset, *(f"-D{d}" for d in definitions)], quiet=quiet)


def build(preset: str, targets: tuple[str, ...] = ()) -> int:
    command = ["cmake", "--build", shown(build_dir(preset)), "--parallel", str(jobs())]
    if targets:
        command += ["--target", *targets]
    return run(command)


@dataclass
class Tally:
    """What a JUnit XML report says: how many tests passed, failed (or errored) and were skipped, and which."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)  # names of the tests that failed or errored, in order
    reports: dict[str, str] = field(default_factory=dict)  # what each failure reported, by test name

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped

    def merged(self, other: Tally) -> Tally:
        """This tally and `other` together (two pytest runs of one suite)."""
        return Tally(self.passed + other.passed, self.failed + other.failed, self.skipped + other.skipped,
                     self.failures + other.failures, {**self.reports, **other.reports})

    def summary(self) -> str:
        parts = [f"{self.passed} passed", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        return ", ".join(parts)


def read_junit(path: Path) -> Tally:
    """Counts the test cases in a JUnit XML file, as written by pytest --junitxml or ctest --output-junit."""
    tally = Tally()
    if not path.exists():
        return tally
    for case in ElementTree.parse(path).iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            tally.failed += 1
            tally.failures.append(case.get("name", "?"))
            tally.reports[case.get("name", "?")] = problem.text or problem.get("message", "")
        elif case.find("skipped") is not None:
            tally.skipped += 1
        else:
            tally.passed += 1
    return tally


def ctest(preset: str, junit: Path, *arguments: str) -> tuple[int, Tally]:
    junit.unlink(missing_ok=True)
    command = ["ctest", "--preset", preset, "--parallel", str(jobs()), "--output-junit", str(junit), *arguments]
    return run(command), read_junit(junit)


def pytest_command(arguments: list[str], junit: Path) -> list[str]:
    """pytest over the harness, with this same Python (the bootstrap picked one that has pytest), reporting to
    `junit`. Its exit status: 0 all passed, 1 some failed, 2 interrupted, 3 internal error, 4 usage error, 5 no
    tests collected."""
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-c", shown(HARNESS / "pytest.ini"), "--rootdir", shown(HARNESS)]
    return command + arguments + [f"--junitxml={shown(junit)}"]


def pytest(arguments: list[str], junit: Path) -> tuple[int, Tally]:
    status = run(pytest_command(arguments, junit))
    return status, read_junit(junit)
