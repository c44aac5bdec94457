"""The course's site (./kqlab docs): it builds with zero Doxygen warnings, has a page for every lesson, in order,
linked to each other, and no internal link that leads nowhere; the code the lessons quote is the code that
compiles; every lesson shows a diagram of its own, whose committed SVG is the picture of its .dot; and a real
browser renders every page, at a desktop's width and a phone's, without errors, with the course's navigation,
its pictures loaded, its code blocks fitting and nothing sticking out.

The site is built once, into a temporary directory, by the same code as ./kqlab docs (kqlab/site.py).
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import pytest

from kqlab import browser, course, diagrams, mutants, site, snippets, theme

# ./kqlab test runs the course's checks in parallel (pytest-xdist, --dist loadgroup): this file's tests share
# state (a build tree or a site), so they all run in one worker, one after the other.
pytestmark = pytest.mark.xdist_group("site")

LESSONS = course.lessons()
NO_DOXYGEN = shutil.which("doxygen") is None or shutil.which("dot") is None
needs_doxygen = pytest.mark.skipif(NO_DOXYGEN, reason="Doxygen or Graphviz is not installed (./kqlab test installs "
                                   "them as root on Debian and Ubuntu: apt-get install doxygen graphviz)")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built; its html/ directory."""
    if NO_DOXYGEN:
        pytest.skip("Doxygen or Graphviz is not installed")
    output = tmp_path_factory.mktemp("site")
    try:
        index = site.build(output)
    except site.SiteError as error:
        pytest.fail(f"The site does not build:\n{error}", pytrace=False)
    return index.parent


# Links ------------------------------------------------------------------------------------------------------------

