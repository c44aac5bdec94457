"""Grading one submission: its sources built and tested with the project's own build files and tests.

Work happens in slots, one per submission graded at a time, each a scratch folder kept from one run to the next
(under build/grade/ by default), and locked while a run uses it:

    slot-N/pristine/   the project configured for grading, with what every lesson links (compat/, lessons/common)
                       built: brought up to date at the start of each run, never written by a submission
    slot-N/build/      a fresh copy of pristine/ for each submission, where its lessons are built and its servers
                       run: the one folder the student's code may write, with /tmp and /dev/shm. When the grader
                       is root, a tmpfs of its own with a size and an inode cap (SCRATCH_SIZE, SCRATCH_INODES),
                       unmounted once the submission is graded
    slot-N/sandbox-tmp/  where the sandbox's /tmp and /dev/shm come from: never shown as itself, so the student
                       cannot swap them for a link (a tmpfs with caps too, when root)
    slot-N/workspace/  the submission's sources, laid out like workspace/ (the build's KQLAB_WORKSPACE_DIR),
                       read-only to the student's code
    slot-N/private/    the grader's alone, never shown to the student's sandbox: the tests' JUnit XML, and how
                       the tests start a server in the sandbox (launch.py)
    slot-N/testfiles/  the tests' own files (pytest's tmp_path: a configuration file, a log to follow), which the
                       tests write and the sandbox shows read-only

A CMake build tree must stay where it was configured, so each slot keeps its own pristine build and copies it back
in place: a submission never sees the one before it, and its program cannot leave anything for the next. Once a
submission is graded, its build/, workspace/ and private/ are removed.

The student's build and servers run in the sandbox (sandbox.py, view.py); the tests run outside it, as the grader,
with `python -I` from a folder the student cannot write, and start each server in the sandbox (launch.py). Their
JUnit XML is read with O_NOFOLLOW, as a regular file, size-capped.

The grade build is the `default` preset's Debug build with UndefinedBehaviorSanitizer but not AddressSanitizer
(sandbox.py says why). Warnings stay warnings, as for `./kqlab check`.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from ..course import HARNESS, ROOT, Lesson
from . import launch, text
from .sandbox import GiB, MiB, Isolation, Limits, Outcome, Sandbox
from .submissions import Submission

BASE_LIMITS = Limits(seconds=1800, cpu_seconds=1800, memory=4 * GiB)  # the project's own code, built once
CONFIGURE_LIMITS = Limits(seconds=300, cpu_seconds=300, memory=2 * GiB)
BUILD_LIMITS = Limits(seconds=300, cpu_seconds=300, memory=2 * GiB)
TEST_MEMORY = 2 * GiB
SCRATCH_SIZE = 1 * GiB  # the tmpfs of a submission's build/, when the grader is root
SCRATCH_INODES = 20_000  # files and folders in it (a build of every lesson makes about 1,500)
TMP_SIZE, TMP_INODES = 256 * MiB, 10_000  # the tmpfs of its /tmp and /dev/shm, when the grader is root
REPORT_LIMIT = 8 * MiB  # bytes of JUnit XML read from one test run


@dataclass
class Failure:
    test: str
    message: str


@dataclass
class LessonResult:
    lesson: str
    tests: list[str]  # the tests the lesson has, in the harness's order
    passed: int = 0
    status: str = "passed"  # passed, failed, does not compile, stopped, missing, error
    reason: str = ""  # the first problem, in one line
    failures: list[Failure] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # "build", "tests" -> the run's output, capped

    @property
    def total(self) -> int:
        return len(self.tests)

    @property
    def cell(self) -> str:
        """The lesson's cell in the table: passed/total, or what kept the tests from running."""
        return {"does not compile": "build", "missing": "-", "error": "error"}.get(
            self.status, f"{self.passed}/{self.total}" + ("!" if self.status == "stopped" else ""))


