"""How far up each gap's hint ladder a student went, for the reports: read from the progress file their submission
may include (workspace/.progress, which ./kqlab writes: see course.py).

The file is the student's word. submissions.py takes it with the sources, under the same care (in a confined
child for an archive, never through a link, at most PROGRESS_LIMIT bytes); here only what parses as
"TODO(N) rung K" for a lesson is kept, and the reports print it in their own words. No file at all is "" (not
known), which the reports tell apart from "none" (the file is there, no hint was asked for).
"""
from __future__ import annotations

from .. import course
from . import submissions


def rungs_used(progress: str | None) -> dict[str, dict[int, int]] | None:
    """lesson -> gap -> the highest rung shown, from a submission's progress file; None without one."""
    if progress is None:
        return None
    used = {}
    for line in progress.splitlines():
        parsed = course.parse_progress_line(line)
        if parsed and submissions.LESSON.fullmatch(parsed[0]):
            used[parsed[0]] = parsed[1].rungs
    return used


def summary(progress: str | None, lesson: str) -> str:
    """One lesson's hints as a report shows them: "TODO(1) rung 2, TODO(3) rung 1", "none", or "" (not known)."""
    used = rungs_used(progress)
    if used is None:
        return ""
    return course.rungs_text(used.get(lesson, {})) or "none"