class _Links(html.parser.HTMLParser):
    """The ids a page defines and the links it makes (href, src, data)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name") and tag != "meta":
                self.ids.add(value)
            elif name in ("href", "src") or (tag == "object" and name == "data"):
                self.links.append(value)


def parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    return parser


def broken_links(html_dir: Path) -> list[str]:
    """Every internal link of every page that leads to no file, or to no such id in its page."""
    pages = {path: parse(path) for path in html_dir.glob("*.html")}
    broken = []
    for page, parsed in sorted(pages.items()):
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//") or link.startswith("javascript:"):
                continue  # external: not ours to check
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                broken.append(f"{page.name}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if parts.fragment not in ids and parts.fragment != "top":
                    broken.append(f"{page.name}: {link} (no id '{parts.fragment}' in {target.name})")
    return broken


@needs_doxygen
def test_every_internal_link_resolves(built: Path) -> None:
    broken = broken_links(built)
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


@needs_doxygen
def test_every_lesson_has_its_page_in_order(built: Path) -> None:
    index = (built / "index.html").read_text(encoding="utf-8")
    positions = []
    for number, lesson in enumerate(LESSONS):
        page = built / f"{site.page_label(lesson)}.html"
        assert page.exists(), f"no page for {lesson.name}"
        text = page.read_text(encoding="utf-8")
        assert lesson.title in text, f"{page.name} does not show the lesson's title"
        for section in lesson.sections()[1:]:
            anchor = f'id="{site.page_label(lesson)}-{site.slug(section)}"'
            assert anchor in text, f"{page.name} has no anchor for the section '{section}'"
        links = parse(page).links
        assert "index.html" in links, f"{page.name} has no link to the index"
        if number:
            assert f"{site.page_label(LESSONS[number - 1])}.html" in links, f"{page.name}: no link to the previous"
        if number + 1 < len(LESSONS):
            assert f"{site.page_label(LESSONS[number + 1])}.html" in links, f"{page.name}: no link to the next"
        positions.append(index.find(f'href="{site.page_label(lesson)}.html"'))
    assert all(position >= 0 for position in positions), "the index does not link every lesson"
    assert positions == sorted(positions), "the index lists the lessons out of order"


@needs_doxygen
def test_the_other_pages(built: Path) -> None:
    mistakes = (built / "mistakes.html").read_text(encoding="utf-8")
    for lesson in LESSONS:
        for mutant in mutants.of(lesson):
            assert mutant.name in mistakes and mutant.caught_by in mistakes, \
                f"the Common mistakes page does not list mutant {mutant.name} of {lesson.name}"
    inside = (built / "inside.html").read_text(encoding="utf-8")
    assert "knote_fdclose" in inside and "kqueue-inside.svg" in inside, \
        "the page How kqueue works inside lacks its text or its diagram"
    for lesson in LESSONS[:2]:
        assert 'href="inside.html' in (built / f"{site.page_label(lesson)}.html").read_text(encoding="utf-8"), \
            f"{lesson.name}'s page does not link to How kqueue works inside"
    portability = (built / "portability.html").read_text(encoding="utf-8")
    compat = (course.ROOT / "compat" / "README.md").read_text(encoding="utf-8")
    for deviation in re.findall(r"^\d+\. \*\*(.+?)\*\*", compat, re.MULTILINE):
        words = re.sub(r"`", "", deviation).split()[:3]
        assert " ".join(words).replace("&", "&amp;") in re.sub(r"<[^>]+>", "", portability), \
            f"the Portability page lacks compat's deviation '{deviation}'"
    for test, _, _ in site.freebsd_only_tests():
        assert test.split()[0] in portability, f"the Portability page lacks the macOS difference '{test}'"
    diagrams = (built / "diagrams.html").read_text(encoding="utf-8")
    for name in sorted(site.DIAGRAMS.glob("*.dot")):
        shown = f"docs-diagrams-{name.stem}.svg"
        assert shown in diagrams, f"the Diagrams page does not show {name.name}"
        assert (built / shown).stat().st_size > 1000, f"{name.name} made an empty picture"


@needs_doxygen
def test_api_reference_documents_the_headers(built: Path) -> None:
    namespace = (built / "namespacekqlab.html").read_text(encoding="utf-8")
    assert "describe" in namespace and "The whole event on one line" in namespace, \
        "lessons/common's contract comments are missing from the API reference"
    event_h = (built / "event_8h.html").read_text(encoding="utf-8")
    assert "Applies" in event_h and "EV_RECEIPT" in event_h, "compat's <sys/event.h> is missing its documentation"


# Quoted code ------------------------------------------------------------------------------------------------------

def test_quoted_code_matches_its_source() -> None:
    problems = site.check_snippets()
    assert not problems, "\n".join(problems)


def test_a_drifted_quote_is_caught_and_refreshed(tmp_path: Path) -> None:
    source = tmp_path / "server.cpp"
    source.write_text("int before;\n// [snippet: loop]\nfor (;;) {\n  wait();\n}\n// [end]\nint after;\n")
    text = tmp_path / "README.md"
    text.write_text("Text.\n\n<!-- snippet: server.cpp loop -->\n```cpp\nfor (;;) {\n  sleep();\n}\n```\n\n"
                    "```cpp\nint unquoted;\n```\n")
    problems = snippets.problems(text, tmp_path)
    assert len(problems) == 2, problems
    assert "differs from the source" in problems[0] and "names no source" in problems[1]
    assert snippets.refresh(text, tmp_path)
    assert "  wait();\n" in text.read_text() and len(snippets.problems(text, tmp_path)) == 1
    source.write_text(source.read_text().replace("// [end]\n", ""))
    with pytest.raises(snippets.SnippetError, match="has no // \\[end\\]"):
        snippets.refresh(text, tmp_path)


@needs_doxygen
def test_a_diagram_without_its_picture_is_caught_and_refreshed(tmp_path: Path) -> None:
    pictures = tmp_path / "diagrams"
    pictures.mkdir()
    (pictures / "loop.dot").write_text("// The loop: wait, dispatch\ndigraph loop { wait -> dispatch -> wait; }\n")
    text = tmp_path / "README.md"
    text.write_text("# A lesson\n\n<!-- diagram: loop -->\n\nText.\n\n<!-- diagram: nowhere -->\n")
    problems = diagrams.problems([text], pictures)
    assert any("needs the image line" in problem for problem in problems), problems
    assert any("there is no" in problem and "nowhere.dot" in problem for problem in problems), problems
    assert any("has no picture" in problem for problem in problems), problems
    changed = diagrams.refresh([text], pictures)
    assert set(changed) == {pictures / "loop.svg", text}
    assert "<!-- diagram: loop -->\n![The loop: wait, dispatch](diagrams/loop.svg)\n" in text.read_text()
    assert [problem for problem in diagrams.problems([text], pictures) if "nowhere" not in problem] == []
    (pictures / "loop.dot").write_text("// The loop: wait, dispatch\ndigraph loop { wait -> dispatch; }\n")
    assert any("not the picture of" in problem for problem in diagrams.problems([text], pictures))
    assert diagrams.refresh([text], pictures) == [pictures / "loop.svg"]


def test_every_lesson_shows_a_diagram_of_its_own() -> None:
    shown_by: dict[str, list[str]] = {}
    for lesson in LESSONS:
        names = [marker.name for marker in diagrams.markers(lesson.readme)]
        assert names, f"{lesson.readme.relative_to(course.ROOT)} shows no diagram (<!-- diagram: NAME -->)"
        for name in names:
            shown_by.setdefault(name, []).append(lesson.name)
    assert all(any(shown_by.get(name) == [lesson.name] for name in shown_by) for lesson in LESSONS), \
        f"a lesson whose only diagrams are another's too: {shown_by}"


# A course with a second lesson -------------------------------------------------------------------------------------

@needs_doxygen
def test_a_new_lesson_and_a_bench_report_appear_without_edits(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    lessons = tmp_path / "lessons"
    shutil.copytree(course.LESSONS / LESSONS[0].name, lessons / LESSONS[0].name)
    (tmp_path / "docs").symlink_to(site.DOCS)  # where the lesson's pictures are, as seen from its README
    fixture = lessons / "99-fixture"
    fixture.mkdir()
    (fixture / "README.md").write_text(
        "# Lesson 99: A fixture\n\nA lesson made by the site's test.\n\n## Its only section\n\n"
        f"Back to [the first lesson's loop](../{LESSONS[0].name}/README.md#how-the-pieces-fit).\n\n"
        "<!-- snippet: lessons/01-echo/echo_server.cpp event-loop -->\n```cpp\n```\n")
    (fixture / "fixture.cpp").write_text("int main() {}\n")
    snippets.refresh(fixture / "README.md")
    monkeypatch.setattr(course, "LESSONS", lessons)
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "report.md").write_text("# Benchmarks\n\n| server | requests/s |\n|---|---|\n| 01-echo | 12,345 |\n\n"
                                     "![Throughput](throughput.svg)\n\nRaw numbers: [results.csv](results.csv).\n")
    (bench / "throughput.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
                                          '<rect width="40" height="20" fill="#4a6fa5"/></svg>')
    (bench / "results.csv").write_text("server,requests\n01-echo,12345\n")
    monkeypatch.setattr(site, "BENCH_REPORTS", bench)
    index = site.build(tmp_path / "site")
    html_dir = index.parent
    assert not broken_links(html_dir)
    report = (html_dir / "bench-report.html").read_text(encoding="utf-8")
    assert "12,345" in report and 'href="bench-report.html"' in index.read_text(encoding="utf-8")
    assert list(html_dir.glob("*throughput.svg")), "the report's picture was not copied into the site"
    page = (html_dir / "lesson-99-fixture.html").read_text(encoding="utf-8")
    first = site.page_label(LESSONS[0])
    assert f'href="{first}.html"' in page, "the new lesson does not link back to the one before"
    assert f'href="{first}.html#{first}-how-the-pieces-fit"' in page, "a link to another lesson's section is lost"
    assert "for (;;) {" in re.sub(r"<[^>]+>", "", page), "the quoted code is not filled in from its source"
    assert 'href="lesson-99-fixture.html"' in (html_dir / f"{first}.html").read_text(encoding="utf-8")


def test_a_broken_link_fails_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lessons = tmp_path / "lessons"
    (lessons / "01-broken").mkdir(parents=True)
    (lessons / "01-broken" / "README.md").write_text(
        "# Lesson 01: Broken\n\nSee [nowhere](#no-such-section) and [a file](../../no-such-file.md).\n")
    monkeypatch.setattr(course, "LESSONS", lessons)
    with pytest.raises(site.SiteError) as error:
        site.build(tmp_path / "site")
    assert "#no-such-section" in str(error.value) and "no-such-file.md" in str(error.value)


# A real browser ---------------------------------------------------------------------------------------------------
# Every page of the course, at a desktop's width and a phone's, in a headless Chromium (kqlab/browser.py), served over
# HTTP as a web server would. KQLAB_SCREENSHOTS=DIR keeps a screenshot of each.

needs_chromium = pytest.mark.skipif(browser.executable() is None, reason="no Chromium to render the pages with: "
                                    + browser.INSTALL)
WIDTHS = {"desktop": 1280, "phone": 390}
PAGES = ["index", *(site.page_label(lesson) for lesson in LESSONS), "mistakes", "portability", "diagrams",
         *(["inside"] if (site.DOCS / "inside.md").exists() else []), "files"]

# What the page looks like to its reader, measured in the page.
INSPECT = """(() => {
  const width = document.documentElement.clientWidth;
  const scrolls = el => { for (let e = el.parentElement; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      if (['auto', 'scroll', 'hidden'].includes(style.overflowX) && e !== document.body &&
          e !== document.documentElement) return true; }
    return false; };
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
  const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const sticking_out = [...document.querySelectorAll('body *')].filter(el => visible(el) && !scrolls(el) &&
      el.getBoundingClientRect().right > width + 1).slice(0, 5).map(el =>
      `${name(el)} reaches ${Math.round(el.getBoundingClientRect().right)} px`);
  const code = [...document.querySelectorAll('div.contents div.fragment, div.contents pre')].filter(visible);
  return {
    theme: {toggle: !!document.querySelector('doxygen-awesome-dark-mode-toggle'),
            copy_buttons: document.querySelectorAll('doxygen-awesome-fragment-copy-button').length,
            fragments: document.querySelectorAll('div.contents div.fragment').length},
    width, page_width: document.documentElement.scrollWidth, sticking_out,
    navigation: [...document.querySelectorAll('#nav-tree a')].map(a => a.getAttribute('href')),
    diagrams: [...document.querySelectorAll('div.contents object, div.contents img')].map(el => ({
      source: el.getAttribute('data') || el.getAttribute('src'),
      loaded: el.tagName === 'IMG' ? el.complete && el.naturalWidth > 0
        : !!(el.contentDocument && el.contentDocument.documentElement.nodeName === 'svg'),
      shown: el.getBoundingClientRect().width > 40 && el.getBoundingClientRect().height > 20,
      inside: el.getBoundingClientRect().right <= width + 1})),
    code: code.map(el => ({first: el.textContent.trim().split('\\n')[0].slice(0, 60),
      cut: el.scrollWidth > el.clientWidth + 1, inside: el.getBoundingClientRect().right <= width + 1})),
  };
})()"""


@pytest.fixture(scope="session")
def served(built: Path) -> Iterator[str]:
    """The built site on an HTTP server of its own, on a free port of loopback: its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *arguments: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(built)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def chromium() -> Iterator[browser.Browser]:
    try:
        with browser.Browser.start() as started:
            yield started
    except browser.BrowserError as error:
        pytest.fail(f"Chromium is installed but could not be driven: {error}", pytrace=False)