@dataclass
class StudentResult:
    name: str
    origin: str
    problem: str = ""  # why the submission could not be graded at all
    notes: list[str] = field(default_factory=list)
    lessons: list[LessonResult] = field(default_factory=list)
    seconds: float = 0.0
    progress: str | None = None  # the submission's workspace/.progress (the hints asked for), as read with it

    @property
    def graded(self) -> bool:
        return not self.problem and all(result.status != "error" for result in self.lessons)

    def first_problem(self) -> str:
        if self.problem:
            return self.problem
        for result in self.lessons:
            if result.status != "passed":
                return f"{result.lesson}: {result.reason}"
        return ""


def expected_tests(lessons: list[Lesson]) -> dict[str, list[str]]:
    """Each lesson's tests, by name, as pytest collects them from the project's harness (not the submission's)."""
    from .. import tools
    status, output = tools.capture([sys.executable, "-m", "pytest", "-c", str(HARNESS / "pytest.ini"),
                                    "--rootdir", str(HARNESS), "--collect-only", "-q",
                                    *(str(lesson.tests) for lesson in lessons)])
    found: dict[str, list[str]] = {lesson.name: [] for lesson in lessons}
    for line in output.splitlines():
        match = re.match(r"(?:harness/)?(\d\d-[\w-]+)/\S+?::(\S+)$", line.strip())
        if match and match.group(1) in found:
            found[match.group(1)].append(match.group(2))
    if status != 0 or not all(found.values()):
        raise RuntimeError(f"could not list the lessons' tests (pytest --collect-only, status {status}):\n{output}")
    return found


def free_slots(scratch: Path, count: int, isolation: Isolation, build_jobs: int) -> list[Slot]:
    """`count` slots under `scratch` that no other run is using, each locked until its `with` block ends."""
    slots = []
    number = 0
    while len(slots) < count:
        if number >= count + 64:
            raise RuntimeError(f"more than 64 slots in {scratch} are in use by other runs of ./kqlab grade")
        slot = Slot(scratch / f"slot-{number}", isolation, build_jobs)
        if slot.lock():
            slots.append(slot)
        number += 1
    return slots


