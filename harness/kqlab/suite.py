"""./kqlab test: the project's own suite, the one CI runs.

1. Build everything with the `default` preset (AddressSanitizer and UBSan), warnings as errors.
2. compat's doctest suite, through CTest.
3. Every lesson's tests against its solution, through pytest, one at a time (they measure time and CPU). They mostly
   wait on sockets, so meanwhile, at low priority, the `tsan` preset builds what runs under ThreadSanitizer (not the
   whole tree: the CMake target kqlab_threaded and lesson 11's solution) and build/default builds the mutants.
4. The threaded tests (CTest label `threads`, and the lessons' pytest tests marked `threads`) under ThreadSanitizer.
5. The course's checks on itself (harness/test_course.py: every untouched exercise fails, every mutant is caught,
   gaps are gaps; test_site.py: the site builds with no Doxygen warning, its links resolve, quoted code matches its
   source; test_command.py: the kqlab command, with fixture exercises): those that build in build/default one at a
   time, then the others in parallel with pytest-xdist, one worker per CPU.

The last line says how it went, with the totals.
"""
from __future__ import annotations

import importlib.util
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
    tools.banner("compat's tests (CTest, preset default)")
    status, tally = tools.ctest("default", junit / "ctest.xml")
    results.append(("ctest", status == 0 and tally.total > 0, tally.summary()))

    # While the lessons' tests run one at a time (they mostly wait on sockets), the TSan build and the mutants build
    # beside them, at low priority: the tests' servers get a CPU whenever they want one, the compilers the rest.
    tools.banner("Building, in the background while the lessons' tests run: the threaded programs under "
                 "ThreadSanitizer (preset tsan) and the mutants (build/default/mutants)")
    background = _Background()
    background.start()

    tools.banner("The course's tests (pytest): every solution passes, every untouched exercise fails, every mutant "
                 "is caught")
    build = ["--build-dir", tools.shown(tools.build_dir("default")), "-rfE"]
    # The lessons' tests first, one at a time: they measure time and CPU.
    lessons = [tools.shown(lesson.tests) for lesson in course.lessons()]
    status, tally = tools.pytest([*lessons, *build], junit / "pytest-lessons.xml")
    background.join()

    tools.banner("The threaded tests under ThreadSanitizer (CTest -L threads, preset tsan)")
    results.append(_threaded_tests(background.tsan_build, junit))

    tools.banner("The course's checks on itself: exercises fail, mutants are caught, the site, the command")
    # With them the checks that build in build/default beside the mutants (SERIAL_CHECKS), one at a time, after the
    # mutants' build is done. Then the others, in parallel (pytest-xdist): mutants and exercises are independent
    # runs, each needing only to fail; a file whose tests share state keeps them in one worker (its xdist_group).
    serial = [tools.shown(course.HARNESS / name) for name in SERIAL_CHECKS]
    more, more_tally = tools.pytest([*serial, *build], junit / "pytest-serial.xml")
    status, tally = _combined(status, more), tally.merged(more_tally)
    checks = [tools.shown(path) for path in sorted(course.HARNESS.glob("test_*.py")) if path.name not in SERIAL_CHECKS]
    parallel = ["-n", str(tools.jobs()), "--dist", "loadgroup"] if _have_xdist() else []
    more, more_tally = tools.pytest([*checks, *build, *parallel], junit / "pytest-course.xml")
    status, tally = _combined(status, more), tally.merged(more_tally)
    if status == 5:
        results.append(("pytest", False, "no tests were collected"))
    else:
        results.append(("pytest", status == 0, tally.summary() + ("" if status in (0, 1) else f" (status {status})")))
    return _finish(results, started)


# Checks that configure and build in build/default, creating and deleting fixture workspaces that CMake then looks
# for (test_grade_platforms.py: its Classroom run of ./kqlab check): run beside test_course's mutant builds in the
# same tree, they would make its regeneration fail.
SERIAL_CHECKS = ("test_command.py", "test_grade_platforms.py")


class _Background(threading.Thread):
    """Builds what the later steps need while the lessons' tests run: the tsan tree's threaded programs, then the
    mutants. Its output is kept, and shown only if a build fails (interleaved with the tests' it would be noise)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.tsan_build: tuple[int, str] = (1, "not built")  # the exit status and output of the TSan build

    def run(self) -> None:
        try:
            self.tsan_build = _build_threaded()
            # The mutants' test (harness/test_course.py) builds them too, and finds them done: a failure is its to
            # report, with the mutant's name.
            mutants.build_all(tools.build_dir("default"), nice=True)
        except Exception as problem:  # shown, not lost in a thread: the later steps still run and report
            self.tsan_build = (1, f"{self.tsan_build[1]}\nthe background build failed: {problem!r}")


def _build_threaded() -> tuple[int, str]:
    """Configures the tsan tree and builds only what runs under ThreadSanitizer: the programs of the CTest tests
    labelled `threads` (the CMake target kqlab_threaded) and the solutions of the lessons whose pytest tests are marked
    `threads`."""
    nice = ["nice", "-n", "15"]
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
