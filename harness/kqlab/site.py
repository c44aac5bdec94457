"""./kqlab docs: the course's site, built with Doxygen into build/docs/html/ (or --output).

The lessons stay plain Markdown that reads well on GitHub. This writes Doxygen-ready copies of them into the build
tree, one page per lesson in course order, and pages made from what the project already knows:

- the landing page (docs/index.md, with the course map made from the lesson directories);
- one page per lesson from lessons/NN-topic/README.md: a label on each heading, GitHub-style links
  (`#section`, `../NN-topic/README.md#section`) turned into Doxygen links, "previous · index · next" at the top
  and bottom, and each quoted code block (snippets.py) filled from its source as it is now;
- "How kqueue works inside" (docs/inside.md): the kernel's side, which the lessons' rules follow from;
- "Common mistakes" (docs/mistakes.md, made from the lessons' rule registers by mistakes_page.py): every rule each
  lesson teaches, and the mutants and tests that prove it;
- "Portability" (docs/portability.md): sections of compat/README.md, included, and the FreeBSD-only behaviours
  that compat's tests skip on macOS, read from the tests;
- "Diagrams": every docs/diagrams/*.dot, as its committed SVG (diagrams.py: a page shows one with
  `<!-- diagram: NAME -->` and the image line after it, the same picture on GitHub and here);
- the benchmark report, build/release/bench/*.md, when `./kqlab bench` has written one;
- the API reference of compat/include, compat/src and lessons/common, from the headers' own comments
  (doxyfilter.py).

Doxygen runs with warnings as errors: a page it cannot make cleanly fails the build, with the warnings.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import course, diagrams, mistakes_page, snippets, theme, ui
from .commands import Command
from .course import ROOT, Lesson

DOCS = ROOT / "docs"
DIAGRAMS = diagrams.DIAGRAMS
DEFAULT_OUTPUT = ROOT / "build" / "docs"
BENCH_REPORTS = ROOT / "build" / "release" / "bench"
API_SOURCES = [ROOT / "compat" / "include" / "sys", ROOT / "compat" / "src", ROOT / "lessons" / "common"]

HTML_TAGS = {"a", "b", "br", "code", "dd", "details", "div", "dl", "dt", "em", "hr", "i", "img", "kbd", "li", "ol",
             "p", "pre", "span", "strong", "sub", "summary", "sup", "table", "td", "th", "tr", "tt", "u", "ul"}


class SiteError(Exception):
    """Why the site could not be built: every problem found, one a line, each saying where."""


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def page_label(lesson: Lesson) -> str:
    return f"lesson-{lesson.name}"


@dataclass
class Page:
    """A page of the site: where its Markdown comes from, and its Doxygen label."""

    source: Path  # the Markdown file the page is made from ("" for pages made from nothing but data)
    label: str
    title: str = ""
    anchors: dict[str, str] = field(default_factory=dict)  # GitHub slug -> Doxygen label, for its headings


class Site:
    def __init__(self, output: Path) -> None:
        self.output = output
        # The pages straight in `output`, which Doxygen strips from paths: in a directory of their own, that
        # directory would show among the API's files.
        self.pages_dir = output
        self.html_dir = output / "html"
        self.images_dir = output / "images"
        self.problems: list[str] = []
        self.lessons = course.lessons()
        self.diagrams = {path.stem: path for path in sorted(DIAGRAMS.glob("*.dot"))}
        self.diagrams_used: dict[str, list[str]] = {}
        self.pages: dict[Path, Page] = {}  # by source file, for links between pages
        for lesson in self.lessons:
            self._register(lesson.readme, page_label(lesson))
        # docs/inside.md, "How kqueue works inside", is shown once it is written.
        self.inside = DOCS / "inside.md" if (DOCS / "inside.md").exists() else None
        for name in ("index", "mistakes", "portability", "diagrams") + (("inside",) if self.inside else ()):
            self._register(DOCS / f"{name}.md", "index" if name == "index" else name)
        self.bench = bench_report()
        if self.bench is not None:
            self._register(self.bench, "bench-report", strict=False)
        # compat's own text is on the Portability page: a lesson's link to it goes there.
        self.pages[(ROOT / "compat" / "README.md").resolve()] = self.pages[(DOCS / "portability.md").resolve()]

    def _register(self, source: Path, label: str, strict: bool = True) -> None:
        page = Page(source, label)
        if source.exists():
            text = source.read_text(encoding="utf-8")
            page.title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), label)
            used: dict[str, int] = {}
            for heading in headings(text)[1:]:
                anchor = slug(heading)
                count = used.get(anchor, 0)
                used[anchor] = count + 1
                anchor = f"{anchor}-{count}" if count else anchor
                page.anchors[anchor] = f"{label}-{anchor}"
        elif strict:
            self.problems.append(f"{source}: missing")
        self.pages[source.resolve()] = page

    # Building ----------------------------------------------------------------------------------------------------

    def write_pages(self) -> list[Path]:
        """Writes every page's Doxygen-ready Markdown; returns them in the order of the site."""
        for page in self.pages_dir.glob("*.md"):
            page.unlink()
        if self.images_dir.exists():
            shutil.rmtree(self.images_dir)
        self.images_dir.mkdir(parents=True)
        written = [self._write(DOCS / "index.md", "", "")]
        for number, lesson in enumerate(self.lessons):
            previous = self.lessons[number - 1] if number else None
            following = self.lessons[number + 1] if number + 1 < len(self.lessons) else None
            written.append(self._write(lesson.readme, self._lesson_header(lesson, previous, following),
                                       self._navigation(previous, following)))
        for name in ("mistakes", "portability") + (("inside",) if self.inside else ()):
            written.append(self._write(DOCS / f"{name}.md", "[TOC]\n", ""))
        if self.bench is not None:
            written.append(self._write(self.bench, "", "", strict=False))
        written.append(self._write(DOCS / "diagrams.md", "", ""))  # last: it says where each diagram is shown
        return written

    def _write(self, source: Path, header: str, footer: str, strict: bool = True) -> Path:
        page = self.pages[source.resolve()]
        # The mistakes page is made from the lessons' rule registers: made afresh, it lists the lessons being built.
        text = mistakes_page.render() if source == mistakes_page.PAGE else source.read_text(encoding="utf-8")
        body = Converter(self, page, strict).convert(text)
        lines = body.split("\n")
        title_at = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
        if title_at is None:
            lines.insert(0, f"# {page.title} {{#{page.label}}}")
            title_at = 0
        if page.label == "index":  # the main page is Doxygen's "index" already, and takes no label
            lines[title_at] = re.sub(r"\s*\{#index\}$", "", lines[title_at])
        lines[title_at + 1:title_at + 1] = ["", header.rstrip("\n")] if header else []
        target = self.pages_dir / f"{page.label}.md"
        target.write_text("\n".join(lines).rstrip("\n") + "\n" + (f"\n{footer}\n" if footer else ""),
                          encoding="utf-8")
        return target

    def _lesson_header(self, lesson: Lesson, previous: Lesson | None, following: Lesson | None) -> str:
        files = ", ".join(f"<code>{_shown(path)}</code>" for path in lesson.program_files(lesson.exercise))
        return (f"{self._navigation(previous, following)}\n\n"
                f"<div class=\"lesson-files\">The exercise: {files}; <code>./kqlab</code> copies it to "
                f"<code>workspace/{lesson.name}/</code>, yours to edit. Check it with <code>./kqlab watch</code> "
                f"or <code>./kqlab check {lesson.number}</code>; a hint: <code>./kqlab hint {lesson.number}</code>."
                f"</div>\n\n[TOC]\n")

    def _navigation(self, previous: Lesson | None, following: Lesson | None) -> str:
        parts = []
        if previous is not None:
            parts.append(f"\\ref {page_label(previous)} \"‹ previous: {previous.title}\"")
        parts.append("\\ref index \"index\"")
        if following is not None:
            parts.append(f"\\ref {page_label(following)} \"next: {following.title} ›\"")
        return "<div class=\"lesson-nav\">" + " · ".join(parts) + "</div>"

    # What the placeholders in docs/*.md become --------------------------------------------------------------------

    def course_map(self) -> str:
        lines = []
        for lesson in self.lessons:
            lines.append(f"{lesson.number}. \\subpage {page_label(lesson)} — {escape_text(summary(lesson))}")
        return "\n".join(lines)

    def other_pages(self) -> str:
        lines = ["- \\subpage inside — what the kernel does with a registration: knotes, the active list, "
                 "kqueue_scan() and close(), the reasons behind the lessons' rules",
                 "- \\subpage mistakes — each classic mistake, the lesson that teaches it, the test that catches it",
                 "- \\subpage portability — FreeBSD, macOS, and kqlab's kqueue for Linux",
                 "- \\subpage diagrams — the event loop, a connection's life, kqueue and epoll side by side, and "
                 "more"]
        if self.inside is not None:
            lines.append("- \\subpage inside — how kqueue works inside, and how kqlab builds it on Linux")
        if self.bench is not None:
            lines.append("- \\subpage bench-report — how the lessons' servers perform")
        lines.append("- <a href=\"files.html\">The API reference</a>: compat/ (kqueue for Linux) and "
                     "lessons/common/, from their headers")
        return "\n".join(lines)

    def macos_table(self) -> str:
        rows = ["| FreeBSD (and kqlab on Linux) | macOS | Test |", "|---|---|---|"]
        for test, file, reason in freebsd_only_tests():
            rows.append(f"| {table_cell(test)} | {table_cell(reason or 'not so')} | <tt>{file}</tt> |")
        return "\n".join(rows)

    def diagram_list(self) -> str:
        parts = []
        for name, path in self.diagrams.items():
            caption = diagrams.caption(path)
            used = self.diagrams_used.get(name, [])
            where = ("Shown in " + ", ".join(f"\\ref {label}" for label in used) + ".") if used else ""
            heading = caption.split(": ", 1)[0]
            try:
                shown = self.images(path, diagrams.svg_of(path).name)
                image = f"![{escape_text(caption)}]({shown})\n\n{_full_size_link(shown)}"
            except SiteError as error:
                self.problems.append(str(error))
                image = ""
            parts.append(f"## {escape_text(heading)} {{#diagram-{name}}}\n\n{image}\n\n{where}\n")
        return "\n".join(parts)

    def include(self, argument: str) -> str:
        """`<!-- include: FILE "Section" -->`: that section of FILE (from the repository's root), its headings one
        level down."""
        found = re.fullmatch(r"(\S+)\s+\"(.+)\"", argument.strip())
        if not found:
            raise SiteError(f"include: expected FILE \"Section\", got {argument!r}")
        path = ROOT / found.group(1)
        text = path.read_text(encoding="utf-8")
        section = section_text(text, found.group(2))
        if section is None:
            raise SiteError(f"include: {found.group(1)} has no section \"{found.group(2)}\"")
        return section

    def navigation(self) -> list[tuple[str, str]]:
        """The side navigation: (title, page label), the index first, then the course in order."""
        entries = [("The course", "index")]
        for lesson in self.lessons:  # "Lesson 02: Registration: EV_SET, ..." -> "02 Registration"
            title = re.sub(r"^Lesson [0-9]+: ", "", self.pages[lesson.readme.resolve()].title).split(": ")[0]
            entries.append((f"{lesson.number:02d} {title}", page_label(lesson)))
        names = ("mistakes", "portability", "diagrams") + (("inside",) if self.inside else ())
        for page in (self.pages[(DOCS / f"{name}.md").resolve()] for name in names):
            entries.append((page.title, page.label))
        if self.bench is not None:
            entries.append(("Benchmarks", "bench-report"))
        return entries

    def images(self, source: Path, target: str) -> str:
        """Copies an image a page shows next to the site's other images; returns the name Doxygen finds it by."""
        path = (source.parent / target).resolve()
        if not path.is_file():
            raise SiteError(f"{source}: shows the image {target}, which does not exist")
        name = re.sub(r"[^\w.-]", "-", str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name))
        shutil.copy2(path, self.images_dir / name)
        return name

    def doxyfile(self, pages: list[Path]) -> Path:
        template = (DOCS / "Doxyfile.in").read_text(encoding="utf-8")
        sources = [str(path) for directory in API_SOURCES for path in sorted(directory.glob("*.h*"))]
        values = {
            "OUTPUT": str(self.output),
            "PAGES": " \\\n    ".join(f'"{page}"' for page in pages),
            "SOURCES": " \\\n    ".join(f'"{source}"' for source in sources),
            "ROOT": str(ROOT),
            "PAGES_DIR": str(self.pages_dir),
            "MAINPAGE": str(self.pages_dir / "index.md"),
            "FILTER": f"{sys.executable} {Path(__file__).with_name('doxyfilter.py')}",
            "IMAGES": str(self.images_dir),
            "WARNINGS": str(self.output / "warnings.log"),
            **theme.doxyfile_values(self.output, self.navigation()),
        }
        text = re.sub(r"@([A-Z_]+)@", lambda m: values.get(m.group(1), m.group(0)), template)
        path = self.output / "Doxyfile"
        path.write_text(text, encoding="utf-8")
        return path


