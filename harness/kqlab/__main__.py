"""./kqlab: the course's one command. The bootstrap (./kqlab, POSIX sh) has found a Python with pytest and checked
the build tools; this reads the command line and hands over.

Each subcommand is a Command (commands.py) defined beside the code that runs it; COMMANDS lists them, in the
order `./kqlab help` shows them. Adding one is one line here.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import textwrap

from . import site, student, suite, trace, watch
from .commands import Command

COMMANDS: list[Command] = [
    student.MAP,
    student.LIST,
    student.CHECK,
    watch.COMMAND,
    student.HINT,
    student.RESET,
    student.SOLUTION,
    trace.COMMAND,
    site.COMMAND,
    suite.COMMAND,
]

# `./kqlab grade` and `./kqlab bench` parse their own command lines (options pass through untouched); they are
# listed here for `./kqlab help`, and imported only when asked for.
GRADE = Command("grade", "for teachers: build and test a class's submissions in sandboxes; a table, CSV, JUnit XML "
                "and an HTML report (./kqlab grade --help)", run=lambda options: 2)
BENCH = Command("bench", "the echo servers under load, side by side with raw epoll, and what kqlab's Linux layer "
                "costs: a report with plots in build/release/bench/ (./kqlab bench --help)", run=lambda options: 2)
OWN_PARSERS = {"grade": "grade.command", "bench": "bench"}

EPILOG = """\
Start with ./kqlab (the course map). Each command explains itself: ./kqlab COMMAND --help.
Timeouts in the tests scale with KQLAB_TIMEOUT_SCALE (e.g. KQLAB_TIMEOUT_SCALE=3 on a slow machine).
NO_COLOR=1 turns colour off; it is off anyway when the output is not a terminal."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="./kqlab", description="kqlab: a course in event-driven servers on BSD "
                                  "kqueue. With no command, the course map.", epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS + [BENCH, GRADE]:
        description = command.description or command.summary
        if "\n" not in description:
            description = textwrap.fill(description, 100)
        sub = commands.add_parser(command.name, help=command.summary, description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        command.arguments(sub)
        sub.set_defaults(run=command.run)
    commands.add_parser("help", help="this text, or a command's: ./kqlab help COMMAND").add_argument(
        "topic", nargs="?", help="a command")
    return top


def main(arguments: list[str]) -> int:
    for name, module_name in OWN_PARSERS.items():
        if arguments[:1] == [name] or arguments[:2] == ["help", name]:
            module = importlib.import_module(f".{module_name}", __package__)
            return module.main(arguments[1:] if arguments[0] == name else ["--help"])
    top = parser()
    names = [command.name for command in COMMANDS + [BENCH, GRADE]] + ["help"]
    if arguments and not arguments[0].startswith("-") and arguments[0] not in names:
        print(f"kqlab: there is no command '{arguments[0]}'. The commands: {', '.join(names)}. "
              f"./kqlab help says what each does.", file=sys.stderr)
        return 2
    options = top.parse_args(arguments or ["map"])
    if options.command == "help":
        if options.topic in names and options.topic != "help":
            top.parse_args([options.topic, "--help"])  # prints the command's help and exits
        top.print_help()
        return 0
    try:
        return options.run(options)
    except ValueError as problem:  # a lesson or gap that does not exist
        print(f"kqlab: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print()
        return 130


if __name__ == "__main__":
    # Line by line, also into a pipe (an editor's terminal, `| tee`, the tests): `watch` and the build's progress
    # must show as they happen, not when a buffer fills.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        # The reader went away (./kqlab list | head): nothing left to say. Point stdout at /dev/null so that
        # Python's last flush at exit does not fail again, and exit as a program killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)
