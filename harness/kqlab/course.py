"""The course as it lies on disk.

A lesson is a directory lessons/NN-topic/ (its README.md, hints.md and exercise), mirrored path for path by
solutions/NN-topic/, by its tests in harness/NN-topic/, and, once the student reaches it, by their own copy in
workspace/NN-topic/. Everything about a lesson is derived from those directories; there is no second list to keep
in step.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .grade import launch

ROOT = Path(__file__).resolve().parents[2]
LESSONS = ROOT / "lessons"
SOLUTIONS = ROOT / "solutions"
HARNESS = ROOT / "harness"
BUILD = ROOT / "build"


def _workspace() -> tuple[Path, str]:
    """Where the student's copies live, and the kind of build CMake makes of them (lessons/CMakeLists.txt).

    By default workspace/, built as `workspace`. KQLAB_WORKSPACE=NAME picks another, build/default/workspaces/NAME/,
    built as `workspace-NAME`: the command's own tests use these for their fixture exercises, so they never touch
    the student's copies or progress."""
    name = os.environ.get("KQLAB_WORKSPACE", "")
    if not name:
        return ROOT / "workspace", "workspace"
    if not re.fullmatch(r"[\w-]+", name):
        raise SystemExit(f"kqlab: KQLAB_WORKSPACE={name!r}: a name of letters, digits, - and _, please")
    return BUILD / "default" / "workspaces" / name, f"workspace-{name}"


WORKSPACE, WORKSPACE_KIND = _workspace()
PROGRESS = WORKSPACE / ".progress"

# The student's copy holds the program, not the lesson's text: README.md and hints.md stay in lessons/, where a
# course update can change them.
_TEXT_FILES = ("README.md", "hints.md")


@dataclass(frozen=True)
class Lesson:
    name: str  # "01-echo": the directory name in every tree

    @property
    def number(self) -> int:
        return int(self.name[:2])

    @property
    def exercise(self) -> Path:
        return LESSONS / self.name

    @property
    def solution(self) -> Path:
        return SOLUTIONS / self.name

    @property
    def tests(self) -> Path:
        return HARNESS / self.name

    @property
    def workspace(self) -> Path:
        return WORKSPACE / self.name

    @property
    def readme(self) -> Path:
        return self.exercise / "README.md"

    @property
    def hints(self) -> Path:
        return self.exercise / "hints.md"

    @property
    def title(self) -> str:
        """The README's first heading, without its "Lesson NN:" prefix."""
        for line in self.readme.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                return re.sub(r"^Lesson \d+:\s*", "", line[2:]).strip()
        return self.name

    def program_files(self, tree: Path) -> list[Path]:
        """The files of this lesson's programs in `tree` (an exercise, solution or workspace directory), in its
        program subdirectories too (see programs()), sorted by their path relative to `tree`."""
        return sorted(p for p in tree.rglob("*") if p.is_file() and p.relative_to(tree).parts[0] not in _TEXT_FILES
                      and "__pycache__" not in p.parts)

    def programs(self) -> list[str]:
        """The names of the lesson's programs when it has several, one subdirectory of the lesson each (09-epoll:
        kqueue and epoll); [] when the lesson is one program. See lessons/lessons.cmake."""
        return sorted(d.name for d in self.exercise.iterdir() if d.is_dir() and any(d.glob("*.cpp")))

    def sections(self) -> list[str]:
        """The README's headings (any level), as written."""
        text = self.readme.read_text(encoding="utf-8")
        return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.MULTILINE)]

    def copy_exercise_to(self, destination: Path) -> None:
        """Copies the exercise's program files into `destination` (created)."""
        for source in self.program_files(self.exercise):
            target = destination / source.relative_to(self.exercise)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def lessons() -> list[Lesson]:
    return [Lesson(d.name) for d in sorted(LESSONS.iterdir()) if d.is_dir() and re.fullmatch(r"\d\d-[\w-]+", d.name)]


def lesson(key: str | int) -> Lesson:
    """The lesson with this number (1, "1", "01") or name ("01-echo"); ValueError if there is none."""
    for candidate in lessons():
        if str(key) == candidate.name or (str(key).isdigit() and int(key) == candidate.number):
            return candidate
    raise ValueError(f"there is no lesson {key!r}; the lessons are {', '.join(l.name for l in lessons())}")


