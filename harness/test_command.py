"""The kqlab command itself, as a student meets it: with fixture exercises that do not compile, fail a test, pass,
or crash; hints one at a time, reset, the solution only once a lesson passes; watch; --help everywhere; colour
only on a terminal.

Each fixture is a workspace of its own (KQLAB_WORKSPACE=NAME: build/default/workspaces/NAME/, built as the CMake
target workspace-NAME_NN-topic), so the student's workspace/ and progress are never touched. The command runs as
a student runs it, in a subprocess, with its output going to a pipe (so: no colour).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kqlab import __main__ as command
from kqlab import course, mutants, student, tools, ui, watch

# This file's tests share state (fixture workspaces in build/default): under pytest-xdist they all run in one worker,
# one after the other. Other checks build in build/default meanwhile (test_course.py's mutants): CMake finds the
# fixture workspaces there when it configures, so a fixture workspace is made and removed only under the tree's build
# lock (held()), which every configure and build in the tree holds; the kqlab command takes it itself.
pytestmark = pytest.mark.xdist_group("command")

LESSON = course.lessons()[0]
# How many tests lesson 01 has: what `./kqlab check 1` counts.
TESTS = sum(len(re.findall(r"^def test_", path.read_text(encoding="utf-8"), re.MULTILINE))
            for path in LESSON.tests.glob("test_*.py"))
SOURCE = "echo_server.cpp"  # the file the fixtures break (lesson 01's only file)
BUILD = tools.build_dir("default")


def workspace_of(name: str) -> Path:
    return BUILD / "workspaces" / name


def held():
    """build/default to ourselves, while a fixture workspace (or a lesson in it) comes or goes: a CMake run in the
    tree (each holds this lock) never sees a folder vanish between listing it and reading it. Never around a command
    that builds: it takes the lock itself."""
    return tools.build_lock(BUILD)


def environment(name: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, KQLAB_WORKSPACE=name, PYTHONPATH=str(course.HARNESS), **extra)
    env.pop("NO_COLOR", None)
    return env


def kqlab(name: str, *arguments: str, stdin: str = "", **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kqlab", *arguments], cwd=course.ROOT, input=stdin,
                          capture_output=True, text=True, env=environment(name, **extra), timeout=600)


@pytest.fixture
def fixture_workspace(request: pytest.FixtureRequest):
    """Makes a workspace named for the test, with lesson 01's exercise in it; removes it afterwards."""
    name = "test-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]
    root = workspace_of(name)
    with held():
        shutil.rmtree(root, ignore_errors=True)
        (root / LESSON.name).mkdir(parents=True)
        LESSON.copy_exercise_to(root / LESSON.name)
    yield name
    with held():
        shutil.rmtree(root, ignore_errors=True)


def put(name: str, text: str) -> None:
    """Writes the student's copy of lesson 01 in workspace `name`."""
    (workspace_of(name) / LESSON.name / SOURCE).write_text(text, encoding="utf-8")


def solution_text() -> str:
    return (LESSON.solution / SOURCE).read_text(encoding="utf-8")


def with_mutant(name: str) -> str:
    mutant = next(m for m in mutants.of(LESSON) if m.name == name)
    return mutant.patch(solution_text(), LESSON)


def broken_to_compile() -> str:
    return solution_text().replace("  clients_.erase(fd);\n  close(fd);\n", "  clients_.erase(fd)\n  close(fd);\n")


def exercise_broken_to_compile() -> str:
    return (LESSON.exercise / SOURCE).read_text(encoding="utf-8") + "\nint broken = ;\n"


def crashing() -> str:
    """The solution with a use after free: the closed client's record is read after it was erased."""
    text = solution_text()
    old = "  clients_.erase(fd);\n  close(fd);\n"
    assert text.count(old) == 1, "the crash fixture no longer applies to the solution: update it"
    return text.replace(old, "  const Client& gone = clients_.at(fd);\n  clients_.erase(fd);\n  close(fd);\n"
                             "  if (gone.serial_ == 0) std::abort();  // FIXTURE: reads freed memory\n")


def progress(name: str) -> str:
    path = workspace_of(name) / ".progress"
    return path.read_text(encoding="utf-8") if path.exists() else ""


# check, with fixture exercises ------------------------------------------------------------------------------------

