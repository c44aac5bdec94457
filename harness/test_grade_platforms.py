"""Grading beyond one machine: the Gradescope autograder and the GitHub Classroom template that `./kqlab grade
--export` writes, each run here as its platform would run it, on the first lesson only.

Gradescope: the autograder is exported, unzipped into a simulated /autograder tree (KQLAB_AUTOGRADER_ROOT), and
its run_autograder run for a solved, an unsolved and a hostile submission, each read back from
results/results.json. The tree is kept in build/gradescope-tests/, so that only a first run builds the project's
own code for grading (setup.sh's job on Gradescope).

GitHub Classroom: each test of the exported autograding list is run with its own command, on a solved copy of the
lesson and on an untouched one (KQLAB_WORKSPACE keeps both away from the student's workspace/).

Most of these runs' time is lesson 01's tests waiting on sockets (an untouched copy's tests wait out their
deadlines): so the Classroom runs, which build and test in build/default, go on in the background while the
Gradescope runs, which build and test in their own tree, take their turn; the Classroom tests then read their
results. Both together take about as long as the Gradescope runs alone.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from kqlab import course, tools
from kqlab.grade import grading

# Under pytest-xdist (./kqlab test), this file's tests share their module's fixtures (the autograder's tree in
# build/gradescope-tests, the Classroom runs in the background): they all run in one worker, one after the other.
pytestmark = pytest.mark.xdist_group("grade-platforms")

FIRST = course.lessons()[0]
FIXTURES = course.HARNESS / "grade_fixtures"
AUTOGRADER = course.ROOT / "build" / "gradescope-tests"
SCALE = float(os.environ.get("KQLAB_TIMEOUT_SCALE") or 1)


def kqlab(*arguments: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([str(course.ROOT / "kqlab"), *arguments], cwd=course.ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900 * SCALE, **options)


def solution_files(lesson: course.Lesson) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in lesson.program_files(lesson.solution)}


# Gradescope ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    """The exported autograder, unzipped where Gradescope would put it: ROOT/source."""
    exported = tmp_path_factory.mktemp("export")
    done = kqlab("grade", "--lessons", FIRST.name, "--export", "gradescope", str(exported))
    assert done.returncode == 0, done.stdout
    source = AUTOGRADER / "source"
    if source.exists():  # fresh sources, but the build for grading under them kept
        kept = AUTOGRADER / "kept-build"
        shutil.rmtree(kept, ignore_errors=True)
        if (source / "kqlab" / "build").exists():
            (source / "kqlab" / "build").rename(kept)
        grading.remove(source)
    source.mkdir(parents=True)
    with zipfile.ZipFile(exported / "autograder.zip") as archive:
        names = archive.namelist()
        assert "setup.sh" in names and "run_autograder" in names  # at the zip's root, as the specification asks
        for info in archive.infolist():
            archive.extract(info, source)
            mode = info.external_attr >> 16
            if mode:
                (source / info.filename).chmod(mode & 0o777)
            # Each file's time as the zip has it (zipfile leaves the time of extraction): extracted "now", every
            # source would be newer than the kept build, and make would build it all again.
            stamp = time.mktime((*info.date_time, 0, 0, -1))
            os.utime(source / info.filename, (stamp, stamp))
    if (AUTOGRADER / "kept-build").exists():
        (AUTOGRADER / "kept-build").rename(source / "kqlab" / "build")
    grading.make_reachable(AUTOGRADER)
    subprocess.run(["chmod", "-R", "a+rX", str(source)], check=True)
    return AUTOGRADER


def run_autograder(root: Path, files: dict[str, bytes]) -> tuple[dict, str]:
    """Gradescope's run for one submission (the student's files as uploaded: workspace/NN-topic/...)."""
    for folder in ("submission", "results"):
        grading.remove(root / folder)
    for name, contents in files.items():
        (root / "submission" / "workspace" / FIRST.name).mkdir(parents=True, exist_ok=True)
        (root / "submission" / "workspace" / FIRST.name / name).write_bytes(contents)
    done = subprocess.run([str(root / "source" / "run_autograder")], cwd=root, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900 * SCALE,
                          env=dict(os.environ, KQLAB_AUTOGRADER_ROOT=str(root)))
    results = root / "results" / "results.json"
    assert results.is_file(), done.stdout
    return json.loads(results.read_text()), done.stdout


def check_format(results: dict) -> None:
    """What Gradescope's specification asks of results.json: tests with name, score, max_score, output,
    visibility; the score their sum."""
    assert results["tests"], results
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output", "visibility"}, test
        assert test["visibility"] in ("hidden", "after_due_date", "after_published", "visible")
        assert 0 <= test["score"] <= test["max_score"]
    assert results["score"] == sum(test["score"] for test in results["tests"])


def test_gradescope_solved_submission_gets_every_point(autograder):
    results, output = run_autograder(autograder, solution_files(FIRST))
    check_format(results)
    names = [test["name"] for test in results["tests"]]
    assert len(names) == len(set(names)) and all(name.startswith(f"{FIRST.name}: test_") for name in names)
    assert results["score"] == len(results["tests"]), output


def test_gradescope_unsolved_submission_fails_with_reasons(autograder):
    exercise = {path.name: path.read_bytes() for path in FIRST.program_files(FIRST.exercise)}
    results, output = run_autograder(autograder, exercise)
    check_format(results)
    failed = [test for test in results["tests"] if test["score"] == 0]
    assert failed, output
    assert all("See lessons/" in test["output"] or "Expected" in test["output"] for test in failed), failed[0]


def test_gradescope_hostile_submission_is_contained(autograder):
    """A server that reads the teacher's and other files and prints escapes: its results hold neither."""
    secret = course.ROOT / "build" / "grade-teacher" / "gradescope-key.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("KQLAB-SECRET-OF-THE-TEACHER\n")
    secret.chmod(0o644)
    source = (f'#define KQLAB_TEACHER_FILE "{secret}"\n#define KQLAB_SCRATCH "{autograder}"\n').encode() + \
        (FIXTURES / "reads_secrets.cpp").read_bytes()
    escapes = (FIXTURES / "prints_escapes.cpp").read_bytes().replace(b"int main()", b"int print_escapes()")
    source = escapes + source.replace(b"  return 3;\n}", b"  print_escapes();\n  return 3;\n}")
    results, output = run_autograder(autograder, {"main.cpp": source})
    check_format(results)
    assert results["score"] < len(results["tests"]), output
    shown = "\n".join([results["output"], *(test["output"] for test in results["tests"])])
    assert "KQLAB-SECRET-OF-THE-TEACHER" not in shown
    assert f"could not read {secret}" in shown, shown[:2000]
    assert not re.search("[\x1b\x9b\u202e\x07]", shown)


