"""How the tests run a student's program when ./kqlab grade runs them: inside the student's sandbox, never beside
the tests.

The grader runs pytest as itself (see sandbox.Sandbox.trusted) and names, in the environment variable
KQLAB_STUDENT_SANDBOX, a file it wrote in a folder the student cannot see: the command line that puts a program
in the submission's sandbox (own user, PID, IPC and UTS namespaces, the file system of view.py, the limits of
confine.py, a session of its own, dying with the tests; as `nobody` when the grader is root). Then:

- course.program() returns, for each program, a small script beside that file (sandboxed()) that runs the real
  one that way: whatever a test does with the program (start it as a server, run it with bad arguments, run a
  lesson's unit tests) happens in the sandbox. No test can run a student's program as the grader by mistake.
- vocabulary.Server starts it through start(), which returns what subprocess.Popen would, but whose `pid` is the
  program's own (as the tests' /proc numbers it), not the script's, and whose death by a signal (which
  bubblewrap reports as 128 + the signal) reads as -signal, as Popen says it.

Without the variable (./kqlab check, ./kqlab test) programs are what they are and start() is subprocess.Popen.

The sandbox shares one thing with the tests: their network namespace, a loopback of their own, so that clients
reach the server. Its processes live in a PID namespace of their own: they cannot name the tests, so cannot signal,
trace, process_vm_writev or pidfd_getfd them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

VARIABLE = "KQLAB_STUDENT_SANDBOX"
SPEC_LIMIT = 1 << 20


def write_spec(path: Path, prefix: list[str], user: tuple[int, int] | None) -> None:
    """The grader's side: how to put a program in the sandbox, for sandboxed() to read."""
    path.write_text(json.dumps({"prefix": prefix, "user": list(user) if user else None}))


def sandboxed(program: Path) -> Path:
    """`program` itself, or under ./kqlab grade a script that runs it in the student's sandbox (with the same
    arguments, standard streams and exit status; 128 + N for a death by signal N)."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return program
    with open(spec, "rb") as file:
        launcher = json.loads(file.read(SPEC_LIMIT))
    command = list(launcher["prefix"])
    if launcher["user"]:
        uid, gid = launcher["user"]
        command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *command]
    digest = hashlib.sha256(str(program).encode()).hexdigest()[:12]
    script = Path(spec).parent / "programs" / f"{program.name}-{digest}"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!/bin/sh\n# kqlab grade: {program}, in the student's sandbox\n"
                      f"exec {shlex.join(command)} {shlex.quote(str(program))} \"$@\"\n")
    script.chmod(0o700)
    return script


def start(argv: list[str], **options) -> subprocess.Popen | Sandboxed:
    """subprocess.Popen(argv, **options), seen through the sandbox when argv[0] is a sandboxed() program."""
    if not os.environ.get(VARIABLE):
        return subprocess.Popen(argv, **options)
    return Sandboxed(argv, options)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _program(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _wrappers() -> set[str]:
    """The programs between the script and the student's program: the shell, setpriv, bwrap, confine's Python."""
    spec = json.loads(Path(os.environ[VARIABLE]).read_bytes()[:SPEC_LIMIT])
    prefix = spec["prefix"]
    found = {os.path.realpath(prefix[0]), os.path.realpath(prefix[prefix.index("--") + 1]), "/bin/sh",
             os.path.realpath("/bin/sh")}
    for tool in ("setpriv",):
        for folder in ("/usr/bin", "/bin"):
            found.add(os.path.realpath(f"{folder}/{tool}"))
    return found


class Sandboxed:
    """A program started in the student's sandbox, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, argv: list[str], options: dict) -> None:
        self._popen = subprocess.Popen(argv, **options)
        self.stdout, self.stderr, self.args = self._popen.stdout, self._popen.stderr, argv
        self.pid = self._find_program(_wrappers())

    def _find_program(self, wrappers: set[str], within: float = 10.0) -> int:
        """The program's pid: the script becomes bubblewrap, whose sandbox init starts confine.py, which becomes
        the program. Found once something else than those runs at the bottom (or bubblewrap gave up)."""
        deadline, deepest = time.monotonic() + within, self._popen.pid
        while time.monotonic() < deadline and self._popen.poll() is None:
            pid = self._popen.pid
            for _ in range(3):
                below = _children(pid)
                if not below:
                    break
                pid = below[0]
                program = _program(pid)
                if program and program not in wrappers:
                    return pid
            deepest = pid
            time.sleep(0.005)
        return deepest  # bubblewrap failed, or the program never ran: signals go to what there is

    @property
    def returncode(self) -> int | None:
        code = self._popen.returncode
        if code is not None and 128 < code < 128 + signal.NSIG:
            return -(code - 128)
        return code

    def poll(self) -> int | None:
        self._popen.poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._popen.wait(timeout)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, number)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Ends the whole sandbox: SIGKILL to the program, then to bubblewrap, whose death ends the PID namespace."""
        self.send_signal(signal.SIGKILL)
        try:
            self._popen.kill()
        except ProcessLookupError:
            pass
