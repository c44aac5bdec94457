"""./kqlab test: the project's own suite, the one CI runs.

1. Build everything with the `default` preset (AddressSanitizer and UBSan), warnings as errors, every CPU busy.
2. Then three things at once, so that both CPUs stay busy while tests wait on sockets:
   - in front, at normal priority, what measures time and CPU: compat's doctest suite (CTest), then every lesson's
     tests against its solution, through pytest, one at a time, then the threaded tests (CTest label `threads`, and
     the lessons' pytest tests marked `threads`) under ThreadSanitizer;
   - behind them, at low priority (nice 10): the mutants' build in build/default, then the `tsan` preset's build of
     what runs under ThreadSanitizer (not the whole tree: the CMake target kqlab_threaded and lesson 11's solution);
   - and, at lower priority still (nice 15), the course's checks on itself (harness/test_*.py: every untouched
     exercise fails, every mutant is caught, gaps are gaps, the site, the grader, the kqlab command), with
     pytest-xdist, two workers per CPU (a file whose tests share state keeps them in one worker: its xdist_group);
     the mutants' tests once the mutants are built, six workers per CPU (each mostly waits for its server), and
     after them, one at a time, the few whose mistake shows only when the test's processes race. Every
     CMake run in build/default holds its build lock, so the checks that build there wait while the mutants build.
   The checks' output is kept, and shown once the tests in front are done.

The last line says how it went, with the totals.
"""
from __future__ import annotations

import importlib.util
import shlex
import threading
import time
from pathlib import Path

from . import course, mutants, tools
from .commands import Command


# How long the last full run took here is the best estimate for this one; a first run on 2 cores takes about this.
FIRST_ESTIMATE = 5 * 60


def _last_duration() -> Path:
    return tools.build_dir("default") / "kqlab-test-seconds"


def _estimate() -> str:
    try:
        seconds, how = int(_last_duration().read_text().strip()), "the last run here took"
    except (OSError, ValueError):
        seconds, how = FIRST_ESTIMATE, "on 2 cores it takes about"
    return f"{how} {max(1, round(seconds / 60))} min"


def run(args=None) -> int:
    del args
    started = time.monotonic()
    print(f"kqlab test checks the whole project: {_estimate()}. (To check your own work on a lesson: "
          f"./kqlab check N, or ./kqlab watch, seconds each.)", flush=True)
    results: list[tuple[str, bool, str]] = []  # (part, passed, what it says)

    tools.banner("Build: preset default (Debug, AddressSanitizer + UndefinedBehaviorSanitizer), warnings are errors")
    if tools.configure("default", "KQLAB_WERROR=ON") or tools.build("default"):
        return _finish([("build", False, "the build failed (see above)")], started)
    results.append(("build", True, "ok"))

    junit = tools.build_dir("default") / "junit"
    # Behind the tests in front, at low priority: the tests' servers get a CPU whenever they want one, the
    # compilers and the checks the rest; the compilers first, as the mutants' tests, the threaded tests and the checks
    # that build in build/default wait for them.
    tools.banner("In the background, at low priority: building the mutants (build/default/mutants), then the threaded "
                 "programs under ThreadSanitizer (preset tsan); the course's checks on itself (shown at the end)")
    background = _Background()
    background.start()
    checks = _checks(background.mutants_built, junit)
    for check in checks:
        check.start()

    tools.banner("compat's tests (CTest, preset default)")
    status, tally = tools.ctest("default", junit / "ctest.xml")
    results.append(("ctest", status == 0 and tally.total > 0, tally.summary()))

    tools.banner("The lessons' tests (pytest): every solution passes, one test at a time (they measure time and CPU)")
    build = ["--build-dir", tools.shown(tools.build_dir("default")), "-rfE"]
    lessons = [tools.shown(lesson.tests) for lesson in course.lessons()]
    status, tally = tools.pytest([*lessons, *build], junit / "pytest-lessons.xml")

    background.join()
    tools.banner("The threaded tests under ThreadSanitizer (CTest -L threads, preset tsan)")
    results.append(_threaded_tests(background.tsan_build, junit))

    for check in checks:
        check.join()
        tools.banner(f"The course's checks on itself: {check.title}")
        print(check.output, end="", flush=True)
        more, more_tally = check.result()
        status, tally = _combined(status, more), tally.merged(more_tally)
    if status == 5:
        results.append(("pytest", False, "no tests were collected"))
    else:
        results.append(("pytest", status == 0, tally.summary() + ("" if status in (0, 1) else f" (status {status})")))
    return _finish(results, started)


