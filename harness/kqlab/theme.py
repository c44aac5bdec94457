"""The site's look and its side navigation, for site.py: Debian's doxygen-awesome-css (sidebar-only, with its
dark-mode toggle, copy buttons on code blocks and links on paragraphs' headings), then docs/kqlab.css.

Doxygen's header and layout differ from version to version, so they are not committed: this asks the installed
Doxygen for its own (`doxygen -w html`, `doxygen -l`) and changes only what the site needs, into the build tree:

- the header loads the theme's scripts and starts them;
- the layout's navigation index is the course, as site.py lists it: the index, the lessons in order, Common
  mistakes, Portability, Diagrams, ... and no tabs of namespaces, classes and files (Doxygen's side navigation
  shows what that index holds). The API reference stays one link on the index page.

Without the theme (it is Debian's package doxygen-awesome-css; ./kqlab installs it as root on Debian), the site
keeps Doxygen's own look, with docs/kqlab.css, and `./kqlab docs` says how to get it.
"""
from __future__ import annotations

import os
import re
import subprocess
from html import escape
from pathlib import Path

from .course import ROOT

STYLESHEET = ROOT / "docs" / "kqlab.css"
THEME_PLACES = [Path("/usr/share/doxygen-awesome-css"), Path("/usr/local/share/doxygen-awesome-css"),
                Path("/opt/homebrew/share/doxygen-awesome-css")]
THEME_CSS = ["doxygen-awesome.css", "doxygen-awesome-sidebar-only.css",
             "doxygen-awesome-sidebar-only-darkmode-toggle.css"]
# Each script of the theme, and the class whose init() starts it.
THEME_SCRIPTS = {"doxygen-awesome-darkmode-toggle.js": "DoxygenAwesomeDarkModeToggle",
                 "doxygen-awesome-fragment-copy-button.js": "DoxygenAwesomeFragmentCopyButton",
                 "doxygen-awesome-paragraph-link.js": "DoxygenAwesomeParagraphLink"}
INSTALL = "sudo apt-get install doxygen-awesome-css (./kqlab docs installs it as root on Debian)"


def theme_dir() -> Path | None:
    """Where doxygen-awesome-css is installed (KQLAB_DOXYGEN_AWESOME names another place), or None."""
    places = ([Path(os.environ["KQLAB_DOXYGEN_AWESOME"])] if os.environ.get("KQLAB_DOXYGEN_AWESOME") else []) + \
        THEME_PLACES
    return next((place for place in places
                 if all((place / name).is_file() for name in THEME_CSS + list(THEME_SCRIPTS))), None)


def doxyfile_values(output: Path, navigation: list[tuple[str, str]]) -> dict[str, str]:
    """Writes the header and layout into `output`; returns the Doxyfile's values for the look. `navigation`: the
    side navigation's entries, (title, Doxygen label of the page), in order; the first is the main page."""
    theme = theme_dir()
    stylesheets = [theme / name for name in THEME_CSS] if theme else []
    scripts = [theme / name for name in THEME_SCRIPTS] if theme else []
    header, layout = output / "header.html", output / "DoxygenLayout.xml"
    _doxygen(["-w", "html", str(header), str(output / "footer.html"), str(output / "doxygen-default.css")], output)
    header.write_text(_with_scripts(header.read_text(encoding="utf-8"), scripts), encoding="utf-8")
    _doxygen(["-l", str(layout)], output)
    layout.write_text(_course_navigation(layout.read_text(encoding="utf-8"), navigation), encoding="utf-8")
    return {
        "HEADER": str(header),
        "LAYOUT": str(layout),
        "STYLESHEETS": " \\\n    ".join(f'"{path}"' for path in [*stylesheets, STYLESHEET]),
        "EXTRA_FILES": " \\\n    ".join(f'"{path}"' for path in scripts),
    }


def _doxygen(arguments: list[str], where: Path) -> None:
    done = subprocess.run(["doxygen", *arguments], cwd=where, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"doxygen {' '.join(arguments)}: {done.stderr.strip() or done.stdout.strip()}")


def _with_scripts(header: str, scripts: list[Path]) -> str:
    """Doxygen's header, loading the theme's scripts and starting each (the theme's own instructions)."""
    if not scripts:
        return header
    tags = [f'<script type="text/javascript" src="$relpath^{path.name}"></script>' for path in scripts]
    starts = "\n".join(f"  {THEME_SCRIPTS[path.name]}.init();" for path in scripts)
    tags.append(f'<script type="text/javascript">\n{starts}\n</script>')
    return header.replace("</head>", "\n".join(tags) + "\n</head>", 1)


def _course_navigation(layout: str, entries: list[tuple[str, str]]) -> str:
    """Doxygen's layout with the course as its navigation index."""
    tabs = [f'    <tab type="mainpage" visible="yes" title="{escape(entries[0][0])}"/>']
    tabs += [f'    <tab type="user" visible="yes" url="@ref {escape(label)}" title="{escape(title)}"/>'
             for title, label in entries[1:]]
    # The API reference's indexes are still written (the index page links to its list of files), only not shown.
    tabs += ['    <tab type="files" visible="no" title=""><tab type="filelist" visible="no" title=""/></tab>']
    navigation = "<navindex>\n" + "\n".join(tabs) + "\n  </navindex>"
    changed, count = re.subn(r"<navindex>.*?</navindex>", lambda _: navigation, layout, count=1, flags=re.DOTALL)
    if not count:
        raise RuntimeError("Doxygen's layout has no <navindex> to replace")
    return changed