def test_compile_error(fixture_workspace: str) -> None:
    put(fixture_workspace, broken_to_compile())
    done = kqlab(fixture_workspace, "check", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Build error: Your copy of lesson 01 does not compile. The first error is at" in done.stdout, done.stdout
    assert f"workspaces/{fixture_workspace}/01-echo/echo_server.cpp:" in done.stdout
    paragraph, _, raw = done.stdout.partition("--- the raw output ---")
    assert "Fix the first error" in paragraph and "error:" in raw, done.stdout
    assert "01-echo failing: does not compile" in progress(fixture_workspace)


def test_failing_test(fixture_workspace: str) -> None:
    put(fixture_workspace, with_mutant("write-error-is-fatal"))
    done = kqlab(fixture_workspace, "check", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "test_vanishing_client_disturbs_nobody FAILED" in done.stdout, done.stdout
    passing = re.search(rf"Lesson 01: (\d+) of {TESTS} tests pass\.", done.stdout)
    assert passing and "Stuck? ./kqlab hint 1" in done.stdout, done.stdout
    assert "Crash" not in done.stdout and "\033[" not in done.stdout, "colour or a crash report in a pipe"
    assert f"01-echo failing: {passing.group(1)} of {TESTS} tests pass" in progress(fixture_workspace)
    refused = kqlab(fixture_workspace, "solution", "1")
    assert refused.returncode == 1 and "does not pass yet" in refused.stdout and "#include" not in refused.stdout


def test_passing(fixture_workspace: str) -> None:
    put(fixture_workspace, solution_text())
    done = kqlab(fixture_workspace, "check", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Lesson 01 is done: all {TESTS} tests pass." in done.stdout
    assert "01-echo done" in progress(fixture_workspace)
    shown = kqlab(fixture_workspace, "solution", "1")
    assert shown.returncode == 0 and "is the reference solution, line for line" in shown.stdout
    put(fixture_workspace, solution_text().replace("  close(fd);\n}\n", "  close(fd);  // mine\n}\n", 1))
    diff = kqlab(fixture_workspace, "solution", "1")
    assert "-  close(fd);  // mine" in diff.stdout and "+  close(fd);" in diff.stdout, diff.stdout
    full = kqlab(fixture_workspace, "solution", "1", "--full")
    assert full.stdout.count("#include") >= 3 and "// mine" not in full.stdout
    course_map = kqlab(fixture_workspace)
    total = len(course.lessons())
    assert f"] 1/{total} lessons done" in course_map.stdout, course_map.stdout
    if total == 1:
        assert "[" + "#" * 30 + "] 1/1" in course_map.stdout and "Every lesson is done" in course_map.stdout
    else:  # on to the next lesson
        assert re.search(r"02 .*<- you are here", course_map.stdout), course_map.stdout


def test_crash(fixture_workspace: str) -> None:
    put(fixture_workspace, crashing())
    done = kqlab(fixture_workspace, "check", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    before, _, paragraph = done.stdout.partition("Crash: ")
    paragraph = " ".join(paragraph.split())
    assert "AddressSanitizer reported a heap-use-after-free" in paragraph, done.stdout
    assert "The first line of your code in its report: echo_server.cpp:" in paragraph, paragraph
    assert "in EchoServer::close_client" in paragraph, paragraph
    # Each report once: in its failing test's output, which the paragraph points back to, not again below it.
    assert "ERROR: AddressSanitizer: heap-use-after-free" in before, done.stdout
    assert "ERROR: AddressSanitizer" not in paragraph, "the sanitizer report printed twice"


def test_no_toolchain(fixture_workspace: str) -> None:
    done = kqlab(fixture_workspace, "check", "1", PATH="/nonexistent")
    assert done.returncode == 1
    assert "No toolchain: CMake is not installed, or not on PATH." in done.stdout, done.stdout
    assert "apt-get install cmake make g++" in done.stdout


# hint, reset, list ------------------------------------------------------------------------------------------------

def test_hints_climb_one_rung_at_a_time_and_are_remembered(fixture_workspace: str) -> None:
    first = kqlab(fixture_workspace, "hint")
    assert first.stdout.startswith("Lesson 01, TODO(1): ") and "Rung 1 of 3: the idea" in first.stdout, first.stdout
    second = kqlab(fixture_workspace, "hint")  # the same gap, one rung up
    assert "TODO(1)" in second.stdout.splitlines()[0] and "Rung 2 of 3: the tools" in second.stdout, second.stdout
    other = kqlab(fixture_workspace, "hint", "1", "3")  # another gap starts at its first rung
    assert "TODO(3)" in other.stdout.splitlines()[0] and "Rung 1 of 3" in other.stdout, other.stdout
    assert "hints: TODO(1) rung 2, TODO(3) rung 1" in progress(fixture_workspace)
    listed = kqlab(fixture_workspace, "list")
    assert "hints: TODO(1) rung 2, TODO(3) rung 1" in listed.stdout.splitlines()[0], listed.stdout
    # Gap 1 filled in: the first gap still open is 2, and its ladder starts at the bottom.
    text = (LESSON.exercise / SOURCE).read_text(encoding="utf-8").replace("TODO(1)", "DONE(1)")
    put(fixture_workspace, text)
    assert "TODO(2)" in kqlab(fixture_workspace, "hint").stdout.splitlines()[0]
    # A teacher's view: one rung, or all three; what is shown is remembered all the same.
    third = kqlab(fixture_workspace, "hint", "1", "4", "--rung", "3")
    assert "Rung 3 of 3: the shape" in third.stdout and "Rung 1" not in third.stdout, third.stdout
    every = kqlab(fixture_workspace, "hint", "1", "5", "--all")
    assert [line.split(". Rung ")[1][0] for line in every.stdout.splitlines() if ". Rung " in line] == ["1", "2", "3"]
    assert "TODO(4) rung 3, TODO(5) rung 3" in progress(fixture_workspace)
    top = kqlab(fixture_workspace, "hint", "1", "5")  # past the top: the last rung again, nothing new counted
    assert "Rung 3 of 3" in top.stdout and "last rung" in top.stdout, top.stdout
    missing = kqlab(fixture_workspace, "hint", "1", "9")
    assert missing.returncode == 2 and "no gap TODO(9)" in missing.stdout
    wrong = kqlab(fixture_workspace, "hint", "1", "1", "--rung", "4")
    assert wrong.returncode == 2 and "--rung takes 1 to 3" in wrong.stdout
    answers = kqlab(fixture_workspace, "hint", "1", "predict")
    assert answers.returncode == 0 and answers.stdout.strip(), "the answers to the lesson's predictions"


def test_progress_from_before_ladders_still_reads() -> None:
    name, entry = course.parse_progress_line("01-echo done | hints shown: 1 3")
    assert name == "01-echo" and entry.status == "done" and entry.rungs == {1: 3, 3: 3}


def test_hint_after_a_finished_lesson_does_not_start_the_next(fixture_workspace: str) -> None:
    if len(course.lessons()) < 2:
        pytest.skip("one lesson only: there is no next lesson")
    (workspace_of(fixture_workspace) / ".progress").write_text(f"{LESSON.name} done\n")
    done = kqlab(fixture_workspace, "hint")
    following = course.lessons()[1]
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"Lesson 01 is done; run ./kqlab to start {following.number:02d}.", done.stdout
    assert "TODO(" not in done.stdout
    assert not (workspace_of(fixture_workspace) / following.name).exists()
    assert following.name not in progress(fixture_workspace), "asking for a hint is not starting a lesson"


def test_output_into_a_closed_pipe_ends_quietly(fixture_workspace: str) -> None:
    """./kqlab list | head: the reader may go away before the writer is done. Here it is gone from the start."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run([sys.executable, "-m", "kqlab", "list"], cwd=course.ROOT, stdout=writer,
                              stderr=subprocess.PIPE, text=True, env=environment(fixture_workspace), timeout=60)
    finally:
        os.close(writer)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 128 + 13, done.returncode  # as a program killed by SIGPIPE


def test_readme_says_which_command_is_whose() -> None:
    top = (course.ROOT / "README.md").read_text(encoding="utf-8").split("\n## ", 2)[1]
    assert "./kqlab test" in top and "minutes" in top, "README: ./kqlab test checks the whole project, in minutes"
    assert "./kqlab check" in top and "./kqlab watch" in top, "README: a student checks their work with check/watch"


def test_reset_asks_first_and_keeps_a_backup(fixture_workspace: str) -> None:
    put(fixture_workspace, "// my work\n")
    kqlab(fixture_workspace, "hint")
    declined = kqlab(fixture_workspace, "reset", "1", stdin="n\n")
    assert declined.returncode == 1 and "Nothing changed" in declined.stdout
    unanswered = kqlab(fixture_workspace, "reset", "1")  # no one to answer: the default, no
    assert unanswered.returncode == 1
    assert (workspace_of(fixture_workspace) / LESSON.name / SOURCE).read_text() == "// my work\n"
    with held():  # reset moves the lesson's folder away, then makes a fresh one
        done = kqlab(fixture_workspace, "reset", "1", stdin="y\n")
    assert done.returncode == 0, done.stdout
    copy = (workspace_of(fixture_workspace) / LESSON.name / SOURCE).read_text()
    assert copy == (LESSON.exercise / SOURCE).read_text()
    kept = list((workspace_of(fixture_workspace) / ".old").glob(f"{LESSON.name}-*/{SOURCE}"))
    assert [path.read_text() for path in kept] == ["// my work\n"]
    assert "hints shown" not in progress(fixture_workspace)
    with held():
        assert kqlab(fixture_workspace, "reset", "1", "--yes").returncode == 0
    assert len(list((workspace_of(fixture_workspace) / ".old").iterdir())) == 2


def test_list_and_errors(fixture_workspace: str) -> None:
    listed = kqlab(fixture_workspace, "list")
    assert listed.stdout.split()[:3] == [LESSON.name, "started", *LESSON.title.split()[:1]], listed.stdout
    unknown = kqlab(fixture_workspace, "frobnicate")
    assert unknown.returncode == 2 and "there is no command 'frobnicate'" in unknown.stderr
    no_lesson = kqlab(fixture_workspace, "check", "77")
    assert no_lesson.returncode == 2 and "there is no lesson '77'" in no_lesson.stderr


@pytest.mark.parametrize("name", [c.name for c in command.COMMANDS] + ["help"])
def test_every_subcommand_has_help(name: str) -> None:
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as exit:
        command.main([name, "--help"])
    assert exit.value.code == 0 and f"usage: ./kqlab {name}" in output.getvalue()


def test_colour_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        encoding = "utf-8"

        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert ui.colour_enabled(Terminal()) and not ui.colour_enabled(io.StringIO())
    assert "\033[" in ui.paint("done", "green", stream=Terminal())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not ui.colour_enabled(Terminal()) and ui.paint("done", "green", stream=Terminal()) == "done"


# watch ------------------------------------------------------------------------------------------------------------

class Running:
    """A command running in the background, its output read line by line as it comes."""

    def __init__(self, name: str, *arguments: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "kqlab", *arguments], cwd=course.ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env=environment(name, KQLAB_WATCH_INTERVAL="0.2"))
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, within: float = 300) -> str:
        """The output up to the line that contains `text`."""
        deadline = time.monotonic() + within
        start = len(self.seen)
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return "".join(self.seen[start:])
        pytest.fail(f"watch never printed {text!r}; it printed:\n{''.join(self.seen)}", pytrace=False)

    def send(self, keys: str) -> None:
        self.process.stdin.write(keys)
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def test_watch_rechecks_on_save(fixture_workspace: str) -> None:
    put(fixture_workspace, exercise_broken_to_compile())
    running = Running(fixture_workspace, "watch")
    try:
        shown = running.wait_for("Watching ")
        assert "Build error: Your copy of lesson 01 does not compile." in shown
        assert "Lesson 01: does not compile" in shown
        running.send("h\n")  # a hint, without leaving watch
        assert "Rung 1 of 3: the idea" in running.wait_for("Hints used in lesson")
        put(fixture_workspace, solution_text())  # saved: watch notices, rebuilds, retests
        shown = running.wait_for("passes")
        assert f"Lesson 01 passes: all {TESTS} tests pass." in shown
        if len(course.lessons()) > 1:  # asked whether to move on (a prompt, no newline): stay, then quit
            running.send("n\n")
            running.send("q\n")
        assert running.process.wait(60) == 0
        assert "01-echo done" in progress(fixture_workspace)
    finally:
        running.stop()


def test_watch_moves_on_only_with_consent(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The loop itself, without builds: two lessons, the first passing at once."""
    second = course.Lesson("02-second")
    monkeypatch.setattr(student, "_chosen", lambda key: LESSON)
    monkeypatch.setattr(student, "_ensure_workspace", lambda lesson: None)
    monkeypatch.setattr(student, "files_to_edit", lambda lesson: "its files")
    monkeypatch.setattr(course, "current", lambda: second)
    checked = []

    def run_once(lesson: course.Lesson) -> student.Outcome:
        checked.append(lesson.name)
        return student.Outcome("passed", tools.Tally(passed=9), "all 9 tests pass")

    monkeypatch.setattr(watch, "run_once", run_once)
    monkeypatch.setattr(course.Lesson, "title", property(lambda self: f"title of {self.name}"))
    answers = iter(["n", "q"])  # no, stay on lesson 01; then quit
    monkeypatch.setattr(watch.Keys, "get", lambda self, timeout: next(answers, "q"))
    assert watch.watch(argparse.Namespace(lesson=None, keys=False)) == 0
    assert checked == [LESSON.name] and "Go on to lesson 02, title of 02-second? [Y/n] no" in capsys.readouterr().out
    answers = iter(["y", "q"])  # yes: watch goes on with lesson 02
    assert watch.watch(argparse.Namespace(lesson=None, keys=False)) == 0
    assert checked == [LESSON.name, LESSON.name, "02-second"]


def test_the_suite_says_how_long_it_takes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kqlab import suite

    monkeypatch.setattr(suite.tools, "build_dir", lambda preset: tmp_path)
    assert suite._estimate() == "on 2 cores it takes about 5 min"
    (tmp_path / "kqlab-test-seconds").write_text("190\n")
    assert suite._estimate() == "the last run here took 3 min"
