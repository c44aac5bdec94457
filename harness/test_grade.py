"""./kqlab grade's own tests. A class of fixture submissions, each one way a submission goes right or wrong, is
graded once (the `graded` fixture, a real `./kqlab grade` run); each test then checks that one submission landed in
its own row with the right reason, and that nothing it did escaped its limits.

The hostile servers are in harness/grade_fixtures/; the other submissions are made from the lessons' solutions,
so they follow the course as it changes. Only the first two lessons are graded, to keep this quick.

Where bubblewrap works, the class also holds a red team: one submission per attack on the grader itself (reading
another slot's sources or the teacher's file, by the program or by #include; terminal escapes; an inode flood;
forging the report or leaving a FIFO in its place; planting Python files; tracing the test runner; a tar with a
2 GiB GNU long-name header). Each must end in its own failed or ungraded row, and nothing of another submission
or of the teacher may appear in anything the grader shows.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kqlab import course, mutants
from kqlab.grade import command, grading, reports, sandbox, submissions

# ./kqlab test runs the course's checks in parallel (pytest-xdist, --dist loadgroup): this file's tests share
# state (a build tree or a site), so they all run in one worker, one after the other.
pytestmark = pytest.mark.xdist_group("grade")

LESSONS = course.lessons()[:2]
FIRST, LAST = LESSONS[0], LESSONS[-1]
FIXTURES = course.HARNESS / "grade_fixtures"
TIMEOUT = 30  # --timeout: seconds one lesson's tests may take (a passing lesson takes a few)
SCRATCH = course.ROOT / "build" / "grade-tests"  # --scratch: kept, so that a second run builds little


def solution_files(lesson: course.Lesson) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in lesson.program_files(lesson.solution)}


def broken_files(lesson: course.Lesson) -> tuple[dict[str, bytes], str]:
    """The lesson's solution with one classic mistake (its first mutant), and the test that must catch it."""
    mutant = mutants.of(lesson)[0]
    files = solution_files(lesson)
    files[mutant.file] = mutant.patch(files[mutant.file].decode(), lesson).encode()
    return files, mutant.caught_by


def write_workspace(root: Path, lessons: dict[str, dict[str, bytes]]) -> None:
    for lesson, files in lessons.items():
        (root / "workspace" / lesson).mkdir(parents=True)
        for name, contents in files.items():
            (root / "workspace" / lesson / name).write_bytes(contents)