def headings(text: str) -> list[str]:
    """The Markdown headings of a text, outside code blocks."""
    found, fence = [], None
    for line in text.splitlines():
        opening = re.match(r"^\s*(```+|~~~+)", line)
        if opening:
            fence = None if fence and line.strip().startswith(fence) else (fence or opening.group(1))
            continue
        if fence is None:
            heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if heading:
                found.append(heading.group(1))
    return found


def section_text(text: str, title: str) -> str | None:
    """The body of the section with this heading, up to the next heading of its level or higher, with its own
    headings one level down."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
        if heading and heading.group(2) == title:
            level = len(heading.group(1))
            end = next((j for j in range(index + 1, len(lines))
                        if re.match(rf"^#{{1,{level}}}\s", lines[j])), len(lines))
            body = lines[index + 1:end]
            return "\n".join(re.sub(r"^(#+)", lambda m: "#" * max(2, len(m.group(1)) - level + 2), line)
                             if re.match(r"^#+\s", line) else line for line in body)
    return None


def summary(lesson: Lesson) -> str:
    """The first sentence of the lesson's first paragraph."""
    text = lesson.readme.read_text(encoding="utf-8")
    paragraph = next((part for part in re.split(r"\n\s*\n", text) if part.strip() and not part.startswith("#")), "")
    sentence = re.split(r"(?<=[.!?])\s", " ".join(paragraph.split()), maxsplit=1)[0]
    return sentence


