"""What a kqlab subcommand is. Each module that offers one defines a Command next to the code that runs it, and
__main__.py lists them: adding a subcommand is one line there.

    COMMAND = Command("bench", "measure the lessons' servers and write a report", run=main, arguments=options)

`arguments` adds the subcommand's options to its argparse parser (so `./kqlab bench --help` works); `run` gets
the parsed arguments and returns the exit status.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


@dataclass(frozen=True)
class Command:
    name: str  # what follows ./kqlab
    summary: str  # one line for ./kqlab help
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    description: str = ""  # more, for ./kqlab NAME --help (the summary if empty)