class Slot:
    def __init__(self, root: Path, isolation: Isolation, build_jobs: int) -> None:
        self.root = root
        self.pristine, self.build = root / "pristine", root / "build"
        self.workspace, self.private, self.testfiles = root / "workspace", root / "private", root / "testfiles"
        self.tmp = root / "sandbox-tmp"
        self.isolation = isolation
        self.build_jobs = build_jobs
        # Without bubblewrap there is no second trust domain: the tests run as the student's code, in private/.
        writable = [self.build] if isolation.bwrap else [self.build, self.private]
        self.sandbox = Sandbox(isolation, writable=writable, readable=[self.workspace, self.testfiles], tmp=self.tmp)
        self._lock = None

    def lock(self) -> bool:
        """Takes this slot for this run; False if another run has it."""
        self._lock = open(self.root.with_name(self.root.name + ".lock"), "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            self._lock.close()
            return False

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_) -> None:
        if self._lock:
            self._lock.close()  # and with it, the lock

    def _fresh(self, *folders: Path) -> None:
        for folder in folders:
            remove(folder)
            folder.mkdir(parents=True)
            hand_over(folder, self.isolation)

    def _fresh_private(self) -> None:
        for folder in (self.private, self.testfiles):
            remove(folder)
            folder.mkdir(parents=True)
        self.testfiles.chmod(0o755)
        if self.isolation.bwrap:
            self.private.chmod(0o700)
        else:
            hand_over(self.private, self.isolation)
            hand_over(self.testfiles, self.isolation)

    def _mount_scratch(self, folder: Path, size: int, inodes: int) -> None:
        """A tmpfs of its own at `folder`, when the grader is root: an inode flood or a full disk ends at its caps,
        and unmounting takes it all away. Elsewhere a plain folder, which the watchdog measures."""
        self._unmount(folder)
        remove(folder)
        folder.mkdir(parents=True)
        if self.isolation.bwrap and os.geteuid() == 0:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes},mode=0755,nosuid,nodev",
                            "kqlab-grade", str(folder)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @staticmethod
    def _unmount(folder: Path) -> None:
        if os.path.ismount(folder):
            subprocess.run(["umount", "--lazy", str(folder)], check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

    def _build_from_pristine(self) -> None:
        self._mount_scratch(self.build, SCRATCH_SIZE, SCRATCH_INODES)
        self._mount_scratch(self.tmp, TMP_SIZE, TMP_INODES)
        if not self.isolation.bwrap:
            hand_over(self.tmp, self.isolation)
        if self.pristine.is_dir():
            shutil.copytree(self.pristine, self.build, symlinks=True, dirs_exist_ok=True)
        hand_over(self.build, self.isolation, recursive=True)

    def clear(self) -> None:
        """Removes what a submission left: its build, its /tmp, its sources, its reports."""
        for folder in (self.build, self.tmp):
            self._unmount(folder)
            remove(folder)
        remove(self.workspace)
        remove(self.private)
        remove(self.testfiles)

    def prepare(self) -> Outcome:
        """Brings pristine/ up to date: the project configured for grading, with what every lesson links built.
        The first time it builds compat/ and lessons/common; after that, only what changed in the project."""
        make_reachable(self.root)
        self._fresh(self.workspace)
        self.workspace.chmod(0o755)
        self._fresh_private()
        self._build_from_pristine()
        configure = self.sandbox.run(["cmake", "-S", str(ROOT), "-B", str(self.build), "-DCMAKE_BUILD_TYPE=Debug",
                                      "-DKQLAB_SANITIZE=undefined", f"-DKQLAB_WORKSPACE_DIR={self.workspace}"],
                                     BASE_LIMITS, self.build)
        if not configure.ok:
            return configure
        built = self.sandbox.run(["cmake", "--build", str(self.build), "--target", "kqlab_common", "--parallel",
                                  str(self.build_jobs)], BASE_LIMITS, self.build)
        if built.ok:
            remove(self.pristine)
            shutil.copytree(self.build, self.pristine, symlinks=True)
        self.clear()
        built.output = configure.output + built.output
        return built

    def grade(self, submission: Submission, lessons: list[Lesson], tests: dict[str, list[str]],
              test_seconds: float, progress) -> list[LessonResult]:
        try:
            return self._grade(submission, lessons, tests, test_seconds, progress)
        finally:
            self.clear()

    def _grade(self, submission: Submission, lessons: list[Lesson], tests: dict[str, list[str]],
               test_seconds: float, progress) -> list[LessonResult]:
        self._fresh(self.workspace)
        self.workspace.chmod(0o755)
        self._fresh_private()
        self._build_from_pristine()
        for lesson_name, files in submission.lessons.items():
            folder = self.workspace / lesson_name
            folder.mkdir()
            folder.chmod(0o755)
            for name, contents in files.items():
                if "/" in name:  # a program's folder, in a lesson of several
                    (folder / name).parent.mkdir(exist_ok=True)
                    (folder / name).parent.chmod(0o755)
                (folder / name).write_bytes(contents)
                (folder / name).chmod(0o644)
        progress(submission.name, "configuring")
        configure = self.sandbox.run(["cmake", "-S", str(ROOT), "-B", str(self.build)], CONFIGURE_LIMITS,
                                     self.build)
        results = []
        for lesson in lessons:
            result = LessonResult(lesson.name, tests[lesson.name])
            results.append(result)
            if lesson.name not in submission.lessons:
                result.status, result.reason = "missing", f"no workspace/{lesson.name}/ in the submission"
            elif not any(name.endswith(".cpp") for name in submission.lessons[lesson.name]):
                result.status, result.reason = "does not compile", f"workspace/{lesson.name}/ has no .cpp file"
            elif not configure.ok:
                result.status, result.reason = "error", "CMake could not configure the build: " + \
                    (configure.stopped or _last_line(configure.output))
                result.logs["build"] = configure.output
            else:
                progress(submission.name, f"building {lesson.name}")
                if self._build(lesson, result):
                    progress(submission.name, f"testing {lesson.name}")
                    self._test(lesson, result, tests[lesson.name], test_seconds)
            for test in tests[lesson.name] if result.status in ("missing", "does not compile", "error") else []:
                result.failures.append(Failure(test, f"not run: {result.reason}"))
        return results

    def _build(self, lesson: Lesson, result: LessonResult) -> bool:
        outcome = self.sandbox.run(["cmake", "--build", str(self.build), "--target", f"workspace_{lesson.name}",
                                    "--parallel", str(self.build_jobs)], BUILD_LIMITS, self.build)
        result.logs["build"] = outcome.output
        if outcome.ok:
            return True
        result.status = "does not compile"
        result.reason = "does not compile: " + (outcome.stopped or _first_error(outcome.output))
        return False

    def _test(self, lesson: Lesson, result: LessonResult, expected: list[str], seconds: float) -> None:
        junit = self.private / f"{lesson.name}.xml"
        limits = Limits(seconds=seconds, cpu_seconds=int(seconds) + 1, memory=TEST_MEMORY)
        launcher = self.private / "launcher.json"
        if self.isolation.bwrap:
            launch.write_spec(launcher, self.sandbox.program_prefix(limits),
                              self.isolation.user[:2] if self.isolation.user else None)
        # python -I: neither the environment nor the working folder reaches the import path, which then holds
        # only the system's folders and the project's harness/ (pytest adds the conftest's): none the student's
        # code can write. The working folder is private/, which the student's sandbox does not show.
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(self.private),
                       "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
                       launch.VARIABLE: str(launcher)}
        if "KQLAB_TIMEOUT_SCALE" in os.environ:
            environment["KQLAB_TIMEOUT_SCALE"] = os.environ["KQLAB_TIMEOUT_SCALE"]
        if not self.isolation.bwrap:
            del environment[launch.VARIABLE]
        outcome = self.sandbox.run_trusted(
            [sys.executable, "-I", "-m", "pytest", "-p", "no:cacheprovider", "-c", str(HARNESS / "pytest.ini"),
             "--rootdir", str(HARNESS), str(lesson.tests), "--impl", "workspace", "--build-dir", str(self.build),
             "-v", "--no-header", "-rN", f"--junitxml={junit}", f"--basetemp={self.testfiles / 'pytest'}"],
            limits, self.private, environment)
        result.logs["tests"] = outcome.output
        reported = _read_junit(junit) if outcome.status in (0, 1) else None
        if reported is None:
            # Stopped, or pytest did not finish: what its -v lines say had run by then.
            reported = _read_verbose(outcome.output)
        passed, failures = reported
        result.passed = min(len(passed & set(expected)), result.total)
        result.failures = failures
        under_way = _under_way(outcome.output)
        if outcome.stopped:
            result.status = "stopped"
            result.reason = outcome.stopped + (f", during {under_way}" if under_way else "")
        elif outcome.status not in (0, 1):
            result.status = "error" if outcome.status in (3, 4, 5) else "stopped"
            result.reason = (f"the tests ended abnormally (pytest exit status {outcome.status})"
                             + (f", during {under_way}" if under_way else "") + f": {_last_line(outcome.output)}")
        elif failures or result.passed < result.total:
            result.status = "failed"
            # A crash explains the failures around it best, even when an earlier test only saw its connection go.
            telling = next((f for f in failures if summarize(f.message).startswith(("crashed", "sanitizer"))),
                           failures[0] if failures else None)
            result.reason = f"{telling.test}: {summarize(telling.message)}" if telling else \
                f"only {result.passed} of {result.total} tests ran"
        for test in expected:
            if test not in passed and all(failure.test != test for failure in failures):
                result.failures.append(Failure(test, f"not run: {result.reason}"))