def freebsd_only_tests() -> list[tuple[str, str, str]]:
    """compat's test cases that hold on FreeBSD (and kqlab's layer) but are skipped on macOS, with the comment
    that says what macOS does: (test case, file, what macOS does)."""
    found = []
    pattern = re.compile(r'TEST_CASE\("((?:[^"\\]|\\.)*)"\s*\*\s*doctest::skip\(([^)]*)\)\)\s*\{[ \t]*(?://\s*(.*))?')
    for path in sorted((ROOT / "compat" / "tests").glob("test_*.cpp")):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            if "kMacOS" in match.group(2) or "kHave" in match.group(2):
                name = re.sub(r"\s*\(FreeBSD\)$", "", match.group(1))
                found.append((name, path.name, (match.group(3) or "").strip().removeprefix("macOS").lstrip(": ")))
    return found


def _full_size_link(image: str) -> str:
    """Under a diagram: a link to it alone, at its own size (a phone shrinks it to the screen's width)."""
    return f"<div class=\"diagram-link\"><a href=\"{image}\">the picture at full size</a></div>"


def bench_report() -> Path | None:
    """The benchmark report `./kqlab bench` wrote, if there is one."""
    if not BENCH_REPORTS.is_dir():
        return None
    reports = sorted(BENCH_REPORTS.glob("*.md"), key=lambda p: (p.stem.lower() not in ("report", "readme"), p.name))
    return reports[0] if reports else None


