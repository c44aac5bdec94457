"""How the tests start a student's server when ./kqlab grade runs them: inside the student's sandbox, not beside
the tests.

The grader runs pytest as itself (see sandbox.Sandbox.trusted) and names, in the environment variable
KQLAB_STUDENT_SANDBOX, a file it wrote in a folder the student cannot see: the bubblewrap command line that puts a
program in the submission's sandbox (own user, PID, IPC and UTS namespaces, the file system of view.py, the limits
of confine.py, a session of its own, dying with the tests), and the user to start it as. vocabulary.Server calls
start(); without the variable (./kqlab check, ./kqlab test) it gets a plain subprocess.Popen.

The sandbox shares one thing with the tests: their network namespace, a loopback of their own, so that clients
reach the server. Its processes live in a PID namespace of their own: they cannot name the tests, so cannot
signal, trace, process_vm_writev or pidfd_getfd them.

What start() returns behaves as the subprocess.Popen the tests know, but `pid` is the server's own (the process
bubblewrap starts in the sandbox, as the tests' /proc numbers it), and a death by signal, which bubblewrap reports
as 128 + the signal, reads as -signal again, as Popen says it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

VARIABLE = "KQLAB_STUDENT_SANDBOX"
SPEC_LIMIT = 1 << 20


def start(argv: list[str], **options) -> subprocess.Popen | Sandboxed:
    """subprocess.Popen(argv, **options), in the student's sandbox when the grader asks for one."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return subprocess.Popen(argv, **options)
    with open(spec, "rb") as file:
        launcher = json.loads(file.read(SPEC_LIMIT))
    return Sandboxed(launcher["prefix"], launcher["user"], argv, options)


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


class Sandboxed:
    """A server started in the student's sandbox, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, prefix: list[str], user: list[int] | None, argv: list[str], options: dict) -> None:
        options = dict(options)
        if user is not None:
            options.update(user=user[0], group=user[1], extra_groups=[])
        self._bwrap = subprocess.Popen([*prefix, *argv], **options)
        self.stdout, self.stderr = self._bwrap.stdout, self._bwrap.stderr
        self.args = argv
        self.pid = self._find_server({os.path.realpath(prefix[0]), os.path.realpath(prefix[prefix.index("--") + 1])})

    def _find_server(self, wrappers: set[str], within: float = 10.0) -> int:
        """The server's pid: bubblewrap's monitor starts the sandbox's init, which starts confine.py (Python),
        which becomes the program. Found once something other than those runs there (or bubblewrap gave up)."""
        deadline, deepest = time.monotonic() + within, self._bwrap.pid
        while time.monotonic() < deadline and self._bwrap.poll() is None:
            pid = self._bwrap.pid
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
        code = self._bwrap.returncode
        if code is not None and 128 < code < 128 + signal.NSIG:
            return -(code - 128)
        return code

    def poll(self) -> int | None:
        self._bwrap.poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._bwrap.wait(timeout)
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
        """Ends the whole sandbox: SIGKILL to the server, then to bubblewrap, whose death ends the PID namespace."""
        self.send_signal(signal.SIGKILL)
        try:
            self._bwrap.kill()
        except ProcessLookupError:
            pass