def add_file(archive: tarfile.TarFile, name: str, contents: bytes, kind: bytes = tarfile.REGTYPE,
             link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(contents) if kind == tarfile.REGTYPE else 0
    archive.addfile(info, io.BytesIO(contents) if kind == tarfile.REGTYPE else None)


def make_tricky_archive(path: Path) -> None:
    """An archive with members that try to get out: absolute, `..`, links, a device. Only the solution is kept."""
    with tarfile.open(path, "w") as archive:
        for name, contents in solution_files(FIRST).items():
            add_file(archive, f"workspace/{FIRST.name}/{name}", contents)
        add_file(archive, f"../workspace/{FIRST.name}/outside.cpp", b"int outside;\n")
        add_file(archive, f"/tmp/workspace/{FIRST.name}/absolute.cpp", b"int absolute;\n")
        add_file(archive, f"workspace/{FIRST.name}/passwd.cpp", b"", tarfile.SYMTYPE, "/etc/passwd")
        add_file(archive, f"workspace/{FIRST.name}/hard.hpp", b"", tarfile.LNKTYPE, "/etc/shadow")
        add_file(archive, f"workspace/{FIRST.name}/device.h", b"", tarfile.CHRTYPE)


# What no output of the grader may show: another student's source, and a teacher's file.
SECRET_OF_HANGS = "KQLAB-SECRET-OF-hangs"
TEACHER_SECRET = "KQLAB-SECRET-OF-THE-TEACHER"
TEACHER_FILE = course.ROOT / "build" / "grade-teacher" / "answers.txt"  # where a teacher might keep one
PLANT_RAN = "KQLAB-PLANT-RAN"
SHOWN_CONTROLS = ("\x1b", "\x9b", "\u202e", "\x07", "\x00")


def defined(**macros: str) -> bytes:
    return "".join(f'#define {name} {value}\n' for name, value in macros.items()).encode()


def long_name_tar(path: Path, size: int = 2 << 30) -> None:
    """A tar whose first header announces a GNU long name of `size` bytes (2 GiB): tarfile would read it all into
    memory before the member it names. Only the header is written, and a little of what it promises."""
    header = bytearray(512)
    fields = [(0, b"././@LongLink"), (100, b"%07o\0" % 0o644), (108, b"%07o\0" % 0), (116, b"%07o\0" % 0),
              (124, b"%011o\0" % size), (136, b"%011o\0" % 0), (156, b"L"), (257, b"ustar  \0")]
    for offset, value in fields:
        header[offset:offset + len(value)] = value
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    path.write_bytes(bytes(header) + b"a" * 4096)


def make_red_team(folder: Path) -> list[Path]:
    """One submission per attack on the grader itself (harness/grade_fixtures/ says what each does). Those that
    need a server to fail its tests (to show that the attack did not make it pass) add it to the one that crashes
    at its first client: it fails at once."""
    crashes = {"main.cpp": (FIXTURES / "crashes.cpp").read_bytes()}
    slots = {f"KQLAB_SLOT_{n}_SOURCE": f'"{SCRATCH / f"slot-{n}" / "workspace" / FIRST.name / "main.cpp"}"'
             for n in (0, 1)}
    where = defined(KQLAB_TEACHER_FILE=f'"{TEACHER_FILE}"', KQLAB_SCRATCH=f'"{SCRATCH}"',
                    KQLAB_TESTS=f'"{FIRST.tests / ("test_" + FIRST.name.replace("-", "_") + ".py")}"',
                    KQLAB_HARNESS=f'"{course.HARNESS}"', **slots)
    fixture = {name: where + (FIXTURES / name).read_bytes() for name in
               ("reads_secrets.cpp", "includes_secrets.cpp", "tampers_with_reports.cpp", "plants_python.cpp",
                "traces_tests.cpp")}
    escapes = b'#warning "\x1b[2J\x1b]0;pwned\x07\xe2\x80\xae kqlab"\n' + (FIXTURES / "prints_escapes.cpp").read_bytes()
    submissions_ = {
        "reads-secrets": {FIRST.name: {"main.cpp": fixture["reads_secrets.cpp"]}},
        # Not main.cpp: the slot it is graded in has its own file, which it must not include in a loop.
        "includes-secrets": {FIRST.name: {"includes.cpp": fixture["includes_secrets.cpp"]}},
        "prints-escapes": {FIRST.name: {"main.cpp": escapes}},
        "floods-inodes": {FIRST.name: {"main.cpp": (FIXTURES / "floods_inodes.cpp").read_bytes()}},
        "forges-report": {FIRST.name: {**crashes, "tamper.cpp": defined(KQLAB_FORGE="1") +
                                       fixture["tampers_with_reports.cpp"]}},
        "leaves-fifo": {FIRST.name: {**crashes, "tamper.cpp": defined(KQLAB_FORGE="0") +
                                     fixture["tampers_with_reports.cpp"]}},
        # Its first lesson plants, its second lesson's tests would load what was planted.
        "plants-python": {FIRST.name: {**crashes, "plant.cpp": fixture["plants_python.cpp"]}, LAST.name: crashes},
        "traces-tests": {FIRST.name: {**crashes, "trace.cpp": fixture["traces_tests.cpp"]}},
    }
    made = []
    for student, lessons in submissions_.items():
        write_workspace(folder / student, lessons)
        made.append(folder / student)
    long_name_tar(folder / "long-name.tar")
    return made + [folder / "long-name.tar"]


def make_class(folder: Path, sandboxed: bool) -> tuple[list[Path], str]:
    """The fixture class, in the shapes submissions come in; returns them and the test the failing lesson fails.
    The submission that writes outside its folder is left out where bubblewrap does not work: nothing would stop
    it there."""
    folder.mkdir()
    everything = {lesson.name: solution_files(lesson) for lesson in LESSONS}
    made = []

    # Plain workspaces, first lesson only: the hostile servers replace the solution. The one that hangs comes
    # first, so that one slot waits out its timeout while the other grades the rest.
    hostile = {"hangs": "hangs.cpp", "crashes": "crashes.cpp", "fork-bomb": "fork_bomb.cpp",
               "floods": "floods.cpp"}
    for student, fixture in hostile.items():
        source = (FIXTURES / fixture).read_bytes()
        if student == "hangs":  # graded while the others are: what the red team must not see
            source = f"// {SECRET_OF_HANGS}\n".encode() + source
        write_workspace(folder / student, {FIRST.name: {"main.cpp": source}})
        made.append(folder / student)
    if sandboxed:
        made += make_red_team(folder)

    # A clone of kqlab, as a tarball, every lesson solved.
    with tarfile.open(folder / "all-pass.tar.gz", "w:gz") as archive:
        for lesson, files in everything.items():
            for name, contents in files.items():
                add_file(archive, f"kqlab/workspace/{lesson}/{name}", contents)
    made.append(folder / "all-pass.tar.gz")

    # A folder holding a clone: the last lesson has a classic mistake; its copy of the tests and build files was
    # changed to let everything pass, which the grader must ignore.
    broken, caught_by = broken_files(LAST)
    write_workspace(folder / "one-failing" / "kqlab", {**everything, LAST.name: broken})
    tests = folder / "one-failing" / "kqlab" / "harness" / LAST.name
    tests.mkdir(parents=True)
    (tests / f"test_{LAST.name.replace('-', '_')}.py").write_text("def test_anything():\n    pass\n")
    (folder / "one-failing" / "kqlab" / "lessons").mkdir()
    (folder / "one-failing" / "kqlab" / "lessons" / "lessons.cmake").write_text("# nothing to build\n")
    made.append(folder / "one-failing")

    # Workspaces whose first lesson adds a file to the solution. writes-outside comes last: no submission is graded
    # after it, so its slot's build/ keeps what it wrote there.
    joining = {"does-not-compile": "does_not_compile.cpp"}
    if sandboxed:
        joining["writes-outside"] = "writes_outside.cpp"
    for student, fixture in joining.items():
        files = {**everything[FIRST.name], fixture: (FIXTURES / fixture).read_bytes()}
        write_workspace(folder / student, {FIRST.name: files})
        made.append(folder / student)
    return made, caught_by


@dataclass
class Graded:
    """A finished `./kqlab grade` run."""
    status: int
    output: str
    out: Path
    scratch: Path  # the grader's scratch folders, kept to be looked at
    rows: dict[tuple[str, str], dict[str, str]]  # (student, lesson) -> results.csv's row
    sandboxed: bool  # bubblewrap works here
    caught_by: str = ""
    escapes: list[Path] = field(default_factory=list)  # every KQLAB_ESCAPED under the scratch folder after the run

    def row(self, student: str, lesson: course.Lesson = FIRST) -> dict[str, str]:
        return self.rows[(student, lesson.name)]


class GradeRun:
    """`./kqlab grade` started in a subprocess, to be finished with wait()."""

    def __init__(self, arguments: list[str], out: Path, sandboxed: bool) -> None:
        self.out, self.sandboxed = out, sandboxed
        environment = dict(os.environ, PYTHONPATH=str(course.HARNESS))
        self.process = subprocess.Popen([sys.executable, "-m", "kqlab", "grade", "--out", str(out), "--scratch",
                                         str(SCRATCH), *arguments], cwd=course.ROOT, env=environment,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self) -> Graded:
        try:
            output, _ = self.process.communicate(timeout=600)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        rows = {}
        if (self.out / "results.csv").exists():
            with open(self.out / "results.csv", newline="", encoding="utf-8") as file:
                rows = {(row["student"], row["lesson"]): row for row in csv.DictReader(file)}
        return Graded(self.process.returncode, output, self.out, SCRATCH, rows, self.sandboxed)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """Two grade runs, one after the other (the second finds the slot the first brought up to date): the fixture
    class, in the sandbox where it works; and a few submissions with --no-sandbox, what a teacher on macOS gets
    (limits and the watchdog only)."""
    folder = tmp_path_factory.mktemp("grade")
    grading.make_reachable(SCRATCH)
    for old in SCRATCH.rglob("KQLAB_ESCAPED"):  # left by an earlier run in a slot's build/
        old.unlink()
    TEACHER_FILE.parent.mkdir(parents=True, exist_ok=True)
    TEACHER_FILE.write_text(f"{TEACHER_SECRET}: the answers to the exam\n")
    TEACHER_FILE.chmod(0o644)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as probe:
        grading.make_reachable(Path(probe))
        sandboxed = sandbox.detect(Path(probe)).bwrap is not None
    made, caught_by = make_class(folder / "class", sandboxed)
    graded = GradeRun(["--lessons", f"{FIRST.number:02d}-{LAST.number:02d}", "--jobs", "2", "--timeout",
                       str(TIMEOUT), *map(str, made)], folder / "out", sandboxed).wait()
    graded.caught_by = caught_by
    graded.escapes = [path for path in SCRATCH.rglob("KQLAB_ESCAPED")]
    (folder / "not-a-submission").mkdir()
    write_workspace(folder / "solved", {FIRST.name: solution_files(FIRST)})
    unsandboxed = GradeRun(["--lessons", FIRST.name, "--jobs", "1", "--timeout", str(TIMEOUT), "--no-sandbox",
                            str(folder / "solved"), str(folder / "class" / "fork-bomb"),
                            str(folder / "not-a-submission")], folder / "out-no-sandbox", False).wait()
    return graded, unsandboxed


@pytest.fixture(scope="module")
def graded(runs) -> Graded:
    return runs[0]


@pytest.fixture(scope="module")
def unsandboxed(runs) -> Graded:
    return runs[1]


RED_TEAM = {"reads-secrets", "includes-secrets", "prints-escapes", "floods-inodes", "forges-report", "leaves-fifo",
            "plants-python", "traces-tests", "long-name"}


def test_the_class_is_graded(graded):
    assert graded.status == (1 if graded.sandboxed else 0), graded.output  # long-name.tar cannot be graded
    students = {student for student, _ in graded.rows}
    assert students == {"all-pass", "one-failing", "hangs", "crashes", "fork-bomb", "floods", "does-not-compile",
                        } | ({"writes-outside"} | RED_TEAM if graded.sandboxed else set()), graded.output
    assert ("bubblewrap: own user" in graded.output) == graded.sandboxed, graded.output
    assert ("WARNING: NO bubblewrap" in graded.output) != graded.sandboxed, graded.output
    assert "student" in graded.output and "first problem" in graded.output  # the table
    for student in students:
        assert re.search(rf"^{re.escape(student)} ", graded.output, re.MULTILINE), graded.output


def test_all_lessons_passing(graded):
    for lesson in LESSONS:
        row = graded.row("all-pass", lesson)
        assert row["status"] == "passed" and row["passed"] == row["total"] != "0", row


def test_one_lesson_failing_with_the_projects_tests(graded):
    for lesson in LESSONS[:-1]:
        assert graded.row("one-failing", lesson)["status"] == "passed"
    row = graded.row("one-failing", LAST)
    assert row["status"] == "failed" and row["first failing test"], row
    # The submission's own copy of the tests had a single test that passes: the grader used the project's.
    assert int(row["total"]) > 1 and 0 < int(row["passed"]) < int(row["total"]), row
    suite = next(s for s in ElementTree.parse(graded.out / "junit.xml").iter("testsuite") if s.get("name") ==
                 "one-failing")
    failed = {case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None and
              case.get("classname") == f"one-failing.{LAST.name}"}
    assert graded.caught_by in failed, failed


def test_compile_error(graded):
    row = graded.row("does-not-compile")
    assert row["status"] == "does not compile", row
    assert re.search(r"does_not_compile\.cpp:\d+(:\d+)?: expected", row["reason"]), row
    assert (graded.out / "logs" / "does-not-compile" / f"{FIRST.name}-build.log").exists()


def test_hanging_server_is_stopped(graded):
    row = graded.row("hangs")
    assert row["status"] == "stopped", row
    assert f"did not finish within {TIMEOUT} s" in row["reason"], row


def test_crash(graded):
    row = graded.row("crashes")
    assert row["status"] == "failed", row
    assert "crashed: the server was killed by SIGSEGV" in row["reason"], row


def test_fork_bomb_is_contained(graded):
    row = graded.row("fork-bomb")
    assert row["status"] == "stopped", row
    assert "kept starting processes" in row["reason"], row
    # Nothing it started outlived its run.
    survivors = [pid for pid in os.listdir("/proc") if pid.isdigit() and _runs_from(pid, graded.scratch)] \
        if Path("/proc").is_dir() else []
    assert not survivors, f"processes left running from the grader's scratch folders: {survivors}"


def _runs_from(pid: str, folder: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe").startswith(str(folder))
    except OSError:
        return False


def test_flood_is_cut_off_or_fails(graded):
    """A server's own output goes to the tests that read it, line by line, a line at most 64 KiB: with the tests
    outside the sandbox it cannot reach the grader's output at all, and only its own row fails."""
    row = graded.row("floods")
    assert row["status"] in ("failed", "stopped"), row
    log = graded.out / "logs" / "floods" / f"{FIRST.name}-tests.log"
    assert log.stat().st_size < 256 * 1024, "the flood's log should have been cut to its head and tail"


def test_writes_outside_its_folder_land_nowhere(graded):
    if not graded.sandboxed:
        pytest.skip("without bubblewrap, a submission can write wherever the teacher can (the grader says so): "
                    "this submission is not in the class")
    row = graded.row("writes-outside")
    assert row["status"] == "passed", row  # it still works: only its escape was stopped
    allowed = set(graded.scratch.glob("slot-*/build"))
    escaped = [path for path in graded.escapes if not any(folder in path.parents for folder in allowed)]
    outside = [course.HARNESS, Path("/tmp"), Path("/var/tmp"), graded.out, *graded.scratch.parents]
    escaped += [folder / "KQLAB_ESCAPED" for folder in outside if (folder / "KQLAB_ESCAPED").exists()]
    assert not escaped, f"a submission wrote outside its scratch folder: {escaped}"


# The red team: attacks on the grader itself ----------------------------------------------------------------------

def red_team(graded) -> None:
    if not graded.sandboxed:
        pytest.skip("without bubblewrap there is no second trust domain to attack (the grader says so): the red "
                    "team is not in the class")


def everything_shown(graded) -> str:
    """All the grader showed: its terminal output, and every file it wrote."""
    shown = [graded.output]
    for path in sorted(graded.out.rglob("*")):
        if path.is_file():
            shown.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(shown)


def test_red_team_nothing_of_anyone_else_is_shown(graded):
    red_team(graded)
    shown = everything_shown(graded)
    assert SECRET_OF_HANGS not in shown, "another student's source reached the grader's output"
    assert TEACHER_SECRET not in shown, "the teacher's file reached the grader's output"
    assert not re.search(r"^root:[^:\s]*:\d+:", shown, re.MULTILINE), "/etc/shadow reached the grader's output"
    # The attempts were real: they said what they could not read.
    assert f"could not read {TEACHER_FILE}" in shown
    assert "found" in graded.row("reads-secrets")["reason"] or "could not read" in shown


def test_red_team_reading_through_the_program(graded):
    red_team(graded)
    row = graded.row("reads-secrets")
    assert row["status"] == "failed", row


def test_red_team_reading_through_include(graded):
    red_team(graded)
    row = graded.row("includes-secrets")
    assert row["status"] == "does not compile", row
    assert "none of the files named by an absolute path was visible" in row["reason"], row


def test_red_team_terminal_escapes_are_shown_as_text(graded):
    red_team(graded)
    assert graded.row("prints-escapes")["status"] == "failed"
    shown = everything_shown(graded)
    for control in SHOWN_CONTROLS:
        assert control not in shown, f"{control!r} reached the grader's output"
    assert not re.search("\r(?!\n)", shown), "a carriage return (but a CSV line's end) reached the grader's output"
    assert "all tests passed" in shown and "\ufffd" in shown  # what it printed is there, as text


def test_red_team_inode_flood_is_capped(graded):
    red_team(graded)
    row = graded.row("floods-inodes")
    # The tmpfs caps end each folder's flood (as root), or the watchdog ends the run, saying so.
    assert row["status"] == "failed" or "an inode flood" in row["reason"], row
    made = [int(count) for count in re.findall(r"made (\d+) files in", everything_shown(graded))]
    assert "an inode flood" in row["reason"] or made and max(made) < 200_000, f"not capped: {made}"
    assert not list(SCRATCH.glob("slot-*/build/**/flood-*")), "the flood outlived its submission"


@pytest.mark.parametrize("student", ["forges-report", "leaves-fifo", "traces-tests"])
def test_red_team_a_failing_lesson_stays_failed(graded, student):
    """It forged its report, left a FIFO where the report goes, or went for the test runner: the lesson's tests
    still ran to their end, and its row says what was wrong with its server."""
    red_team(graded)
    row = graded.row(student)
    assert row["status"] == "failed" and int(row["passed"]) < int(row["total"]), row
    assert "crashed: the server was killed by SIGSEGV" in row["reason"], row


def test_red_team_planted_python_never_runs(graded):
    red_team(graded)
    for lesson in LESSONS:
        row = graded.row("plants-python", lesson)
        assert row["status"] == "failed" and "crashed: the server was killed by SIGSEGV" in row["reason"], row
    assert PLANT_RAN not in everything_shown(graded)
    names = ("pytest.py", "conftest.py", "sitecustomize.py", "usercustomize.py", "vocabulary.py")
    planted = [path for folder in (course.ROOT, *course.ROOT.parents, *course.HARNESS.rglob("*/"), SCRATCH)
               for path in (folder / name for name in names)
               if path.is_file() and PLANT_RAN in path.read_text(errors="replace")]
    assert not planted, f"planted outside the sandbox: {planted}"


def test_red_team_long_name_header_is_refused(graded):
    red_team(graded)
    row = graded.rows[("long-name", "")]
    assert row["status"] == "not graded" and "GNU long name of 2147483648 bytes" in row["reason"], row


def test_the_sandbox_shows_only_what_a_build_needs(tmp_path):
    """What a student's code sees, tried directly: the project's sources, not its build/; the slot's own folders;
    no teacher file, no other slot, no /home or /root; and it writes only its own build/."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as probe:
        grading.make_reachable(Path(probe))
        isolation = sandbox.detect(Path(probe))
        if not isolation.bwrap:
            pytest.skip(f"no bubblewrap here: {isolation.why_no_bwrap}")
        slot = grading.Slot(Path(probe) / "slot-0", isolation, 1)
        for folder in (slot.build, slot.workspace, slot.testfiles, Path(probe) / "slot-1" / "workspace"):
            folder.mkdir(parents=True)
            grading.hand_over(folder, isolation)
        TEACHER_FILE.parent.mkdir(parents=True, exist_ok=True)
        TEACHER_FILE.write_text(f"{TEACHER_SECRET}\n")
        # A name of its own beside the project: the write must not reach the grader's file system. (A project
        # cloned under /tmp has its parent inside the sandbox's own /tmp, which the student may write: there only
        # the host side of the check means anything.)
        above = course.ROOT.parent / f"kqlab-sandbox-probe-{os.getpid()}"
        inside_own_tmp = course.ROOT.parent == Path("/tmp") or Path("/tmp") in course.ROOT.parent.parents
        script = "; ".join([
            "ls / | tr '\\n' ' '; echo", f"test -e {course.ROOT / 'lessons'} && echo SEES-LESSONS",
            f"test -e {course.ROOT / 'build' / 'default'} && echo SEES-BUILD",
            f"test -e {Path(probe) / 'slot-1'} && echo SEES-OTHER-SLOT", f"test -e {TEACHER_FILE} && echo SEES-TEACHER",
            f"test -e {course.ROOT / 'workspace'} && echo SEES-WORKSPACE",
            f"test -e {slot.tmp} && echo SEES-TMP-SOURCE",  # so it cannot swap its /tmp for a link elsewhere
            f"test -e {course.ROOT / '.git'} && echo SEES-GIT",
            "test -e /etc/shadow && echo SEES-SHADOW", "test -e /home && echo SEES-HOME",
            f"touch {slot.build}/mine && echo WROTE-BUILD", f"touch {slot.workspace}/mine && echo WROTE-WORKSPACE",
            "touch /tmp/mine && echo WROTE-TMP", f"touch {course.HARNESS}/mine && echo WROTE-HARNESS",
            "touch /mine && echo WROTE-ROOT", f"touch {above} && echo WROTE-ABOVE",
            "id -u"])
        outcome = slot.sandbox.run(["sh", "-c", script], sandbox.Limits(seconds=30, cpu_seconds=10,
                                                                         memory=sandbox.GiB), slot.build)
        seen = outcome.output
        assert "SEES-LESSONS" in seen and "WROTE-BUILD" in seen and "WROTE-TMP" in seen, seen
        for absent in ("SEES-BUILD", "SEES-OTHER-SLOT", "SEES-TEACHER", "SEES-WORKSPACE", "SEES-TMP-SOURCE",
                       "SEES-GIT", "SEES-SHADOW",
                       "SEES-HOME", "WROTE-WORKSPACE", "WROTE-HARNESS", "WROTE-ROOT",
                       *(() if inside_own_tmp else ("WROTE-ABOVE",))):
            assert absent not in seen, seen
        assert not above.exists(), f"the sandbox wrote {above} on the grader's file system"
        assert (slot.build / "mine").exists() and not (course.HARNESS / "mine").exists()
        assert seen.split()[-1] != "0", "the student's code runs as root in its namespace"
        grading.remove(Path(probe) / "slot-0")
        grading.remove(Path(probe) / "slot-1")


def test_reports_are_read_only_as_small_regular_files(tmp_path):
    (tmp_path / "report.xml").write_text("<testsuites/>")
    assert grading.read_report(tmp_path / "report.xml") == b"<testsuites/>"
    os.mkfifo(tmp_path / "fifo.xml")
    assert grading.read_report(tmp_path / "fifo.xml") is None  # and returns at once: nobody writes it
    (tmp_path / "link.xml").symlink_to(tmp_path / "report.xml")
    assert grading.read_report(tmp_path / "link.xml") is None
    (tmp_path / "huge.xml").write_bytes(b"x" * 2048)
    assert grading.read_report(tmp_path / "huge.xml", limit=1024) is None


def test_long_name_header_costs_the_grader_nothing(tmp_path):
    long_name_tar(tmp_path / "bomb.tar")
    read = submissions.read_confined(tmp_path / "bomb.tar", [FIRST.name])
    assert "GNU long name of 2147483648 bytes" in read.problem
    long_name_tar(tmp_path / "bomb.tar", size=50 << 20)  # under tarfile's own sanity, over ours
    assert "at most" in submissions.read(tmp_path / "bomb.tar", [FIRST.name]).problem


def test_tricky_archive_gives_up_only_its_sources(tmp_path):
    make_tricky_archive(tmp_path / "tricky.tar")
    tricky = submissions.read(tmp_path / "tricky.tar", [FIRST.name])
    assert not tricky.problem
    assert tricky.lessons == {FIRST.name: solution_files(FIRST)}
    for name in ("passwd.cpp", "hard.hpp", "device.h"):
        assert any(f"{name}: not a regular file" in note for note in tricky.notes), tricky.notes
    assert list(tmp_path.iterdir()) == [tmp_path / "tricky.tar"]  # nothing was extracted


def test_junit_xml_has_one_suite_per_student(graded):
    suites = {suite.get("name"): suite for suite in ElementTree.parse(graded.out / "junit.xml").iter("testsuite")}
    assert set(suites) == {student for student, _ in graded.rows}
    expected = sum(int(graded.row("crashes", lesson)["total"]) for lesson in LESSONS)
    assert int(suites["crashes"].get("tests")) == expected
    failures = [case.find("failure") for case in suites["crashes"].iter("testcase")]
    assert any(f is not None and "SIGSEGV" in (f.text or "") for f in failures)
    assert suites["all-pass"].get("failures") == "0"


def test_html_report_shows_each_failure(graded):
    page = (graded.out / "index.html").read_text(encoding="utf-8")
    for student, _ in graded.rows:
        assert f">{student}</a>" in page
    assert "was killed by SIGSEGV" in page
    assert "does_not_compile.cpp" in page
    gradebook = list(csv.reader(open(graded.out / "gradebook.csv", encoding="utf-8")))
    assert gradebook[0] == ["student", *(lesson.name for lesson in LESSONS), "passed", "total"]


def test_plain_pytest_for_teachers(graded, tmp_path):
    """pytest harness/ --impl workspace --workspace DIR: one student's lessons built and tested, JUnit out."""
    workspace = tmp_path / "alice" / "workspace"
    write_workspace(tmp_path / "alice", {FIRST.name: solution_files(FIRST)})
    # A build tree already configured and with compat/ built, where it was configured (a slot's pristine build,
    # copied to the slot's build/ as the grader does, once the grade run is over): only the lesson is built.
    slot = graded.scratch / "slot-0"
    build = slot / "build"
    grading.remove(build)
    shutil.copytree(slot / "pristine", build, symlinks=True)
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-c", str(course.HARNESS / "pytest.ini"),
                               "--rootdir", str(course.HARNESS), str(course.HARNESS), "--impl", "workspace",
                               "--workspace", str(workspace), "--build-dir", str(build),
                               f"--junitxml={tmp_path / 'alice.xml'}", "-q"], cwd=course.ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300,
                              env=dict(os.environ, PYTHONPATH=str(course.HARNESS)))
    finally:
        grading.remove(build)
    cases = list(ElementTree.parse(tmp_path / "alice.xml").iter("testcase"))
    first = [case for case in cases if FIRST.name in (case.get("classname") or "")]
    others = [case for case in cases if FIRST.name not in (case.get("classname") or "")]
    assert first and all(case.find("failure") is None and case.find("error") is None for case in first), done.stdout
    # The other lessons are not in alice's workspace: they fail, saying so. No course self-check ran.
    assert all("has no" in (case.find("failure").get("message") or "") for case in others if
               case.find("failure") is not None), done.stdout
    assert not any("test_course" in (case.get("classname") or "") or "test_grade" in (case.get("classname") or "")
                   for case in cases)


