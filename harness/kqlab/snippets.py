"""Code in the lessons' text that cannot drift from the code that compiles.

A source file marks a region it lends to the text with two comment lines:

    // [snippet: event-loop]
    void EchoServer::run() {
      ...
    }
    // [end]

and a Markdown file quotes it with an HTML comment (invisible on GitHub and in the site) right before a fenced
code block, naming the file from the repository's root and the region:

    <!-- snippet: lessons/01-echo/echo_server.cpp event-loop -->
    ```cpp
    void EchoServer::run() {
    ...
    ```

`./kqlab docs --refresh` rewrites every such block from its source; the site is built from the sources
themselves; harness/test_site.py fails when a block and its source disagree. A C or C++ block that quotes no
source file (a man page's prototype, say) says so, with the reason: `<!-- snippet: none, the kqueue(2) prototype -->`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .course import ROOT

START = re.compile(r"^\s*//\s*\[snippet:\s*([\w.-]+)\s*\]\s*$")  # a marker is a line of its own
END = re.compile(r"^\s*//\s*\[end\]\s*$")
QUOTE = re.compile(r"^\s*<!--\s*snippet:\s*(?P<path>\S+)\s+(?P<name>[\w.-]+)\s*-->\s*$")
UNQUOTED = re.compile(r"^\s*<!--\s*snippet:\s*none\b[\s,:;-]*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<info>[\w+#-]*)")
CODE_LANGUAGES = {"c", "cpp", "c++", "cc", "cxx", "h", "hpp"}


class SnippetError(Exception):
    """A marker or a quote that does not work: says which file, which line, and what to do."""


@dataclass(frozen=True)
class Region:
    path: str  # from the repository's root
    name: str
    first_line: int  # 1-based, the region's first line of code (after the marker)
    lines: tuple[str, ...]

    @property
    def last_line(self) -> int:
        return self.first_line + len(self.lines) - 1


def regions(path: Path, root: Path = ROOT) -> dict[str, Region]:
    """The regions a source file marks, by name."""
    found: dict[str, Region] = {}
    shown = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    open_name, open_at, body = None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        start, end = START.search(line), END.search(line)
        if start:
            if open_name:
                raise SnippetError(f"{shown}:{number}: snippet '{start.group(1)}' starts inside snippet "
                                   f"'{open_name}' (line {open_at}); end that one first with // [end].")
            if start.group(1) in found:
                raise SnippetError(f"{shown}:{number}: a second snippet named '{start.group(1)}'.")
            open_name, open_at, body = start.group(1), number, []
        elif end:
            if not open_name:
                raise SnippetError(f"{shown}:{number}: // [end] with no // [snippet: NAME] before it.")
            found[open_name] = Region(shown, open_name, open_at + 1, tuple(body))
            open_name = None
        elif open_name:
            body.append(line)
    if open_name:
        raise SnippetError(f"{shown}:{open_at}: snippet '{open_name}' has no // [end].")
    return found


@dataclass
class Block:
    """A fenced code block in a Markdown file, and what it quotes."""

    markdown: Path
    marker_line: int  # 1-based line of the <!-- snippet --> comment (0: none)
    first_line: int  # 1-based line of the opening fence
    last_line: int  # 1-based line of the closing fence
    info: str  # the fence's language
    body: list[str]  # without the fence's indentation (a block in a list item is indented)
    indent: str = ""
    path: str = ""  # quoted file, from the repository's root ("" if none)
    name: str = ""  # quoted region
    reason: str = ""  # why a C/C++ block quotes nothing


def blocks(markdown: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, each with the quote comment right before it, if any."""
    lines = markdown.read_text(encoding="utf-8").splitlines()
    found = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        closing = next((j for j in range(index + 1, len(lines))
                        if lines[j].strip().startswith(fence.group("fence"))
                        and not lines[j].strip().strip(fence.group("fence")[0])), None)
        if closing is None:
            raise SnippetError(f"{markdown}:{index + 1}: a code block that is never closed.")
        indent = fence.group("indent")
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip()
                for line in lines[index + 1:closing]]
        block = Block(markdown, 0, index + 1, closing + 1, fence.group("info").lower(), body, indent)
        previous = index - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        if previous >= 0:
            quote, unquoted = QUOTE.match(lines[previous]), UNQUOTED.match(lines[previous])
            if quote:
                block.marker_line, block.path, block.name = previous + 1, quote.group("path"), quote.group("name")
            elif unquoted:
                block.marker_line, block.reason = previous + 1, unquoted.group("reason") or "?"
        found.append(block)
        index = closing + 1
    return found


def source_of(block: Block, root: Path = ROOT) -> Region:
    """The region a block quotes, read from its source now."""
    where = f"{_shown(block.markdown, root)}:{block.marker_line}"
    path = root / block.path
    if not path.is_file():
        raise SnippetError(f"{where}: quotes {block.path}, which does not exist.")
    found = regions(path, root)
    if block.name not in found:
        raise SnippetError(f"{where}: quotes snippet '{block.name}' of {block.path}, which marks "
                           f"{', '.join(sorted(found)) or 'none'}. Mark it there: // [snippet: {block.name}] ... "
                           f"// [end].")
    return found[block.name]


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def problems(markdown: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with a Markdown file's code blocks: a quote that differs from its source, a quote of
    nothing, or a C/C++ block that says neither what it quotes nor why it quotes nothing."""
    found = []
    try:
        all_blocks = blocks(markdown)
    except SnippetError as error:
        return [str(error)]
    for block in all_blocks:
        where = f"{_shown(markdown, root)}:{block.first_line}"
        if block.path:
            try:
                region = source_of(block, root)
            except SnippetError as error:
                found.append(str(error))
                continue
            if list(region.lines) != block.body:
                found.append(f"{where}: the block quoting {block.path} [{block.name}] differs from the source "
                             f"(lines {region.first_line}-{region.last_line}). ./kqlab docs --refresh copies the "
                             f"source into it.")
        elif block.info in CODE_LANGUAGES and not block.reason:
            found.append(f"{where}: a {block.info} block that names no source. Quote the code that compiles "
                         f"(<!-- snippet: PATH NAME --> before the block, // [snippet: NAME] ... // [end] in the "
                         f"source), or say why it quotes none: <!-- snippet: none, REASON -->.")
    return found


def refresh(markdown: Path, root: Path = ROOT) -> bool:
    """Rewrites every quoting block of a Markdown file from its source. True if the file changed."""
    lines = markdown.read_text(encoding="utf-8").splitlines(keepends=True)
    changed = False
    for block in reversed(blocks(markdown)):  # from the end, so earlier line numbers stay right
        if not block.path:
            continue
        region = source_of(block, root)
        if list(region.lines) != block.body:
            lines[block.first_line:block.last_line - 1] = [(block.indent + line if line else line) + "\n"
                                                           for line in region.lines]
            changed = True
    if changed:
        markdown.write_text("".join(lines), encoding="utf-8")
    return changed