def read_report(path: Path, limit: int = REPORT_LIMIT) -> bytes | None:
    """A report file's bytes, only if it is a regular file (never through a link, never a FIFO that would block)
    of at most `limit` bytes; None otherwise."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        contents = file.read(limit + 1)
    return contents if len(contents) <= limit else None


def _read_junit(path: Path) -> tuple[set[str], list[Failure]] | None:
    """The tests that passed, and the failures with their messages, from pytest's JUnit XML; None if unreadable."""
    contents = read_report(path)
    if contents is None:
        return None
    try:
        tree = ElementTree.fromstring(contents)
    except ElementTree.ParseError:
        return None
    passed, failures = set(), []
    for case in tree.iter("testcase"):
        name = case.get("name", "?")
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            failures.append(Failure(name, text.clean(problem.text or problem.get("message") or "").strip()))
        elif case.find("skipped") is None:
            passed.add(name)
    return passed, failures


def _read_verbose(output: str) -> tuple[set[str], list[Failure]]:
    passed, failures = set(), []
    # Anchored at a line's start: a server's output quoted in a failure message cannot add a line that counts.
    for match in re.finditer(r"^\S+\.py::(test\w*(?:\[[^\]\s]*\])?) (PASSED|FAILED|ERROR)", output, re.MULTILINE):
        if match.group(2) == "PASSED":
            passed.add(match.group(1))
        else:
            failures.append(Failure(match.group(1), "failed (its message was lost when the run was stopped)"))
    return passed, failures