def test_without_the_sandbox_the_grader_says_so_and_still_contains(unsandboxed):
    """--no-sandbox is what a teacher gets where bubblewrap is not (macOS): limits and the watchdog only."""
    assert "WARNING: NO bubblewrap (turned off with --no-sandbox)" in unsandboxed.output
    assert "NO bubblewrap" in (unsandboxed.out / "index.html").read_text(encoding="utf-8")
    assert unsandboxed.row("solved")["status"] == "passed", unsandboxed.output
    bomb = unsandboxed.row("fork-bomb")
    assert bomb["status"] == "stopped" and "kept starting processes" in bomb["reason"], bomb
    # A submission that could not be graded: its row says why, and the exit status says not everything ran.
    assert unsandboxed.rows[("not-a-submission", "")]["status"] == "not graded"
    assert unsandboxed.status == 1, unsandboxed.output


# Reading submissions, and the small pieces, without a build -----------------------------------------------------

def test_lesson_selection():
    every = course.lessons()
    assert command.select_lessons(None) == every
    assert command.select_lessons(f"{FIRST.number:02d}-05") == [l for l in every if l.number <= 5]
    assert command.select_lessons(str(FIRST.number)) == [FIRST]
    assert command.select_lessons(FIRST.name) == [FIRST]
    with pytest.raises(ValueError):
        command.select_lessons("97-98")
    with pytest.raises(ValueError):
        command.select_lessons("99")


