"""For teachers who prefer plain pytest: `pytest harness/ --impl workspace --workspace DIR --junitxml=alice.xml`.

conftest.py calls this when --workspace is given: the lesson's program is built from DIR (a student's workspace/
folder) with the project's build files, in a build tree of its own, then tested as usual. There is no sandbox
here: that is `./kqlab grade`'s job, for code nobody has read.

The build tree is --build-dir if given, else build/workspaces/NAME-HASH (one per workspace folder). A new tree is
configured like the `default` preset (AddressSanitizer and UBSan, as `./kqlab check`); an existing one keeps its
settings, and only learns where the workspace is.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from .. import course
from ..course import ROOT, Lesson

_configured: set[tuple[Path, Path]] = set()
_built: dict[tuple[Path, str], tuple[bool, str]] = {}


def build_dir_for(workspace: Path) -> Path:
    resolved = workspace.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    name = re.sub(r"[^\w.-]+", "_", resolved.parent.name if resolved.name == "workspace" else resolved.name)
    return ROOT / "build" / "workspaces" / f"{name}-{digest}"


def locate(lesson: Lesson, impl: str, build_dir: Path, workspace: Path | None, name: str | None = None, *,
           build_dir_given: bool = True, build=None) -> tuple[Path | None, str]:
    """Where every lesson fixture finds a lesson's program (or the one called `name`: a program of a lesson that
    has several, or lesson 10's unit_tests), in the build folder the options chose: with a `workspace`, built from
    it into `build_dir` if the user gave one (`build_dir_given`), else into build/workspaces/NAME-HASH; without,
    bin/IMPL/ of `build_dir`, as `./kqlab test` or `./kqlab check` built it. (the path, "") or (None, why not).
    `build` stands in for program() (tests of this function)."""
    if workspace is not None:
        chosen = build_dir if build_dir_given else build_dir_for(workspace)
        return (build or program)(workspace, chosen, lesson, name)
    path = course.program(build_dir, impl, lesson, name)
    if not path.exists():
        return None, f"{path} does not exist"
    return path, ""


def program(workspace: Path, build_dir: Path, lesson: Lesson, name: str | None = None) -> tuple[Path | None, str]:
    """Builds `lesson` from `workspace` into `build_dir`: (the program, or the one called `name` of a lesson with
    several, and "") or (None, why not, with the output)."""
    workspace, build_dir = workspace.resolve(), build_dir.resolve()
    if not (workspace / lesson.name).is_dir():
        return None, f"{workspace} has no {lesson.name}/: the student has not started lesson {lesson.number:02d}."
    if (build_dir, workspace) not in _configured:
        settings = [] if (build_dir / "CMakeCache.txt").exists() else \
            ["-DCMAKE_BUILD_TYPE=Debug", "-DKQLAB_SANITIZE=address,undefined"]
        done = _run(["cmake", "-S", str(ROOT), "-B", str(build_dir), f"-DKQLAB_WORKSPACE_DIR={workspace}", *settings])
        if done.returncode:
            return None, f"CMake could not configure {build_dir}:\n{done.stdout}"
        _configured.add((build_dir, workspace))
    key = (build_dir, lesson.name)
    if key not in _built:
        done = _run(["cmake", "--build", str(build_dir), "--target", f"workspace_{lesson.name}", "--parallel"])
        _built[key] = (done.returncode == 0, done.stdout)
    ok, output = _built[key]
    if not ok:
        return None, f"{workspace / lesson.name} does not compile:\n{output[-8000:]}"
    return course.program(build_dir, "workspace", lesson, name), ""


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