# Workers per CPU: for the course's checks, whose tests mostly wait (on sockets, on the grader's sandboxes, on a
# browser); for the mutants' tests, which run one lesson test each against a mutant, in a pytest of their own, and
# mostly wait for their server, or for a deadline the mutant makes them miss.
CHECK_WORKERS_PER_CPU = 2
MUTANT_WORKERS_PER_CPU = 6

# Priorities behind the tests in front (nice 0): the background builds, then the checks, which partly wait for them.
BUILD_NICENESS = 10
CHECK_NICENESS = 15

MUTANT_TEST = "test_mutant_is_caught"  # in harness/test_course.py


def _checks(mutants_built: threading.Event, junit: Path) -> list[_Check]:
    """The course's checks on itself (harness/test_*.py), as two runs of pytest: all but the mutants' tests, now; the
    mutants' tests once the mutants are built. Every CMake run in build/default, and every fixture workspace that
    comes or goes there, holds the tree's build lock (tools.build_lock), so the checks that build there (the kqlab
    command's, the grading platforms') wait while the mutants build, and the mutants' tests build nothing."""
    build = ["--build-dir", tools.shown(tools.build_dir("default")), "-rfE"]
    checks = [tools.shown(path) for path in sorted(course.HARNESS.glob("test_*.py"))]

    def parallel(workers: int) -> list[str]:
        return ["-n", str(workers), "--dist", "loadgroup"] if _have_xdist() else []

    mutant_tests = f"{tools.shown(course.HARNESS / 'test_course.py')}::{MUTANT_TEST}"
    crowd = _Check("every mutant is caught",
                   [mutant_tests, "-m", "not races", *build, *parallel(MUTANT_WORKERS_PER_CPU * tools.jobs())],
                   junit / "pytest-mutants.xml", after=mutants_built)
    return [
        _Check("exercises fail, gaps are gaps, the site, the grader, the kqlab command",
               [*checks, "-k", f"not {MUTANT_TEST}", *build, *parallel(CHECK_WORKERS_PER_CPU * tools.jobs())],
               junit / "pytest-course.xml"),
        crowd,
        # A mutant caught only when its test's processes race (mutants.Mutant.races) needs them to run side by side:
        # one at a time, once the crowd of the others has gone.
        _Check("every mutant that needs a race is caught", [mutant_tests, "-m", "races", *build],
               junit / "pytest-mutants-races.xml", after=crowd.done),
    ]