def test_archives_give_only_plain_sources(tmp_path):
    with zipfile.ZipFile(tmp_path / "zoe.zip", "w") as archive:
        archive.writestr(f"zoe/workspace/{FIRST.name}/main.cpp", "int main() {}\n")
        archive.writestr(f"zoe/workspace/{FIRST.name}/../../../evil.cpp", "int evil;\n")
        archive.writestr(f"zoe/workspace/{FIRST.name}/notes.txt", "not a source\n")
        archive.writestr(f"zoe/workspace/{FIRST.name}/big.cpp", "x" * (submissions.MAX_FILE + 1))
        archive.writestr(f"__MACOSX/zoe/workspace/{FIRST.name}/._main.cpp", "resource fork\n")
    zoe = submissions.read(tmp_path / "zoe.zip", [FIRST.name])
    assert zoe.name == "zoe" and not zoe.problem
    assert list(zoe.lessons[FIRST.name]) == ["main.cpp"]
    assert any("big.cpp: larger than" in note for note in zoe.notes)


def test_unreadable_submissions_say_why(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no workspace/" in submissions.read(tmp_path / "empty", [FIRST.name]).problem
    (tmp_path / "homework.txt").write_text("hello")
    assert "not a folder, nor an archive" in submissions.read(tmp_path / "homework.txt", [FIRST.name]).problem
    (tmp_path / "broken.tar.gz").write_bytes(b"not gzip at all")
    assert "could not be read" in submissions.read(tmp_path / "broken.tar.gz", [FIRST.name]).problem
    for twin in ("a", "b"):
        write_workspace(tmp_path / "twins" / twin, {FIRST.name: {"main.cpp": b"int main() {}\n"}})
    assert "more than one workspace/" in submissions.read(tmp_path / "twins", [FIRST.name]).problem


def test_a_lesson_of_several_programs_keeps_its_folders(tmp_path):
    several = next(lesson for lesson in course.lessons() if lesson.programs())
    files = {str(path.relative_to(several.solution)): path.read_bytes()
             for path in several.program_files(several.solution)}
    write_workspace(tmp_path / "kim", {several.name: {}})
    for name, contents in files.items():
        (tmp_path / "kim" / "workspace" / several.name / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "kim" / "workspace" / several.name / name).write_bytes(contents)
    with tarfile.open(tmp_path / "kim.tar.gz", "w:gz") as archive:
        for name, contents in files.items():
            add_file(archive, f"workspace/{several.name}/{name}", contents)
    for origin in (tmp_path / "kim", tmp_path / "kim.tar.gz"):
        kim = submissions.read_confined(origin, [several.name])
        assert kim.lessons == {several.name: files}, (kim.problem, kim.notes)


def test_the_progress_file_is_read_with_the_sources(tmp_path):
    """workspace/.progress (the hints the student asked for) comes with the sources, read the same careful way, for
    the reports to quote: never through a link, never more than its limit."""
    progress = b"01-echo failing: 3 of 9 tests pass | hints: TODO(1) rung 2\n"
    write_workspace(tmp_path / "lea", {FIRST.name: {"main.cpp": b"int main() {}\n"}})
    (tmp_path / "lea" / "workspace" / ".progress").write_bytes(progress)
    with tarfile.open(tmp_path / "lea.tar.gz", "w:gz") as archive:
        add_file(archive, f"workspace/{FIRST.name}/main.cpp", b"int main() {}\n")
        add_file(archive, "workspace/.progress", progress)
    for origin in (tmp_path / "lea", tmp_path / "lea.tar.gz"):
        assert submissions.read_confined(origin, [FIRST.name]).progress == progress
    (tmp_path / "lea" / "workspace" / ".progress").unlink()
    (tmp_path / "lea" / "workspace" / ".progress").symlink_to("/etc/passwd")
    assert submissions.read_confined(tmp_path / "lea", [FIRST.name]).progress is None
    (tmp_path / "lea" / "workspace" / ".progress").unlink()
    (tmp_path / "lea" / "workspace" / ".progress").write_bytes(b"x" * (submissions.PROGRESS_LIMIT + 1))
    assert submissions.read_confined(tmp_path / "lea", [FIRST.name]).progress is None


def test_folder_links_are_not_followed(tmp_path):
    write_workspace(tmp_path / "sam", {FIRST.name: {"main.cpp": b"int main() {}\n"}})
    (tmp_path / "sam" / "workspace" / FIRST.name / "secret.cpp").symlink_to("/etc/passwd")
    sam = submissions.read(tmp_path / "sam", [FIRST.name])
    assert list(sam.lessons[FIRST.name]) == ["main.cpp"]
    assert any("secret.cpp: not a regular file" in note for note in sam.notes)


def test_spreadsheet_cells_are_never_formulas():
    assert reports._cell("=HYPERLINK(\"http://x\")").startswith("'=")
    assert reports._cell("-1+2").startswith("'-")
    assert reports._cell("+1").startswith("'+") and reports._cell("@SUM(A1)").startswith("'@")
    assert reports._cell("\t=1").startswith("'")
    assert reports._cell("alice") == "alice"


def test_controls_are_replaced_wherever_they_come_from():
    from kqlab.grade import text
    dirty = "a\x1b[2Jb\x9bc\u202ed\u2066e\rf\x00g\tok\nnext"
    assert text.clean(dirty) == "a\ufffd[2Jb\ufffdc\ufffdd\ufffde\ufffdf\ufffdg\tok\nnext"
    student = grading.StudentResult("eve", "\x1b]0;title\x07eve.tar", problem="bad \u202e name")
    row = reports.table([student], [FIRST.name], 200)
    assert "\x1b" not in row and "\u202e" not in row and "\x07" not in row


def test_failure_summaries():
    story = "t failed. What happened:\n  1. started\nExpected: 'a' back\nGot:      nothing in 2 s\n"
    assert grading.summarize(story) == "expected 'a' back; got nothing in 2 s"
    assert grading.summarize(story + "The server (x, pid 3) was killed by SIGABRT.\n") == \
        "crashed: the server was killed by SIGABRT"


def test_the_page_shows_a_hostile_submission_as_text():
    """Names, failure messages and build logs full of markup stay text on index.html (Jinja2 escapes them)."""
    evil = "<img src=x onerror=alert(1)>"
    student = grading.StudentResult(evil, "/class/" + evil, notes=[f"left out: {evil}"], lessons=[
        grading.LessonResult("01-echo", ["test_one"], 0, "failed", evil, [grading.Failure("test_one", evil)]),
        grading.LessonResult("02-registration", ["test_one"], 0, "does not compile", evil, [], {"build": evil})])
    page = reports._html([student], ["01-echo", "02-registration"], [evil])
    assert "<img" not in page and page.count("&lt;img src=x onerror=alert(1)&gt;") >= 6
    assert "<td class=failed title='failed'>0/1</td>" in page and "<details open><summary>build output" in page