def _under_way(output: str) -> str:
    """The test pytest -v had started but not finished when its output ends."""
    lines = output.rstrip().splitlines()
    match = re.search(r"::(test\w*(?:\[[^\]\s]*\])?)\s*$", lines[-1]) if lines else None
    return match.group(1) if match else ""


def summarize(message: str) -> str:
    """One line saying why a test failed, from the report the harness wrote (vocabulary.Story.report)."""
    killed = re.search(r"The server \(.*?\) (was killed by SIG\w+)", message)
    if killed:
        return f"crashed: the server {killed.group(1)}"
    sanitizer = re.search(r"(runtime error: .*|ERROR: \w+Sanitizer: .*)", message)
    if sanitizer:
        return f"sanitizer report: {sanitizer.group(1)}"
    expected = re.search(r"^Expected: (.*)$", message, re.MULTILINE)
    got = re.search(r"^Got: +(.*)$", message, re.MULTILINE)
    if expected and got:
        return _short(f"expected {expected.group(1)}; got {got.group(1)}")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return _short(lines[0] if lines else "failed")


def _short(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _first_error(output: str) -> str:
    for line in output.splitlines():
        match = re.search(r"([^\s/:]+:\d+(?::\d+)?): (?:fatal )?error: (.*)", line)
        if match:
            return _short(f"{match.group(1)}: {match.group(2)}")
    return _last_line(output) or "the build failed"


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return _short(lines[-1]) if lines else ""


def remove(path: Path) -> None:
    """Removes a folder a submission may have written, whatever permissions it left on what is inside."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return

    def make_writable(function, name, _):
        parent = os.path.dirname(name)
        os.chmod(parent, 0o700)
        if os.path.isdir(name) and not os.path.islink(name):
            os.chmod(name, 0o700)
        function(name)
    for folder, _, _ in os.walk(path):
        try:
            os.chmod(folder, 0o700)
        except OSError:
            pass
    shutil.rmtree(path, onerror=make_writable)


def make_reachable(path: Path) -> None:
    """Creates a folder that the runs' user can enter (it is nobody, when the grader is root)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)


def hand_over(path: Path, isolation: Isolation, recursive: bool = False) -> None:
    """Gives a folder to the user the runs run as (when the grader is root), so that they can write in it."""
    if isolation.user is None:
        return
    uid, gid, _ = isolation.user
    os.lchown(path, uid, gid)
    if recursive:
        for folder, folders, files in os.walk(path):
            for name in folders + files:
                os.lchown(os.path.join(folder, name), uid, gid)

