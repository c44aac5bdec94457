"""The course's pictures: Graphviz sources rendered to SVGs that are committed, so that they show on GitHub too.

A diagram is a Graphviz file, docs/diagrams/NAME.dot, whose first line is a comment that captions it
(`// The event loop: ...`). A page shows it with a marker line where the picture goes, followed by the image line
that `./kqlab docs --refresh` writes:

    <!-- diagram: event-loop -->
    ![The event loop: wait for a batch, ...](../../docs/diagrams/event-loop.svg)

GitHub shows the image line; the site (site.py) shows the same SVG. Each SVG records the SHA-256 of the .dot it was
rendered from, in a comment, so a check can tell a stale picture without Graphviz, on any version of it:
harness/test_site.py fails when a marked diagram's SVG is missing or stale, or when a marker's image line is
missing or wrong, and `./kqlab docs --refresh` renders and rewrites what needs it.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .course import ROOT

DIAGRAMS = ROOT / "docs" / "diagrams"
MARKER = re.compile(r"^\s*<!--\s*diagram:\s*(?P<name>[\w.-]+)\s*-->\s*$")
IMAGE = re.compile(r"^!\[(?P<alt>(?:[^\]\\]|\\.)*)\]\((?P<target>[^)\s]+)\)\s*$")
STAMP = re.compile(r"<!-- kqlab-diagram source-sha256=(?P<hash>[0-9a-f]{64}) -->")
REFRESH = "./kqlab docs --refresh"


class DiagramError(Exception):
    """A diagram that could not be rendered: which, and what Graphviz said."""


@dataclass(frozen=True)
class Marker:
    markdown: Path
    line: int  # 1-based, the marker's line
    name: str
    image: str | None  # the line after the marker, if it is an image line


def source(name: str, diagrams: Path = DIAGRAMS) -> Path:
    return diagrams / f"{name}.dot"


def svg_of(dot: Path) -> Path:
    return dot.with_suffix(".svg")


def caption(dot: Path) -> str:
    """A diagram's caption: the first line of its file, a comment (`// The event loop`)."""
    first = dot.read_text(encoding="utf-8").splitlines()[0] if dot.stat().st_size else ""
    return first.removeprefix("//").strip() or dot.stem


def source_hash(dot: Path) -> str:
    return hashlib.sha256(dot.read_bytes()).hexdigest()


def render(dot: Path) -> str:
    """The SVG Graphviz draws of `dot`, stamped with the hash of its source."""
    try:
        done = subprocess.run(["dot", "-Tsvg", str(dot)], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise DiagramError("Graphviz (dot) is not installed: ./kqlab docs installs it as root on Debian, or: "
                           "sudo apt-get install graphviz") from None
    if done.returncode:
        raise DiagramError(f"{_shown(dot)}: Graphviz could not draw it:\n{done.stderr.strip()}")
    svg = done.stdout
    stamp = f"<!-- kqlab-diagram source-sha256={source_hash(dot)} -->\n"
    at = svg.find("<svg")  # after the XML declaration and doctype, which must come first
    return svg[:at] + stamp + svg[at:]


def stale(dot: Path) -> str | None:
    """What is wrong with a diagram's committed SVG, or None if it is the picture of its source as it is now."""
    svg = svg_of(dot)
    if not svg.is_file():
        return f"{_shown(dot)} has no picture {_shown(svg)}; {REFRESH} renders it"
    stamp = STAMP.search(svg.read_text(encoding="utf-8", errors="replace"))
    if stamp is None or stamp.group("hash") != source_hash(dot):
        return f"{_shown(svg)} is not the picture of {_shown(dot)} as it is now; {REFRESH} renders it again"
    return None


def image_line(markdown: Path, dot: Path) -> str:
    """The image line that shows a diagram in a Markdown file, on GitHub and on the site."""
    alt = caption(dot).replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    return f"![{alt}]({os.path.relpath(svg_of(dot), markdown.parent)})"


def shows(markdown: Path, line: str | None, dot: Path) -> bool:
    """Whether `line` is an image line of `markdown` that shows `dot`'s picture with its caption."""
    image = IMAGE.match(line or "")
    wanted = IMAGE.match(image_line(markdown, dot))
    return bool(image) and image.group("alt") == wanted.group("alt") and \
        (markdown.parent / image.group("target")).resolve() == svg_of(dot).resolve()


def markers(markdown: Path) -> list[Marker]:
    lines = markdown.read_text(encoding="utf-8").splitlines()
    found = []
    for index, line in enumerate(lines):
        marker = MARKER.match(line)
        if marker:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            found.append(Marker(markdown, index + 1, marker.group("name"),
                                following if IMAGE.match(following) else None))
    return found


def problems(markdown_files: list[Path], diagrams: Path = DIAGRAMS) -> list[str]:
    """Every marker that names no diagram or lacks its image line, and every diagram whose SVG is missing or stale."""
    found = []
    for markdown in markdown_files:
        for marker in markers(markdown):
            dot = source(marker.name, diagrams)
            where = f"{_shown(markdown)}:{marker.line}"
            if not dot.is_file():
                found.append(f"{where}: a diagram marker for {marker.name}, but there is no {_shown(dot)}")
            elif not shows(markdown, marker.image, dot):
                found.append(f"{where}: the diagram {marker.name} needs the image line "
                             f"{image_line(markdown, dot)!r} right after its marker; {REFRESH} writes it")
    for dot in sorted(diagrams.glob("*.dot")):
        problem = stale(dot)
        if problem:
            found.append(problem)
    return found


def refresh(markdown_files: list[Path], diagrams: Path = DIAGRAMS) -> list[Path]:
    """Renders every missing or stale SVG and writes each marker's image line; returns the files it changed."""
    changed = []
    for dot in sorted(diagrams.glob("*.dot")):
        if stale(dot):
            svg_of(dot).write_text(render(dot), encoding="utf-8")
            changed.append(svg_of(dot))
    for markdown in markdown_files:
        lines = markdown.read_text(encoding="utf-8").splitlines(keepends=True)
        edited = False
        for marker in reversed(markers(markdown)):  # from the end, so earlier line numbers stay right
            dot = source(marker.name, diagrams)
            if not dot.is_file() or shows(markdown, marker.image, dot):
                continue
            wanted = image_line(markdown, dot) + "\n"
            if marker.image is not None:
                lines[marker.line] = wanted  # the line after the marker: an image line, replaced
            else:
                lines.insert(marker.line, wanted)
            edited = True
        if edited:
            markdown.write_text("".join(lines), encoding="utf-8")
            changed.append(markdown)
    return changed


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