class _Check(threading.Thread):
    """One run of pytest over some of the course's checks, in the background at low priority, once `after` is set
    (if given). Its output is kept, to be shown after the tests in front (interleaved with theirs it would be
    noise)."""

    def __init__(self, title: str, arguments: list[str], junit: Path, after: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.title, self.junit, self.after = title, junit, after
        self.command = tools.pytest_command(arguments, junit)
        self.status, self.output = 4, "not run\n"
        self.done = threading.Event()  # set once this run of pytest is over, however it went

    def run(self) -> None:
        try:
            if self.after is not None:
                self.after.wait()
            self.output = "$ " + shlex.join(self.command) + "\n"
            status, output = tools.capture(["nice", "-n", str(CHECK_NICENESS), *self.command])
            self.status, self.output = status, self.output + output
        finally:
            self.done.set()

    def result(self) -> tuple[int, tools.Tally]:
        """pytest's exit status and what its JUnit report says."""
        return self.status, tools.read_junit(self.junit)


class _Background(threading.Thread):
    """Builds what the later steps need, at low priority: the mutants (then sets mutants_built, even if that build
    failed: the mutants' tests report it, each with its mutant's name), then the tsan tree's threaded programs. Its
    output is kept, and shown only if a build fails."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.mutants_built = threading.Event()
        self.tsan_build: tuple[int, str] = (1, "not built")  # the exit status and output of the TSan build

    def run(self) -> None:
        try:
            # The mutants' test (harness/test_course.py) builds them too, and finds them done: a failure is its to
            # report, with the mutant's name.
            mutants.build_all(tools.build_dir("default"), nice=BUILD_NICENESS)
        except Exception as problem:  # reported by the mutants' tests, which build what is missing themselves
            print(f"kqlab test: building the mutants failed: {problem!r}", flush=True)
        finally:
            self.mutants_built.set()
        try:
            self.tsan_build = _build_threaded()
        except Exception as problem:  # shown, not lost in a thread: the later steps still run and report
            self.tsan_build = (1, f"{self.tsan_build[1]}\nthe background build failed: {problem!r}")


def _build_threaded() -> tuple[int, str]:
    """Configures the tsan tree and builds only what runs under ThreadSanitizer: the programs of the CTest tests
    labelled `threads` (the CMake target kqlab_threaded) and the solutions of the lessons whose pytest tests are marked
    `threads`."""
    nice = ["nice", "-n", str(BUILD_NICENESS)]
    status, output = tools.capture([*nice, "cmake", "--preset", "tsan", "-DKQLAB_WERROR=ON"])
    if status:
        return status, output
    targets = ["kqlab_threaded", *(f"solution_{lesson.name}" for lesson in _threaded_lessons())]
    status, built = tools.capture([*nice, "cmake", "--build", tools.shown(tools.build_dir("tsan")), "--parallel",
                                   str(tools.jobs()), "--target", *targets])
    return status, output + built


def _threaded_lessons() -> list[course.Lesson]:
    """The lessons with tests marked `threads` (pytest.mark.threads: their servers run threads)."""
    return [lesson for lesson in course.lessons() if lesson.tests.is_dir() and
            any("mark.threads" in path.read_text(encoding="utf-8") for path in lesson.tests.glob("test_*.py"))]


def _threaded_tests(build: tuple[int, str], junit: Path) -> tuple[str, bool, str]:
    status, output = build
    if status:
        print(output, flush=True)
        return "tsan", False, "the build failed (see above)"
    # --no-tests=ignore: having no test labelled `threads` is not a failure. (CTest says "No tests were found"
    # then; its exit status is 0 by default but 8 with --no-tests=error, so say which we mean.)
    status, tally = tools.ctest("tsan", junit / "ctest-tsan.xml", "-L", "threads", "--no-tests=ignore")
    ok, summary = status == 0, tally.summary() if tally.total else "no tests labelled threads"
    # The lessons' tests marked `threads` (their servers run threads: lesson 11), against the tsan build of the
    # solutions. A data race ends such a server at once (TSAN_OPTIONS=halt_on_error=1, vocabulary.py).
    lessons = [tools.shown(lesson.tests) for lesson in _threaded_lessons()]
    if lessons:
        status, tally = tools.pytest([*lessons, "-m", "threads", "--build-dir",
                                      tools.shown(tools.build_dir("tsan")), "-rfE"], junit / "pytest-tsan.xml")
        ok = ok and status in (0, 5)
        summary += "; pytest " + (tally.summary() if status != 5 else "no tests marked threads")
    return "tsan", ok, summary


def _combined(first: int, second: int) -> int:
    """One pytest exit status for two runs: an error (2, 3, 4) if either had one, else 1 if either failed, else 5
    if neither collected a test, else 0."""
    for status in (first, second):
        if status not in (0, 1, 5):
            return status
    if 1 in (first, second):
        return 1
    return 5 if first == second == 5 else 0


def _have_xdist() -> bool:
    """Whether pytest-xdist is there to run the course's checks in parallel (the kqlab command installs Debian's
    python3-pytest-xdist where it can; without it, everything runs one test at a time, only slower)."""
    return importlib.util.find_spec("xdist") is not None


def _finish(results: list[tuple[str, bool, str]], started: float) -> int:
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    passed = all(ok for _, ok, _ in results)
    if passed:
        try:
            _last_duration().write_text(f"{int(time.monotonic() - started)}\n")
        except OSError:
            pass  # only the next estimate is worse for it
    parts = "; ".join(f"{part} {'' if ok else 'FAILED: '}{text}" for part, ok, text in results)
    print(f"\nkqlab test: {'PASSED' if passed else 'FAILED'} in {minutes}m{seconds:02d}s ({parts})")
    return 0 if passed else 1


COMMAND = Command("test", "the project's own test suite (what CI runs): build, compat's tests, every lesson's "
                  "solution, exercise and mutants, the site and the command", run, description=__doc__)
