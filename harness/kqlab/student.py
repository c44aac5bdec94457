"""The student's commands: the course map (./kqlab), check, hint and reset.

The student edits only workspace/NN-topic/, a copy of the exercise made the first time they reach the lesson. So
the course's own tests always see untouched exercises, a course update never conflicts with the student's work,
and starting a lesson over is a copy.
"""
from __future__ import annotations

import re
import shutil
import time

from . import course, tools
from .course import Lesson


def _relative(path) -> str:
    return str(path.relative_to(course.ROOT))


def _ensure_workspace(lesson: Lesson) -> None:
    if not lesson.workspace.exists():
        lesson.copy_exercise_to(lesson.workspace)
        print(f"Copied the exercise of lesson {lesson.number:02d} to {_relative(lesson.workspace)}/: "
              f"that copy is yours to edit.")


def _files_to_edit(lesson: Lesson) -> str:
    return ", ".join(_relative(path) for path in lesson.program_files(lesson.workspace))


def course_map() -> int:
    lessons = course.lessons()
    here = course.current()
    if here is not None:
        _ensure_workspace(here)
    print("\nkqlab: event-driven network programming with kqueue\n")
    width = max(len(lesson.title) for lesson in lessons)
    for lesson in lessons:
        where = "   <- you are here" if lesson == here else ""
        print(f"  {lesson.number:02d}  {lesson.title:<{width}}  {course.status(lesson)}{where}")
    print()
    if here is None:
        print("Every lesson is done. Well done! The solutions are in solutions/, to compare with yours.")
        return 0
    print(f"Next: read {_relative(here.readme)}, then fill in the TODO(N) gaps in {_files_to_edit(here)}.")
    print(f"      Run ./kqlab check {here.number} to build your copy and test it; stuck? ./kqlab hint {here.number}")
    return 0


def _chosen(key: str | None) -> Lesson:
    if key:
        return course.lesson(key)
    return course.current() or course.lessons()[-1]


def check(key: str | None) -> int:
    lesson = _chosen(key)
    _ensure_workspace(lesson)
    tools.banner(f"Building your copy of lesson {lesson.number:02d} ({_relative(lesson.workspace)}), with "
                 f"AddressSanitizer and UndefinedBehaviorSanitizer")
    if tools.configure("default", quiet=True) != 0:
        return 1
    if tools.build("default", (f"workspace_{lesson.name}",)) != 0:
        course.record(lesson, "failing: does not compile")
        print("\nYour copy does not compile yet. Fix the first error the compiler reports (above) first: the "
              "others often follow from it.")
        return 1
    tools.banner(f"Testing it ({_relative(lesson.tests)})")
    junit = tools.build_dir("default") / "junit" / f"check-{lesson.name}.xml"
    status, tally = tools.pytest([tools.shown(lesson.tests), "--impl", "workspace", "-v", "--no-header"], junit)
    if status not in (0, 1) or tally.total == 0:
        print(f"\nThe tests could not run (pytest exit status {status}): see above.")
        return status or 1
    done = tally.failed == 0
    course.record(lesson, "done" if done else f"failing: {tally.passed} of {tally.total} tests pass")
    print()
    if done:
        following = course.current()
        print(f"Lesson {lesson.number:02d} is done: all {tally.total} tests pass.")
        if following is not None and following != lesson:
            print(f"Next: lesson {following.number:02d}, {following.title}. Run ./kqlab to start it.")
        return 0
    print(f"Lesson {lesson.number:02d}: {tally.passed} of {tally.total} tests pass. Each failure above replays "
          f"what the test did and names the section of {_relative(lesson.readme)} to reread.")
    print(f"Stuck? ./kqlab hint {lesson.number}")
    return 1


def _hints(lesson: Lesson) -> dict[int, str]:
    """hints.md's sections, by gap number: each starts with a heading that names its TODO(N)."""
    text = lesson.hints.read_text(encoding="utf-8")
    parts = re.split(r"^(?=#+ .*TODO\(\d+\))", text, flags=re.MULTILINE)
    return {int(re.search(r"TODO\((\d+)\)", part).group(1)): part.strip() for part in parts[1:]}


def hint(key: str | None, gap: str | None) -> int:
    lesson = _chosen(key)
    hints = _hints(lesson)
    if gap is None:
        # The first gap still open in the student's copy: that is where they are stuck.
        text = "".join(p.read_text(encoding="utf-8") for p in lesson.program_files(lesson.workspace)) \
            if lesson.workspace.exists() else "TODO(1)"
        open_gaps = sorted(int(n) for n in re.findall(r"TODO\((\d+)\)", text))
        if not open_gaps:
            print(f"Your copy of lesson {lesson.number:02d} has no TODO(N) left. For the hint on one gap: "
                  f"./kqlab hint {lesson.number} N, for N in {sorted(hints)}.")
            return 0
        number = open_gaps[0]
    else:
        number = int(gap) if gap.isdigit() else -1
    if number not in hints:
        print(f"Lesson {lesson.number:02d} has no gap TODO({gap}); its gaps are {sorted(hints)}.")
        return 2
    print(hints[number])
    others = [n for n in sorted(hints) if n != number]
    print(f"\n(Other hints: ./kqlab hint {lesson.number} N, for N in {others}.)")
    return 0


def reset(key: str | None) -> int:
    if key is None:
        print("usage: ./kqlab reset N   (puts a fresh copy of lesson N's exercise in workspace/; yours is kept)")
        return 2
    lesson = course.lesson(key)
    if lesson.workspace.exists():
        kept = course.WORKSPACE / ".old" / f"{lesson.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(lesson.workspace), kept)
        print(f"Moved your copy to {_relative(kept)}/.")
    course.forget(lesson)
    _ensure_workspace(lesson)
    return 0
