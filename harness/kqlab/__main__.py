"""./kqlab: the course's one command. The bootstrap (./kqlab, POSIX sh) has found a Python with pytest and checked
the build tools; this reads the command line and hands over."""
from __future__ import annotations

import sys

from . import bench, student, suite

USAGE = """\
usage: ./kqlab [COMMAND]

  (nothing)       the course map: each lesson, how far you are, and what to do next
  check [N]       build your copy of lesson N (default: the one you are on) and run its tests
  hint [N [GAP]]  a hint for the first gap still open in your copy of lesson N (or for TODO(GAP))
  reset N         a fresh copy of lesson N's exercise in workspace/ (yours is moved aside, not deleted)
  test            the project's own test suite (what CI runs): build, compat's tests, every lesson's
                  solution, exercise and mutants
  bench [--quick] the echo servers under load, side by side with raw epoll, and what kqlab's Linux layer
                  costs: a report with plots in build/release/bench/ (a few minutes; --quick: seconds;
                  ./kqlab bench --help for more)
  help            this text

Timeouts in the tests scale with KQLAB_TIMEOUT_SCALE (e.g. KQLAB_TIMEOUT_SCALE=3 on a slow machine)."""


def main(arguments: list[str]) -> int:
    command, rest = (arguments[0], arguments[1:]) if arguments else ("map", [])
    try:
        if command == "map" and not rest:
            return student.course_map()
        if command == "check" and len(rest) <= 1:
            return student.check(rest[0] if rest else None)
        if command == "hint" and len(rest) <= 2:
            return student.hint(*(rest + [None, None])[:2])
        if command == "reset" and len(rest) <= 1:
            return student.reset(rest[0] if rest else None)
        if command == "test" and not rest:
            return suite.run()
        if command == "bench":
            return bench.main(rest)
    except ValueError as problem:  # a lesson or gap that does not exist
        print(f"kqlab: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if command in ("help", "-h", "--help"):
        print(USAGE)
        return 0
    print(f"kqlab: I do not know '{' '.join(arguments)}'.\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