# Markdown for GitHub -> Markdown for Doxygen -----------------------------------------------------------------------

SPECIAL = re.compile(r"(?<!\\)([\\@])(?=[A-Za-z{}\\@])|(?<=\s)(#)(?=\w)|(?<=^)(#)(?=\w)")
TAG = re.compile(r"<(/?)([A-Za-z][\w-]*)")
LINK = re.compile(r"(!?)\[((?:[^\]\\]|\\.)*)\]\(([^)\s]+)\)")


def escape_text(text: str) -> str:
    """Escapes what Doxygen would read as a command, an unknown HTML tag or an explicit link, outside code spans."""
    parts = re.split(r"(`+[^`]*`+)", text)
    for index in range(0, len(parts), 2):
        part = SPECIAL.sub(lambda m: "\\" + (m.group(1) or m.group(2) or m.group(3)), parts[index])
        parts[index] = TAG.sub(lambda m: m.group(0) if m.group(2).lower() in HTML_TAGS else "\\" + m.group(0), part)
    return "".join(parts)


def table_cell(text: str) -> str:
    """Text for a Markdown table cell: no pipes that would split it, no newlines."""
    return escape_text(" ".join(text.split())).replace("|", "\\|")


def _code_span_with_pipe(match: re.Match) -> str:
    if "|" not in match.group(0):
        return match.group(0)
    code = match.group(0).strip("`").replace("\\|", "|")
    return "<tt>" + html.escape(code, quote=False).replace("|", "\\|") + "</tt>"


