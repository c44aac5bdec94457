"""How far up each gap's hint ladder a student went, from the progress file their submission may include
(workspace/.progress, which ./kqlab writes: see course.py), for the reports.

The file is the student's word, read as hostile input like the rest of a submission (submissions.py): found only
where a workspace/ folder may sit, a regular file, never through a link, at most PROGRESS_LIMIT bytes; only what
parses as "TODO(N) rung K" is kept, and the reports print it in their own words. A missing file is "" (not
reported), which the reports tell apart from "none" (the file is there, no hint was asked for).
"""
from __future__ import annotations

import functools
import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .. import course
from . import submissions

PROGRESS_LIMIT = 64 * 1024


def rungs_used(origin: Path) -> dict[str, dict[int, int]] | None:
    """lesson -> gap -> the highest rung shown, from the submission at `origin`; None without a progress file."""
    text = _progress_text(origin)
    if text is None:
        return None
    used = {}
    for line in text.splitlines():
        parsed = course.parse_progress_line(line)
        if parsed and submissions.LESSON.fullmatch(parsed[0]):
            used[parsed[0]] = parsed[1].rungs
    return used


def summary(origin: str, lesson: str) -> str:
    """One lesson's hints as a report shows them: "TODO(1) rung 2, TODO(3) rung 1", "none", or "" (not known)."""
    used = _cached(origin)
    if used is None:
        return ""
    return course.rungs_text(used.get(lesson, {})) or "none"


@functools.lru_cache(maxsize=256)
def _cached(origin: str) -> dict[str, dict[int, int]] | None:
    try:
        return rungs_used(Path(origin))
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, UnicodeDecodeError, ValueError):
        return None


def _where(path: PurePosixPath) -> int | None:
    """How many folders sit above workspace/ if `path` is a progress file a submission may hold, else None."""
    parts = path.parts
    if len(parts) < 2 or parts[-2:] != ("workspace", ".progress") or len(parts) - 2 > submissions.MAX_DEPTH:
        return None
    prefix = parts[:-2]
    if not all(submissions.PLAIN.fullmatch(part) and part != "__MACOSX" for part in prefix):
        return None
    return len(prefix)


def _progress_text(origin: Path) -> str | None:
    """The shallowest progress file of the submission, if there is exactly one at that depth."""
    found: list[tuple[int, bytes]] = []
    if origin.is_dir() and not origin.is_symlink():
        for depth in range(submissions.MAX_DEPTH + 1):
            for path in sorted(origin.glob("/".join(["*"] * depth + ["workspace", ".progress"]))):
                relative = path.relative_to(origin)
                if any(p.is_symlink() for p in [path, *path.parents] if p.is_relative_to(origin)):
                    continue
                info = path.lstat()
                if _where(PurePosixPath(*relative.parts)) is not None and stat.S_ISREG(info.st_mode) \
                        and info.st_size <= PROGRESS_LIMIT:
                    found.append((depth, _read(path)))
    elif submissions.is_archive(origin):
        found = _archive_progress(origin)
    if not found:
        return None
    shallowest = min(depth for depth, _ in found)
    texts = [contents for depth, contents in found if depth == shallowest]
    return texts[0].decode("utf-8", errors="replace") if len(texts) == 1 else None


def _read(path: Path) -> bytes:
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(descriptor, "rb") as file:
        return file.read(PROGRESS_LIMIT)


def _archive_progress(origin: Path) -> list[tuple[int, bytes]]:
    found = []
    if origin.name.lower().endswith(".zip"):
        with zipfile.ZipFile(origin) as archive:
            for member in archive.infolist()[:submissions.MAX_MEMBERS]:
                path = submissions._member_path(member.filename)
                depth = _where(path) if path else None
                mode = member.external_attr >> 16
                regular = not stat.S_IFMT(mode) or stat.S_ISREG(mode)
                if depth is not None and regular and member.file_size <= PROGRESS_LIMIT:
                    with archive.open(member) as file:
                        found.append((depth, file.read(PROGRESS_LIMIT)))
        return found
    with tarfile.open(origin, "r:*") as archive:
        for seen, member in enumerate(archive):
            if seen >= submissions.MAX_MEMBERS:
                break
            path = submissions._member_path(member.name)
            depth = _where(path) if path else None
            if depth is not None and member.isreg() and member.size <= PROGRESS_LIMIT:
                found.append((depth, archive.extractfile(member).read(PROGRESS_LIMIT)))
    return found
