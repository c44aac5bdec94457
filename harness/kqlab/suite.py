"""./kqlab test: the project's own suite, the one CI runs.

1. Build everything with the `default` preset (AddressSanitizer and UBSan), warnings as errors.
2. compat's doctest suite, through CTest.
3. The threaded tests (CTest label `threads`, and the lessons' pytest tests marked `threads`) again, built with the
   `tsan` preset, under ThreadSanitizer.
4. The course tests, through pytest: every lesson's tests against its solution, and the course's checks on itself
   (harness/test_course.py: every untouched exercise fails, every mutant is caught, gaps are gaps; test_site.py:
   the site builds with no Doxygen warning, its links resolve, quoted code matches its source; test_command.py:
   the kqlab command, with fixture exercises).

The last line says how it went, with the totals.
"""
from __future__ import annotations

import time

from . import course, tools
from .commands import Command


def run(args=None) -> int:
    del args
    started = time.monotonic()
    results: list[tuple[str, bool, str]] = []  # (part, passed, what it says)

    tools.banner("Build: preset default (Debug, AddressSanitizer + UndefinedBehaviorSanitizer), warnings are errors")
    if tools.configure("default", "KQLAB_WERROR=ON") or tools.build("default"):
        return _finish([("build", False, "the build failed (see above)")], started)
    results.append(("build", True, "ok"))

    junit = tools.build_dir("default") / "junit"
    tools.banner("compat's tests (CTest, preset default)")
    status, tally = tools.ctest("default", junit / "ctest.xml")
    results.append(("ctest", status == 0 and tally.total > 0, tally.summary()))

    tools.banner("The threaded tests under ThreadSanitizer (CTest -L threads, preset tsan)")
    if tools.configure("tsan", "KQLAB_WERROR=ON") or tools.build("tsan"):
        results.append(("tsan", False, "the build failed (see above)"))
    else:
        # --no-tests=ignore: having no test labelled `threads` is not a failure. (CTest says "No tests were found"
        # then; its exit status is 0 by default but 8 with --no-tests=error, so say which we mean.)
        status, tally = tools.ctest("tsan", junit / "ctest-tsan.xml", "-L", "threads", "--no-tests=ignore")
        results.append(("tsan", status == 0, tally.summary() if tally.total else "no tests labelled threads"))
        # The lessons' tests marked `threads` (their servers run threads: lesson 11), against the tsan build of
        # the solutions. A data race ends such a server at once (TSAN_OPTIONS=halt_on_error=1, vocabulary.py).
        lessons = [tools.shown(lesson.tests) for lesson in course.lessons() if lesson.tests.is_dir()]
        status, tally = tools.pytest([*lessons, "-m", "threads", "--build-dir", tools.shown(tools.build_dir("tsan")),
                                      "-rfE"], junit / "pytest-tsan.xml")
        results.append(("tsan pytest", status in (0, 5), tally.summary() if status != 5 else "no tests marked threads"))

    tools.banner("The course's tests (pytest): every solution passes, every untouched exercise fails, every mutant "
                 "is caught")
    status, tally = tools.pytest([tools.shown(course.HARNESS), "--build-dir", tools.shown(tools.build_dir("default")),
                                  "-rfE"], junit / "pytest.xml")
    if status == 5:
        results.append(("pytest", False, "no tests were collected"))
    else:
        results.append(("pytest", status == 0, tally.summary() + ("" if status in (0, 1) else f" (status {status})")))
    return _finish(results, started)


def _finish(results: list[tuple[str, bool, str]], started: float) -> int:
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    passed = all(ok for _, ok, _ in results)
    parts = "; ".join(f"{part} {'' if ok else 'FAILED: '}{text}" for part, ok, text in results)
    print(f"\nkqlab test: {'PASSED' if passed else 'FAILED'} in {minutes}m{seconds:02d}s ({parts})")
    return 0 if passed else 1


COMMAND = Command("test", "the project's own test suite (what CI runs): build, compat's tests, every lesson's "
                  "solution, exercise and mutants, the site and the command", run, description=__doc__)