class Converter:
    """One page's Markdown, from GitHub's dialect to Doxygen's."""

    def __init__(self, site: Site, page: Page, strict: bool) -> None:
        self.site = site
        self.page = page
        self.strict = strict
        self.used: dict[str, int] = {}  # the heading anchors given so far, as GitHub counts repeats

    def problem(self, line: int, text: str) -> None:
        where = self.page.source.relative_to(ROOT) if self.page.source.is_relative_to(ROOT) else self.page.source
        if self.strict:
            self.site.problems.append(f"{where}:{line}: {text}")

    def convert(self, text: str) -> str:
        lines = text.split("\n")
        out: list[str] = []
        seen_title = False
        used = self.used
        quote: re.Match | None = None
        index = 0
        while index < len(lines):
            line = lines[index]
            number = index + 1
            fence = snippets.FENCE.match(line)
            if fence:
                end = next((j for j in range(index + 1, len(lines))
                            if lines[j].strip().startswith(fence.group("fence"))), len(lines) - 1)
                out += self.code_block(lines[index:end + 1], quote, number)
                quote = None
                index = end + 1
                continue
            comment = re.match(r"^\s*<!--\s*(.*?)\s*-->\s*$", line)
            if comment:
                out += self.directive(comment.group(1), number)
                if snippets.QUOTE.match(line):
                    quote = snippets.QUOTE.match(line)
                index += 1
                continue
            if line.strip():
                quote = None
            heading = re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
            if heading:
                if not seen_title and heading.group(1) == "#":
                    seen_title = True
                    out.append(f"# {escape_text(heading.group(2))} {{#{self.page.label}}}")
                else:
                    anchor = slug(heading.group(2))
                    count = used.get(anchor, 0)
                    used[anchor] = count + 1
                    anchor = f"{anchor}-{count}" if count else anchor
                    # No code spans in headings: Doxygen's table of contents would show their tags as text.
                    out.append(f"{heading.group(1)} {self.inline(heading.group(2).replace('`', ''), number)} "
                               f"{{#{self.page.label}-{anchor}}}")
            else:
                out.append(self.inline(line, number))
            index += 1
        return "\n".join(out)

    def directive(self, text: str, number: int) -> list[str]:
        """What an HTML comment becomes: most are notes for the author (dropped); a few ask for content."""
        name, _, argument = text.partition(":")
        name, argument = name.strip(), argument.strip()
        try:
            if name == "diagram":  # the image line after it shows the picture (diagrams.py checks it is there)
                if argument not in self.site.diagrams:
                    self.problem(number, f"no diagram docs/diagrams/{argument}.dot (there are: "
                                 f"{', '.join(self.site.diagrams)})")
                else:
                    self.site.diagrams_used.setdefault(argument, []).append(self.page.label)
                return []
            if name == "course-map":
                return [self.site.course_map()]
            if name == "pages":
                return [self.site.other_pages()]
            if name == "macos-differences":
                return [self.site.macos_table()]
            if name == "diagrams":
                return [self.site.diagram_list()]
            if name == "include":
                return [self.convert_included(self.site.include(argument))]
        except SiteError as error:
            self.problem(number, str(error))
        return []

    def convert_included(self, text: str) -> str:
        return self.convert(text)  # the same converter: its headings' anchors stay distinct from the page's

    def code_block(self, block: list[str], quote: re.Match | None, number: int) -> list[str]:
        if quote is None:
            return block
        try:
            region = snippets.source_of(snippets.Block(self.page.source, number - 1, number, number, "", [],
                                                       path=quote.group("path"), name=quote.group("name")))
        except snippets.SnippetError as error:
            self.problem(number, str(error))
            return block
        caption = (f"<div class=\"snippet-source\">{html.escape(region.path)}, lines {region.first_line}–"
                   f"{region.last_line}</div>")
        return [caption, block[0], *region.lines, block[-1]]

    def inline(self, line: str, number: int) -> str:
        if line.lstrip().startswith("|") and "`" in line:  # a table row: a pipe in code would split its cell
            line = re.sub(r"`[^`]*`", _code_span_with_pipe, line)
        pieces, last = [], 0
        for link in LINK.finditer(line):
            pieces.append(escape_text(line[last:link.start()]))
            pieces.append(self.link(link, number))
            last = link.end()
        pieces.append(escape_text(line[last:]))
        return "".join(pieces)

    def link(self, match: re.Match, number: int) -> str:
        image, text, target = match.group(1), match.group(2), match.group(3)
        shown = escape_text(text)
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            return f"{image}[{shown}]({target})"
        if image:
            try:
                name = self.site.images(self.page.source, target)
            except SiteError as error:
                self.problem(number, str(error))
                return shown
            if (self.page.source.parent / target).resolve().parent == DIAGRAMS.resolve():
                # A diagram shrinks to a phone's width: a link opens it at its own size.
                return f"![{shown}]({name})\n\n{_full_size_link(name)}"
            return f"![{shown}]({name})"
        path_part, _, fragment = target.partition("#")
        if path_part:
            resolved = (self.page.source.parent / path_part).resolve()
            page = self.site.pages.get(resolved)
            if page is None:
                if not resolved.exists():
                    self.problem(number, f"a link to {path_part}, which does not exist")
                    return shown
                relative = os.path.relpath(resolved, self.site.html_dir)
                return f"[{shown}]({relative})"
        else:
            page = self.page
        if fragment:
            anchor = page.anchors.get(fragment)
            if anchor is None:
                self.problem(number, f"a link to #{fragment}, which is no heading of "
                             f"{page.source.relative_to(ROOT) if page.source.is_relative_to(ROOT) else page.source}")
                return shown
            return f"[{shown}](#{anchor})"
        return f"[{shown}](@ref {page.label})"