# GitHub Classroom ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classroom(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("classroom")
    done = kqlab("grade", "--lessons", FIRST.name, "--export", "classroom", str(folder))
    assert done.returncode == 0, done.stdout
    return folder


CLASSROOM_COPIES = {"test_classroom_template_fails_an_untouched_copy": ("classroom-untouched", None),
                    "test_classroom_template_passes_a_solved_copy": ("classroom-solved", FIRST)}


@pytest.fixture(scope="module", autouse=True)
def classroom_runs(request):
    """The Classroom runs of the tests selected (CLASSROOM_COPIES), started as this file's first test starts and run
    one after the other in the background, the untouched copy's first: its tests take longest. By the name of the
    test that reads each one's result."""
    selected = {item.name for item in request.session.items if item.path == request.path}
    wanted = {test: copy for test, copy in CLASSROOM_COPIES.items() if test in selected}
    folder = request.getfixturevalue("classroom") if wanted else None
    pool = ThreadPoolExecutor(1, thread_name_prefix="classroom")
    runs: dict[str, Future] = {test: pool.submit(run_classroom, folder, workspace, solution_files(solved) if solved
                                                 else None) for test, (workspace, solved) in wanted.items()}
    yield runs
    pool.shutdown(cancel_futures=True)


def classroom_tests(folder: Path) -> list[dict]:
    listed = json.loads((folder / ".github" / "classroom" / "autograding.json").read_text())["tests"]
    workflow = (folder / ".github" / "workflows" / "classroom.yml").read_text()
    for test in listed:  # the workflow runs the same list
        assert f"command: {json.dumps(test['run'])}" in workflow and f"max-score: {test['points']}" in workflow
    return listed


def run_classroom(folder: Path, workspace: str, files: dict[str, bytes] | None) -> dict[str, bool]:
    """Each test's command, run as the workflow would in the student's repository (here: this project, with the
    student's work in KQLAB_WORKSPACE=`workspace`); which passed."""
    copy = course.BUILD / "default" / "workspaces" / workspace
    # build/default's CMake finds the copies there (workspace-NAME targets): while it configures, under the tree's
    # build lock, no copy may vanish from under it (another check may be building in the tree meanwhile).
    with tools.build_lock(course.BUILD / "default"):
        grading.remove(copy)
        if files is not None:
            (copy / FIRST.name).mkdir(parents=True)
            for name, contents in files.items():
                (copy / FIRST.name / name).write_bytes(contents)
    passed = {}
    for test in classroom_tests(folder):
        done = subprocess.run(shlex.split(test["run"]), cwd=course.ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=test["timeout"] * 60 * SCALE,
                              env=dict(os.environ, KQLAB_WORKSPACE=workspace))
        passed[test["name"]] = done.returncode == 0
    return passed


def test_classroom_template_passes_a_solved_copy(classroom_runs):
    assert classroom_runs["test_classroom_template_passes_a_solved_copy"].result() == {FIRST.name: True}


def test_classroom_template_fails_an_untouched_copy(classroom_runs):
    assert classroom_runs["test_classroom_template_fails_an_untouched_copy"].result() == {FIRST.name: False}


def test_classroom_template_commits_the_students_work(classroom):
    ignored = (classroom / ".gitignore").read_text().splitlines()
    assert "/workspace/" not in ignored and "/build/" in ignored
    assert json.loads((classroom / ".github" / "classroom" / "autograding.json").read_text())["tests"][0]["points"]
