"""Reading a class's submissions, any of which may be hostile.

A submission is a folder or an archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .zip) holding a student's
`workspace/` folder: at its top, or up to three folders down (a clone of kqlab, say, or a folder named after the
student). Only the lessons' sources are taken from it: the *.cpp, *.hpp and *.h files directly inside a lesson
folder, workspace/NN-topic/ (or one of its program folders, for a lesson of several), and the progress file
./kqlab writes, workspace/.progress (at most PROGRESS_LIMIT bytes), which the reports may quote. Its build files, tests and anything else are never looked at: a student cannot change
what they are graded by.

Nothing is extracted as it is. A folder is read without following links; an archive's members are read, never
written under their own names, by a child process of the grader's (read_confined) under limits of memory, CPU
time, wall-clock time and file size, as `nobody` when the grader is root, given the archive as its standard input:
a decompression bomb or a malformed header costs that child, never the grader. Every tar header that makes
tarfile read a block into memory (a GNU long name or link, a PAX record) is refused above HEADER_LIMIT bytes
before anything of it is read. What is kept must be a regular file (no link, device or other special file), with
a plain name, under a plain path (no absolute path, no `..`), within the size limits below; whatever else looked
like a source is listed in the submission's notes, with why it was left out.
"""
from __future__ import annotations

import base64
import json
import os
import pwd
import re
import resource
import stat
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MAX_FILE = 1 << 20  # bytes in one source file
MAX_TOTAL = 16 << 20  # bytes of sources in one submission
MAX_FILES_PER_LESSON = 64
MAX_MEMBERS = 100_000  # entries looked at in an archive
MAX_ARCHIVE = 2 << 30  # bytes an archive's members may add up to, read or not
MAX_DEPTH = 3  # folders above workspace/
HEADER_LIMIT = 64 << 10  # bytes of one GNU long name or link, or of one PAX header's records
PROGRESS_LIMIT = 64 << 10  # bytes of workspace/.progress, the hints the student asked for (course.py), kept
PROGRESS = ".progress"
CHILD_MEMORY = 512 << 20  # address space of the process that reads an archive
CHILD_SECONDS = 60  # and its time, CPU and wall clock

SOURCE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\.(?:cpp|hpp|h)")
LESSON = re.compile(r"\d\d-[A-Za-z0-9_-]+")
PROGRAM = re.compile(r"[a-z][a-z0-9_-]*")  # a program's folder inside a lesson of several (see course.programs())
PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+ -]*")  # a folder name above workspace/
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


@dataclass
class Submission:
    name: str  # the student, as the reports show them: the folder's or archive's name
    origin: Path
    lessons: dict[str, dict[str, bytes]] = field(default_factory=dict)  # lesson -> file name -> contents
    problem: str = ""  # why nothing could be graded, if so
    notes: list[str] = field(default_factory=list)  # what was left out, and why
    progress: bytes | None = None  # its workspace/.progress, read like its sources: for the reports to quote


@dataclass
class _Entry:
    """A file of a submission that sits where a lesson source would: workspace/NN-topic/NAME."""
    prefix: tuple[str, ...]  # the folders above workspace/
    lesson: str
    name: str
    regular: bool
    size: int
    contents: bytes | None  # None when it was not read: not a regular file, or too large