@needs_chromium
@needs_doxygen
@pytest.mark.parametrize("width", WIDTHS, ids=list(WIDTHS))
@pytest.mark.parametrize("page", PAGES)
def test_page_in_a_browser(served: str, chromium: browser.Browser, page: str, width: str, tmp_path: Path) -> None:
    visit = chromium.visit(f"{served}/{page}.html", WIDTHS[width])
    kept = Path(os.environ.get("KQLAB_SCREENSHOTS") or tmp_path)
    kept.mkdir(parents=True, exist_ok=True)
    png = visit.screenshot(kept / f"{page}-{width}.png")
    seen = visit.evaluate(INSPECT)
    problems = [f"while loading: {problem}" for problem in visit.problems]
    wanted = [f"{site.page_label(lesson)}.html" for lesson in LESSONS] + ["mistakes.html", "portability.html",
                                                                          "diagrams.html"]
    missing = [href for href in wanted if href not in seen["navigation"]]
    if missing and page != "files":  # the API reference is outside the course: its tree stays folded
        problems.append(f"the side navigation lacks {', '.join(missing)}")
    for diagram in seen["diagrams"]:
        if not (diagram["loaded"] and diagram["shown"]):
            problems.append(f"the picture {diagram['source']} did not load or shows as nothing")
        elif not diagram["inside"]:
            problems.append(f"the picture {diagram['source']} is wider than the window")
    if page.startswith("lesson-") and not any("diagrams" in (diagram["source"] or "") for diagram in seen["diagrams"]):
        problems.append("the lesson shows no diagram")
    for block in seen["code"]:
        if not block["inside"]:
            problems.append(f"the code block '{block['first']}' is wider than the window")
        elif width == "desktop" and block["cut"]:
            problems.append(f"the code block '{block['first']}' needs scrolling sideways at {WIDTHS[width]} px")
    if theme.theme_dir() is not None:  # the theme's dark-mode toggle, and a copy button on every code block
        if not seen["theme"]["toggle"]:
            problems.append("no dark-mode toggle: is doxygen-awesome-css's script loaded?")
        if seen["theme"]["copy_buttons"] < seen["theme"]["fragments"]:
            problems.append(f"{seen['theme']['fragments']} code blocks, {seen['theme']['copy_buttons']} copy buttons")
    if seen["page_width"] > seen["width"] + 1:
        problems.append(f"the page is {seen['page_width']} px wide in a {seen['width']} px window: "
                        f"{'; '.join(seen['sticking_out']) or 'something sticks out'}")
    assert not problems, f"{page}.html at {WIDTHS[width]} px (screenshot: {png}):\n" + "\n".join(problems)
