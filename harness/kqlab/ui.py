"""How the kqlab command talks: colour only on a terminal (never with NO_COLOR, never in CI's logs), problems as
one paragraph that says what happened and what to do, the raw output below it, and questions that have a safe
default when nobody is there to answer them.
"""
from __future__ import annotations

import os
import sys
import textwrap

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "cyan": "36"}
WIDTH = 100


def colour_enabled(stream=None) -> bool:
    """Colour on a terminal only, and never when NO_COLOR is set (https://no-color.org) or TERM is dumb."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def paint(text: str, *styles: str, stream=None) -> str:
    if not styles or not colour_enabled(stream):
        return text
    codes = ";".join(_CODES[style] for style in styles)
    return f"\033[{codes}m{text}\033[0m"


def fancy(stream=None) -> bool:
    """Block characters for bars where the terminal can show them; plain ASCII elsewhere."""
    stream = stream or sys.stdout
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return colour_enabled(stream) and encoding == "utf8"


def progress_bar(done: int, total: int, width: int = 30) -> str:
    filled = round(width * done / total) if total else width
    full, empty = ("█", "░") if fancy() else ("#", "-")
    bar = paint(full * filled, "green") + paint(empty * (width - filled), "dim")
    return f"[{bar}] {done}/{total} lessons done"


def wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(" ".join(text.split()), WIDTH, initial_indent=indent, subsequent_indent=indent)


def problem(what: str, advice: str, raw: str = "", *, title: str = "Problem") -> None:
    """One paragraph, what happened and what to do, then the raw output that shows it (if any), on stdout: the
    student reads them together."""
    print()
    print(paint(f"{title}:", "bold", "red"), wrap(f"{what} {advice}", " " * (len(title) + 2)).lstrip())
    if raw.strip():
        print(paint("\n--- the raw output ---", "dim"))
        print(raw.rstrip())
        print(paint("--- end of the raw output ---", "dim"))
    sys.stdout.flush()


def success(text: str) -> None:
    print(paint(text, "bold", "green"), flush=True)


def note(text: str) -> None:
    print(wrap(text), flush=True)


def ask(question: str, default: bool) -> bool:
    """A yes/no question. With nobody at a terminal to answer (stdin closed or not a terminal and empty), the
    default holds."""
    choices = "[Y/n]" if default else "[y/N]"
    print(f"{question} {choices} ", end="", flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if not answer:  # end of input: nobody is there
        print()
        return default
    answer = answer.strip().lower()
    return default if not answer else answer in ("y", "yes")