def student_name(origin: Path) -> str:
    name = origin.name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if origin.is_file() and name.lower().endswith(suffix):
            name = name[:-len(suffix)]
            break
    return re.sub(r"[^\w.@-]+", "_", name).strip("._") or "submission"


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def read_confined(origin: Path, lessons: list[str]) -> Submission:
    """read(), in a child process under limits for an archive (see the module's text); read() for a folder."""
    if not is_archive(origin):
        return read(origin, lessons)
    submission = Submission(student_name(origin), origin)
    try:
        archive = open(origin, "rb")
    except OSError as problem:
        submission.problem = f"could not be read: {problem.strerror}"
        return submission
    user = {}
    if os.geteuid() == 0:
        entry = pwd.getpwnam("nobody")
        user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    harness = str(Path(__file__).resolve().parents[2])
    code = (f"import sys; sys.path.insert(0, {harness!r}); from kqlab.grade import submissions; "
            f"submissions.child({origin.name!r}, {json.dumps(lessons)!r})")
    with archive:
        child = subprocess.Popen([sys.executable, "-I", "-c", code], stdin=archive, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, preexec_fn=_child_limits, cwd="/", env={}, **user)
    try:
        # Its answer is at most the sources' budget, in base64 and JSON: what is beyond is not read.
        answer, _ = child.communicate(timeout=CHILD_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        submission.problem = f"could not be read: reading it took more than {CHILD_SECONDS} s"
        return submission
    if child.returncode != 0 or len(answer) > 6 * MAX_TOTAL:
        ended = f"killed by signal {-child.returncode}" if child.returncode < 0 else f"status {child.returncode}"
        submission.problem = (f"could not be read: the archive reader ended abnormally ({ended}; limits: "
                              f"{CHILD_MEMORY >> 20} MiB of memory, {CHILD_SECONDS} s)")
        return submission
    found = json.loads(answer)
    submission.problem, submission.notes = found["problem"], found["notes"]
    if found.get("progress") is not None:
        submission.progress = base64.b64decode(found["progress"])[:PROGRESS_LIMIT]
    submission.lessons = {lesson: {name: base64.b64decode(contents) for name, contents in files.items()}
                          for lesson, files in found["lessons"].items()}
    return submission


def _child_limits() -> None:
    for limit, value in ((resource.RLIMIT_AS, CHILD_MEMORY), (resource.RLIMIT_CPU, CHILD_SECONDS),
                         (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, 32), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))


def child(name: str, lessons: list[str]) -> None:
    """The archive reader's side: the archive on standard input, its sources as JSON on standard output."""
    submission = read(Path(name), lessons, sys.stdin.buffer)
    progress = base64.b64encode(submission.progress).decode() if submission.progress is not None else None
    sys.stdout.write(json.dumps({
        "problem": submission.problem, "notes": submission.notes, "progress": progress,
        "lessons": {lesson: {file: base64.b64encode(contents).decode() for file, contents in files.items()}
                    for lesson, files in submission.lessons.items()}}))


def read(origin: Path, lessons: list[str], stream=None) -> Submission:
    """The sources of `lessons` in the submission at `origin` (a folder or an archive; the archive's bytes are
    `stream` when given, read from `origin` otherwise)."""
    submission = Submission(student_name(origin), origin)
    try:
        if stream is None and origin.is_dir() and not origin.is_symlink():
            entries = list(_folder_entries(origin))
        elif stream is not None or is_archive(origin):
            source = stream if stream is not None else origin
            entries = list(_zip_entries(source) if origin.name.lower().endswith(".zip") else _tar_entries(source))
        else:
            submission.problem = "not a folder, nor an archive kqlab reads (" + ", ".join(ARCHIVE_SUFFIXES) + ")"
            return submission
    except (OSError, tarfile.TarError, zipfile.BadZipFile, _TooLarge, EOFError, MemoryError) as problem:
        submission.problem = f"could not be read: {problem}"
        return submission
    _keep(submission, entries, lessons)
    return submission


class _TooLarge(Exception):
    pass


class _Budget:
    """How many bytes of sources are still to be read from one submission, whichever workspace/ they are in."""

    def __init__(self) -> None:
        self.left = 2 * MAX_TOTAL

    def allows(self, size: int) -> bool:
        if size > MAX_FILE or size > self.left:
            return False
        self.left -= size
        return True