# Running Doxygen ---------------------------------------------------------------------------------------------------

def check_snippets() -> list[str]:
    """What is wrong with the quoted code and the diagrams of the lessons and docs/ (both fixed by --refresh)."""
    problems = []
    for markdown in markdown_files():
        problems += snippets.problems(markdown)
    return problems + diagrams.problems(markdown_files())


def markdown_files() -> list[Path]:
    return [lesson.readme for lesson in course.lessons()] + sorted(DOCS.glob("*.md"))


def refresh_snippets() -> list[Path]:
    """Copies each quoted region from its source, renders each stale diagram and writes each marker's image line;
    returns the files changed."""
    changed = [markdown for markdown in markdown_files() if snippets.refresh(markdown)]
    return changed + [path for path in diagrams.refresh(markdown_files()) if path not in changed]


def build(output: Path = DEFAULT_OUTPUT) -> Path:
    """Builds the site into output/html; returns its index page. SiteError says why it could not."""
    problems = check_snippets()
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    site = Site(output)
    pages = site.write_pages()
    problems += site.problems
    if problems:
        raise SiteError("\n".join(problems))
    doxyfile = site.doxyfile(pages)
    if site.html_dir.exists():
        shutil.rmtree(site.html_dir)
    warnings = output / "warnings.log"
    warnings.unlink(missing_ok=True)
    try:
        done = subprocess.run(["doxygen", str(doxyfile)], cwd=output, capture_output=True, text=True)
    except FileNotFoundError:
        raise SiteError("doxygen is not installed. ./kqlab docs installs it (as root on Debian or Ubuntu), or: "
                        "sudo apt-get install doxygen graphviz") from None
    logged = warnings.read_text(encoding="utf-8", errors="replace").strip() if warnings.exists() else ""
    if done.returncode or logged:
        raise SiteError(f"Doxygen reported problems (warnings are errors; exit status {done.returncode}):\n"
                        f"{logged or done.stderr or done.stdout}")
    return site.html_dir / "index.html"