def program(build_dir: Path, impl: str, lesson: Lesson, name: str | None = None) -> Path:
    """Where CMake puts a lesson's program (see lessons/lessons.cmake): impl is solution, exercise, workspace or
    mutant-NAME; `name` picks one of the programs of a lesson that has several (the directory that holds them all
    when it is None). Under ./kqlab grade, a script that runs that program in the student's sandbox instead: every
    test that runs a program gets it from here (grade/launch.py)."""
    path = build_dir / "bin" / impl / lesson.name
    path = path / name if name else path
    return launch.sandboxed(path)


# Progress: one line per lesson the student has checked or asked hints for, such as "01-echo done" or
# "02-registration failing: 3 of 7 tests pass | hints: TODO(1) rung 2, TODO(3) rung 1" (the highest rung of each
# gap's hint ladder shown so far, see ladders.py). Plain text, so a student can read it, and delete it to start over.
_RUNG_USED = re.compile(r"TODO\((\d+)\) rung (\d+)")


@dataclass
class Progress:
    status: str = ""  # "done", "failing: ...", or "" (not checked yet)
    rungs: dict[int, int] = field(default_factory=dict)  # gap -> the highest rung of its hint shown, in order asked

    def line(self, name: str) -> str:
        return f"{name} {self.status or 'started'}" + (f" | hints: {rungs_text(self.rungs)}" if self.rungs else "")


def rungs_text(rungs: dict[int, int]) -> str:
    """"TODO(1) rung 2, TODO(3) rung 1": how far up each gap's ladder the student went."""
    return ", ".join(f"TODO({gap}) rung {rung}" for gap, rung in sorted(rungs.items()))


def parse_progress_line(line: str) -> tuple[str, Progress] | None:
    """One line of a progress file: (lesson name, its progress), or None for a comment or a blank line."""
    name, _, rest = line.strip().partition(" ")
    if not name or name.startswith("#"):
        return None
    status, _, hints = rest.partition(" | ")
    status = status.strip()
    rungs: dict[int, int] = {}
    if hints.startswith("hints shown:"):  # before hint ladders, one hint per gap: it gave the answer away
        rungs = {int(n): 3 for n in hints.removeprefix("hints shown:").split() if n.isdigit()}
    else:
        for gap, rung in _RUNG_USED.findall(hints):
            rungs[int(gap)] = max(rungs.get(int(gap), 0), min(int(rung), 3))
    return name, Progress("" if status == "started" else status, rungs)


def progress_of() -> dict[str, Progress]:
    if not PROGRESS.exists():
        return {}
    entries = {}
    for line in PROGRESS.read_text(encoding="utf-8").splitlines():
        parsed = parse_progress_line(line)
        if parsed:
            entries[parsed[0]] = parsed[1]
    return entries


def progress() -> dict[str, str]:
    """Each lesson's last status, by name ("done", "failing: ..."), for the lessons that have one."""
    return {name: entry.status for name, entry in progress_of().items() if entry.status}


def _update(lesson: Lesson, change) -> None:
    entries = progress_of()
    entry = entries.setdefault(lesson.name, Progress())
    change(entry)
    _write_progress(entries)


def record(lesson: Lesson, status: str) -> None:
    """Remembers a lesson's status: "done", or "failing" and a few words on how far along it is."""
    _update(lesson, lambda entry: setattr(entry, "status", status))


def rungs_used(lesson: Lesson) -> dict[int, int]:
    """For each gap of `lesson` whose hint the student asked for, the highest rung shown."""
    entry = progress_of().get(lesson.name)
    return dict(entry.rungs) if entry else {}


def record_rung(lesson: Lesson, gap: int, rung: int) -> None:
    """Remembers that rung `rung` of TODO(gap)'s hint ladder was shown (the highest one counts)."""
    _update(lesson, lambda entry: entry.rungs.__setitem__(gap, max(entry.rungs.get(gap, 0), rung)))


def forget(lesson: Lesson) -> None:
    entries = progress_of()
    if entries.pop(lesson.name, None) is not None:
        _write_progress(entries)


def _write_progress(entries: dict[str, Progress]) -> None:
    WORKSPACE.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by ./kqlab: each lesson's last test result, and how far up each gap's hint ladder you went."]
    lines += [entry.line(name) for name, entry in sorted(entries.items())]
    PROGRESS.write_text("\n".join(lines) + "\n", encoding="utf-8")


def status(lesson: Lesson) -> str:
    """done, failing (and how far along), started (copied, not checked yet), or not started."""
    if not lesson.workspace.exists():
        return "not started"
    return progress().get(lesson.name, "started")


def current() -> Lesson | None:
    """The first lesson not done yet, or None when all are."""
    return next((l for l in lessons() if status(l) != "done"), None)