def _keep(submission: Submission, entries: list[_Entry], lessons: list[str]) -> None:
    progress = {entry.prefix: entry for entry in entries if entry.lesson == PROGRESS}
    entries = [entry for entry in entries if entry.lesson != PROGRESS]
    prefixes = sorted({entry.prefix for entry in entries}, key=lambda prefix: (len(prefix), prefix))
    if not prefixes:
        submission.problem = (f"no workspace/ folder with lesson folders (workspace/NN-topic/) in it, at most "
                              f"{MAX_DEPTH} folders down")
        return
    shallowest = [prefix for prefix in prefixes if len(prefix) == len(prefixes[0])]
    if len(shallowest) > 1:
        shown = ", ".join("/".join((*prefix, "workspace")) for prefix in shallowest)
        submission.problem = f"more than one workspace/ folder, which one is the student's? {shown}"
        return
    chosen, total = shallowest[0], 0
    kept = progress.get(chosen)
    if kept and kept.regular and kept.contents is not None and len(kept.contents) <= PROGRESS_LIMIT:
        submission.progress = kept.contents
    for entry in sorted(entries, key=lambda entry: (entry.lesson, entry.name)):
        where = "/".join((*entry.prefix, "workspace", entry.lesson, entry.name))
        if entry.prefix != chosen or entry.lesson not in lessons:
            continue
        files = submission.lessons.setdefault(entry.lesson, {})
        why = ("not a regular file (a link, or something stranger)" if not entry.regular else
               f"larger than {MAX_FILE >> 10} KiB" if entry.size > MAX_FILE else
               f"more than {MAX_FILES_PER_LESSON} files in the lesson" if len(files) >= MAX_FILES_PER_LESSON else
               f"the submission's sources pass {MAX_TOTAL >> 20} MiB" if total + entry.size > MAX_TOTAL else "")
        if not why and entry.contents is None:
            why = f"the submission's sources pass {MAX_TOTAL >> 20} MiB"
        if not why and len(entry.contents) > MAX_FILE:
            why = f"larger than {MAX_FILE >> 10} KiB"
        if not why:
            files[entry.name] = entry.contents
            total += len(entry.contents)
        else:
            submission.notes.append(f"left out {where}: {why}")


def _split(path: PurePosixPath) -> tuple[tuple[str, ...], str, str] | None:
    """(folders above workspace/, lesson, file name) if `path` is where a lesson source sits, else None. A lesson
    of several programs has a folder for each (09-epoll/epoll/): there the name is "epoll/poller.cpp"."""
    parts = path.parts
    if len(parts) >= 2 and parts[-2:] == ("workspace", PROGRESS):  # filed as a lesson of its own name
        parts = (*parts[:-1], PROGRESS, PROGRESS)
    elif len(parts) >= 4 and parts[-4] == "workspace" and PROGRAM.fullmatch(parts[-2]):
        parts = (*parts[:-2], f"{parts[-2]}/{parts[-1]}")
    if len(parts) < 3 or len(parts) > MAX_DEPTH + 3 or parts[-3] != "workspace":
        return None
    prefix, lesson, name = parts[:-3], parts[-2], parts[-1]
    if (lesson, name) != (PROGRESS, PROGRESS) and (not LESSON.fullmatch(lesson) or
                                                  not SOURCE.fullmatch(name.rpartition("/")[2])):
        return None
    if not all(PLAIN.fullmatch(part) and part != "__MACOSX" for part in prefix):
        return None  # also rules out "..", "." and absolute paths
    return prefix, lesson, name