def docs(args: argparse.Namespace) -> int:
    if args.refresh:
        try:
            changed = refresh_snippets()
        except (snippets.SnippetError, diagrams.DiagramError) as error:
            ui.problem(str(error), "Fix the marker or the quote, then run ./kqlab docs --refresh again.",
                       title="Snippet error")
            return 1
        for path in changed:
            print(f"refreshed {path.relative_to(ROOT)}")
        if not changed:
            print("every quoted code block already matches its source, and every diagram its .dot")
    if args.check:
        problems = check_snippets()
        for problem in problems:
            print(problem)
        if not problems:
            print("Every quoted code block matches its source, and every diagram its .dot.")
        return 1 if problems else 0
    # The diagrams are committed SVGs: only --refresh needs Graphviz, to draw one whose .dot changed.
    if shutil.which("doxygen") is None:
        ui.problem("The site needs Doxygen, and this machine lacks it.",
                   "Run ./kqlab docs as root on Debian or Ubuntu to install it, or: sudo apt-get install doxygen "
                   "doxygen-awesome-css (macOS: brew install doxygen).", title="Missing tools")
        return 1
    if theme.theme_dir() is None:
        print(f"(Without doxygen-awesome-css the site keeps Doxygen's own look: {theme.INSTALL}.)")
    output = Path(args.output) if args.output else DEFAULT_OUTPUT
    print(f"Building the course's site with Doxygen into {_shown(output)}/html/ ...", flush=True)
    try:
        index = build(output)
    except SiteError as error:
        ui.problem("The site could not be built.", "Each line below says where and why; quoted code that "
                   "drifted from its source is fixed by ./kqlab docs --refresh.", str(error), title="Docs error")
        return 1
    ui.success(f"The site is ready: {index}")
    print(f"Open it in a browser: file://{index}")
    return 0


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--refresh", action="store_true",
                        help="first copy each quoted code region from its source into the lessons' README.md, "
                        "and render each diagram whose .dot changed to its committed SVG")
    parser.add_argument("--check", action="store_true",
                        help="only check that every quoted code block matches its source and every diagram's SVG "
                        "its .dot (no site)")
    parser.add_argument("--output", metavar="DIR", help=f"where to build (default: {_shown(DEFAULT_OUTPUT)})")


COMMAND = Command("docs", "build the course's site (HTML, with Doxygen) and print where its index page is", docs,
                  _arguments, "Builds the course's site with Doxygen (warnings are errors) into build/docs/html/, or "
                  "--output DIR/html/, and prints the path of its index page.")
