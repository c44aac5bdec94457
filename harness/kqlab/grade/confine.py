"""The last step before a student's build or tests run: set the resource limits, then become the command.

    python3 -I confine.py [--trusted] --cpu S --memory BYTES --processes N --open-files N --file-size BYTES \
        -- COMMAND...

Each limit is set with setrlimit(2), soft and hard alike, so nothing the command starts can raise it again; then
this process execs COMMAND, which keeps the limits for itself and everything it starts. Refuses to run anything as
root: root ignores RLIMIT_NPROC, so a fork bomb would not stop. --trusted is for the grader's own side of a test
run (pytest, which may be root): the same limits but the process count, which keep what the student's servers
print from taking the grader's memory.

Standard library only, and no kqlab imports: it runs inside the sandbox, first, as `python3 -I` (isolated from the
environment). `--probe` runs no command: it prints which limits this system let it set, as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys

# The limit each option sets. RLIMIT_AS, not RLIMIT_DATA: the grade build has no AddressSanitizer, whose shadow
# memory reserves terabytes of address space (see sandbox.py).
LIMITS = {
    "cpu": "RLIMIT_CPU",  # seconds of CPU, per process; then SIGXCPU, then SIGKILL
    "memory": "RLIMIT_AS",  # bytes of address space, per process; then allocations fail
    "processes": "RLIMIT_NPROC",  # processes and threads of this user; then fork() fails with EAGAIN
    "open_files": "RLIMIT_NOFILE",  # descriptors, per process
    "file_size": "RLIMIT_FSIZE",  # bytes in one written file; then SIGXFSZ, or EFBIG where that is ignored
}

REFUSED_AS_ROOT = 125


def apply(values: dict[str, int]) -> dict[str, str]:
    """Sets each limit (and no core files); returns the ones this system refused, with why."""
    refused = {}
    for option, name in [*LIMITS.items(), ("core", "RLIMIT_CORE")]:
        value = values.get(option, 0)
        if option != "core" and not value:
            continue
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (AttributeError, ValueError, OSError) as problem:  # macOS refuses some, e.g. RLIMIT_AS
            refused[name] = str(problem) or type(problem).__name__
    return refused


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="confine.py")
    for option in LIMITS:
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, default=0)
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--trusted", action="store_true")
    parser.add_argument("command", nargs="*")
    options = parser.parse_args(arguments)
    if (os.getuid() == 0 or os.geteuid() == 0) and not options.trusted:
        print("confine: refusing to run a submission's code as root (root ignores the process limit)",
              file=sys.stderr)
        return REFUSED_AS_ROOT
    refused = apply({option: getattr(options, option) for option in LIMITS})
    if options.probe:
        print(json.dumps({"uid": os.getuid(), "refused": refused}))
        return 0
    if not options.command:
        parser.error("no command to run")
    try:
        os.nice(10)  # the teacher's machine stays usable while a class is graded
    except OSError:
        pass
    try:
        os.execvp(options.command[0], options.command)
    except OSError as problem:
        print(f"confine: {options.command[0]}: {problem.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