def _folder_entries(root: Path):
    budget = _Budget()
    candidates = [root / "workspace"]
    for depth in range(1, MAX_DEPTH + 1):
        candidates += sorted(root.glob("/".join(["*"] * depth) + "/workspace"))
    for workspace in candidates:
        relative = workspace.relative_to(root)
        if any(part.is_symlink() for part in [workspace, *workspace.parents] if part.is_relative_to(root)):
            continue
        if not workspace.is_dir():
            continue
        progress = workspace / PROGRESS
        if progress.exists() or progress.is_symlink():
            info = progress.lstat()
            regular = stat.S_ISREG(info.st_mode) and info.st_size <= PROGRESS_LIMIT
            yield _Entry(*_split(PurePosixPath(*relative.parts, PROGRESS)), regular, info.st_size,
                         _read_file(progress) if regular else None)
        for lesson in sorted(workspace.iterdir()):
            if lesson.is_symlink() or not lesson.is_dir():
                continue
            inside = [path for path in sorted(lesson.iterdir())]
            inside += [path for folder in inside if folder.is_dir() and not folder.is_symlink()
                       for path in sorted(folder.iterdir())]
            for path in inside:
                split = _split(PurePosixPath(*relative.parts, *path.relative_to(workspace).parts))
                if split is None:
                    continue
                info = path.lstat()
                regular = stat.S_ISREG(info.st_mode)
                contents = _read_file(path) if regular and budget.allows(info.st_size) else None
                yield _Entry(*split, regular, info.st_size, contents)


def _read_file(path: Path) -> bytes:
    # O_NOFOLLOW: a file swapped for a link since lstat() is refused, not followed.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(descriptor, "rb") as file:
        return file.read(MAX_FILE + 1)


def _member_path(name: str) -> PurePosixPath | None:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/"):
        return None
    return PurePosixPath(name)


class _CappedTarInfo(tarfile.TarInfo):
    """A tar header whose extension blocks are refused, before tarfile reads them, when they are too large."""

    EXTENSIONS = {tarfile.GNUTYPE_LONGNAME: "GNU long name", tarfile.GNUTYPE_LONGLINK: "GNU long link name",
                  tarfile.XHDTYPE: "PAX header", tarfile.XGLTYPE: "PAX global header",
                  tarfile.SOLARIS_XHDTYPE: "Solaris extended header"}

    def _proc_member(self, tarfile_):
        if self.type in self.EXTENSIONS and self.size > HEADER_LIMIT:
            raise _TooLarge(f"a {self.EXTENSIONS[self.type]} of {self.size} bytes (at most {HEADER_LIMIT} are read)")
        return super()._proc_member(tarfile_)


def _tar_entries(origin):
    budget = _Budget()
    opened = {"fileobj": origin} if not isinstance(origin, Path) else {"name": origin}
    with tarfile.open(mode="r:*", tarinfo=_CappedTarInfo, **opened) as archive:
        seen, size = 0, 0
        for member in archive:
            seen += 1
            size += max(member.size, 0)
            if seen > MAX_MEMBERS or size > MAX_ARCHIVE:
                raise _TooLarge(f"more than {MAX_MEMBERS} entries or {MAX_ARCHIVE >> 30} GiB")
            path = _member_path(member.name)
            split = _split(path) if path else None
            if split is None:
                continue
            contents = None
            if member.isreg() and (member.size <= PROGRESS_LIMIT if split[1] == PROGRESS else
                                   budget.allows(member.size)):
                contents = archive.extractfile(member).read(MAX_FILE + 1)
            yield _Entry(*split, member.isreg(), member.size, contents)


def _zip_entries(origin):
    budget = _Budget()
    with zipfile.ZipFile(origin) as archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise _TooLarge(f"more than {MAX_MEMBERS} entries")
        for member in members:
            path = _member_path(member.filename)
            split = _split(path) if path else None
            if split is None or member.is_dir():
                continue
            mode = member.external_attr >> 16
            # The file type bits are often left out (zips made on Windows, Python's writestr): then a file is a file.
            regular = not stat.S_IFMT(mode) or stat.S_ISREG(mode)
            contents = None
            if regular and (member.file_size <= PROGRESS_LIMIT if split[1] == PROGRESS else
                            budget.allows(member.file_size)):
                with archive.open(member) as file:  # file_size is the archive's word: read no more than the limit
                    contents = file.read(MAX_FILE + 1)
            yield _Entry(*split, regular, member.file_size, contents)
