"""Running a submission's code, which nobody has read: its build, and the lesson tests with its servers.

Every run gets three layers, and each says what it could not do:

1. Limits, set by confine.py inside the run before anything else starts (setrlimit, hard): CPU seconds and address
   space per process, processes and threads of the user, open files, the size of a written file, no core files.
   The grade build has no AddressSanitizer: its shadow memory reserves terabytes of address space, which rules out
   RLIMIT_AS, the one memory limit the kernel enforces without cgroups. UndefinedBehaviorSanitizer stays on.
2. A watchdog here: the run's wall-clock deadline; its processes, counted every 0.2 s, stopped when they become too
   many (a fork bomb) or hold too much memory together; its output, of which the head and tail are kept, stopped
   when it passes the flood limit; its writable folders, stopped when they grow too much. Stopping kills the
   whole run, never anything else.
3. bubblewrap (Linux, where `bwrap` works): new user, PID, IPC and UTS namespaces, so the run sees only its own
   processes; a build has no network, a server shares its tests' loopback and nothing else; the file system of
   view.py (/usr, a few /etc files, the project's sources read-only, the slot's own folders); no further user
   namespaces; it all dies with the run. The tests themselves run outside it, as the grader (run_trusted), and
   start each program in it (launch.py): the student's code cannot reach them.
   Without it (macOS, or no bwrap), the file system, the network and the teacher's files are open to the code,
   the tests share its user, and a process that leaves its process group escapes the watchdog: describe() says so.

When the grader runs as root, every run runs as `nobody` instead: root ignores RLIMIT_NPROC. Under bubblewrap, a
user namespace of its own makes that count per run (kernel ucounts), so parallel runs do not share one budget.
"""
from __future__ import annotations

import json
import os
import platform
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..course import ROOT
from . import launch, text, view

CONFINE = Path(__file__).with_name("confine.py")
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30



@dataclass(frozen=True)
class Limits:
    seconds: float  # wall clock, for the whole run
    cpu_seconds: int  # per process
    memory: int  # bytes: address space per process, and resident memory of the whole run together
    processes: int = 64  # processes and threads at once; the watchdog stops a run at three quarters of it
    open_files: int = 4096
    file_size: int = 64 * MiB  # the largest file a run may write
    output: int = 8 * MiB  # a run that prints more is stopped: a flood
    disk: int = 1 * GiB  # a run whose writable folders grow by more is stopped
    files: int = 20_000  # or that makes more files there (empty files take no bytes: an inode flood)
    kept: int = 64 * KiB  # bytes kept of the output's head, and as many of its tail

    def confine_arguments(self, processes: int) -> list[str]:
        return ["--cpu", str(self.cpu_seconds), "--memory", str(self.memory), "--processes", str(processes),
                "--open-files", str(self.open_files), "--file-size", str(self.file_size)]


@dataclass
class Outcome:
    status: int | None  # the exit status (negative: killed by that signal); None when the watchdog stopped it
    output: str  # stdout and stderr together, head and tail when it was long
    stopped: str = ""  # why the watchdog stopped it, in a few words: "did not finish within 30 s"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.stopped


@dataclass
class Isolation:
    bwrap: str | None = None  # a bwrap that works here, or None
    bwrap_options: list[str] = field(default_factory=list)  # the optional ones this bwrap accepts
    user: tuple[int, int, str] | None = None  # (uid, gid, name) runs switch to: the grader is root
    refused: dict[str, str] = field(default_factory=dict)  # limits this system would not set, and why
    why_no_bwrap: str = ""

    def describe(self) -> list[str]:
        """What protects the teacher's machine, and what does not, in lines for the terminal and the report."""
        who = f" as user {self.user[2]} (the grader is root, and root ignores process limits)" if self.user else ""
        limits = "CPU time, address space, processes, open files, file size"
        lines = [f"limits (setrlimit){who}: {limits}" +
                 (f"; not enforced here: {', '.join(sorted(self.refused))}" if self.refused else ""),
                 "watchdog: wall-clock deadline, process count (fork bombs), total memory, output size (floods), "
                 "disk use"]
        if self.bwrap:
            lines.append("bubblewrap: own user, PID, IPC and UTS namespaces, and for builds no network; servers "
                         "share only the loopback of their tests, which run outside the sandbox as the grader; "
                         "the file system shows /usr, a few /etc files, the project's sources read-only and the "
                         "submission's own scratch folder" + (", a tmpfs capped in size and inodes" if
                                                              os.geteuid() == 0 else "") +
                         "; no home folders, no other submission, no report")
        else:
            lines.append(f"NO bubblewrap ({self.why_no_bwrap}): submissions' code can read and write your files, "
                         "reach the network, and a process that leaves its process group can outlive its run; "
                         "the process limit is shared with your own processes. Grade untrusted code on Linux "
                         "with bubblewrap (Debian: apt-get install bubblewrap).")
        return lines


def _user_for_runs() -> tuple[int, int, str] | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        raise RuntimeError("grading as root needs the user 'nobody' to run submissions as; there is none") from None
    return entry.pw_uid, entry.pw_gid, entry.pw_name


class Sandbox:
    """Runs commands for a submission, under isolation (see the module's text), in one slot's scratch folders."""

    def __init__(self, isolation: Isolation, *, writable: list[Path], readable: list[Path], tmp: Path) -> None:
        self.isolation = isolation
        self.writable = writable
        self.readable = readable
        self.tmp = tmp  # TMPDIR without bubblewrap; with it, the folder /tmp and /dev/shm come from (view.py)

    def environment(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(self.writable[0]),
               "TMPDIR": "/tmp" if self.isolation.bwrap else str(self.tmp), "PYTHONDONTWRITEBYTECODE": "1",
               "MALLOC_ARENA_MAX": "2"}
        for name in ("KQLAB_TIMEOUT_SCALE", "CC", "CXX"):
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def _bwrap(self, cwd: Path, *, share_network: bool = False) -> list[str]:
        """bubblewrap's command line: namespaces of its own, and the file system view.py describes. A server the
        tests start shares their network namespace (a loopback of their own, see trusted()), and nothing else."""
        namespaces = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not share_network:
            namespaces.append("--unshare-net")
        return [self.isolation.bwrap, *namespaces, *self.isolation.bwrap_options, "--die-with-parent",
                "--new-session", *view.system(), *view.private_tmp(self.tmp), *view.project(),
                *view.scratch(self.readable, self.writable),
                *view.sealed(), "--chdir", str(cwd), "--"]

    def command(self, argv: list[str] | None, limits: Limits, cwd: Path, *, share_network: bool = False) -> list[str]:
        """The command line that runs `argv` confined (None: confine.py's probe, to see what works)."""
        processes = limits.processes
        if not self.isolation.bwrap:
            # Without a user namespace of its own, RLIMIT_NPROC counts every process of the user: leave room for
            # the ones already running. The watchdog is what holds this run to `limits.processes`.
            processes += _tasks_of(os.getuid() if self.isolation.user is None else self.isolation.user[0])
        confined = [sys.executable, "-I", str(CONFINE), *limits.confine_arguments(processes),
                    *(["--", *argv] if argv is not None else ["--probe"])]
        if not self.isolation.bwrap:
            return confined
        return self._bwrap(cwd, share_network=share_network) + confined

    def trusted(self, argv: list[str]) -> list[str]:
        """The command line for the grader's own side of a test run (pytest): as the grader, outside the student's
        sandbox, in a network namespace of its own whose loopback it shares with the servers it starts, and with
        nothing else of theirs. Without bubblewrap, just `argv`."""
        if not self.isolation.bwrap:
            return argv
        user = [] if os.geteuid() == 0 else ["--unshare-user"]  # root needs no user namespace for one of net
        return [self.isolation.bwrap, *user, "--unshare-net", "--unshare-ipc", "--die-with-parent", "--dev-bind",
                "/", "/", "--", *argv]

    def run(self, argv: list[str] | None, limits: Limits, cwd: Path) -> Outcome:
        """Runs `argv` as the student's code: in the sandbox, under the limits, watched."""
        if _STOPPING.is_set():
            return Outcome(None, "", "the grader stopped")
        if self.isolation.bwrap:
            view.make_private_folders(self.tmp)
        return _Run(self, self.command(argv, limits, cwd), self.isolation.user, self.environment(), limits,
                    cwd).wait()

    def run_trusted(self, argv: list[str], limits: Limits, cwd: Path, environment: dict[str, str]) -> Outcome:
        """Runs the grader's own `argv` (the tests) outside the sandbox, as the grader (see trusted()), under the
        same limits and watchdog: what the student's servers print reaches it, and must not take it down."""
        if _STOPPING.is_set():
            return Outcome(None, "", "the grader stopped")
        if not self.isolation.bwrap:  # no second trust domain to be had: the tests run as the student's code does
            return _Run(self, self.command(argv, limits, cwd), self.isolation.user,
                        {**self.environment(), **environment}, limits, cwd).wait()
        view.make_private_folders(self.tmp)
        confined = [sys.executable, "-I", str(CONFINE), "--trusted",
                    *limits.confine_arguments(0), "--", *argv]
        return _Run(self, self.trusted(confined), None, environment, limits, cwd).wait()

    def program_prefix(self, limits: Limits) -> list[str]:
        """The command line that puts a program the tests run in this sandbox (launch.py): it shares the tests'
        network namespace, and nothing else; its HOME and TMPDIR are its own, nothing of the tests' environment
        tells it where they are."""
        command = self.command([], limits, self.writable[0], share_network=True)
        return [command[0], "--setenv", "HOME", str(self.writable[0]), "--setenv", "TMPDIR", "/tmp", "--unsetenv",
                launch.VARIABLE, *command[1:]]

    def disk_use(self) -> tuple[int, int]:
        """Bytes and files in the folders a run may write (RLIMIT_FSIZE caps one file, not how many)."""
        total = count = 0
        for folder in {*self.writable, self.tmp}:
            for parent, _, files in os.walk(folder):
                count += len(files)
                for name in files:
                    try:
                        total += os.lstat(os.path.join(parent, name)).st_blocks * 512
                    except OSError:
                        pass
        return total, count


_ACTIVE: set[_Run] = set()
_ACTIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def stop_all() -> None:
    """Stops every run still going, and starts no more (the grader is interrupted, or fails)."""
    _STOPPING.set()
    with _ACTIVE_LOCK:
        runs = list(_ACTIVE)
    for run in runs:
        run.stop("the grader stopped")


class _Run:
    """One run and its watchdog."""

    def __init__(self, sandbox: Sandbox, command: list[str], user: tuple[int, int, str] | None,
                 environment: dict[str, str], limits: Limits, cwd: Path) -> None:
        self.sandbox = sandbox
        self.limits = limits
        self.started = time.monotonic()
        self.stopped = ""
        self.lock = threading.Lock()
        self.seen: set[int] = set()
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        extra = {}
        if user:
            uid, gid, _ = user
            extra = {"user": uid, "group": gid, "extra_groups": []}
        self.process = subprocess.Popen(command, cwd=cwd, env=environment,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True, **extra)
        with _ACTIVE_LOCK:
            _ACTIVE.add(self)
        self.threads = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=self._watch, daemon=True)]
        for thread in self.threads:
            thread.start()

    def stop(self, reason: str) -> None:
        with self.lock:
            if not self.stopped:
                self.stopped = reason
        self._kill()

    def _kill(self) -> None:
        # The process group first (everything that stayed in it), then every descendant seen: under bubblewrap,
        # killing bwrap ends its PID namespace, and with it every process inside.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in list(self.seen):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        # A fork bomb's children born between the last look and the kill have left the group and were never seen:
        # without a PID namespace they live on, reparented to init. They still run a program from this slot's
        # folders, which is how they are found; kill until none is left (bounded: each round kills what it saw).
        for _ in range(50):
            strays = _running_from([*self.sandbox.writable, self.sandbox.tmp])
            if not strays:
                break
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)

    def _read(self) -> None:
        kept = self.limits.kept
        for chunk in iter(lambda: self.process.stdout.read1(64 * 1024), b""):
            self.total += len(chunk)
            if len(self.head) < kept:
                self.head += chunk[:kept - len(self.head)]
            else:
                self.tail = (self.tail + chunk)[-kept:]
            if self.total > self.limits.output:
                self.stop(f"printed more than {self.limits.output // MiB} MiB: a flood of output")
                break

    def _watch(self) -> None:
        (bytes_at_start, files_at_start), rounds = self.sandbox.disk_use(), 0
        while self.process.poll() is None:
            rounds += 1
            if rounds % 5 == 0:
                written, files = self.sandbox.disk_use()
                if written - bytes_at_start > self.limits.disk:
                    self.stop(f"wrote more than {self.limits.disk // MiB} MiB into its folders")
                elif files - files_at_start > self.limits.files:
                    self.stop(f"made more than {self.limits.files} files in its folders: an inode flood")
            tree = _descendants(self.process.pid)
            self.seen |= set(tree)
            resident = sum(tree.values())
            if len(tree) >= self.limits.processes * 3 // 4:
                self.stop(f"kept starting processes ({len(tree)} at once; the limit is {self.limits.processes}): "
                          f"a fork bomb?")
            elif resident > self.limits.memory:
                self.stop(f"used more than {self.limits.memory // MiB} MiB of memory")
            time.sleep(0.2)

    def wait(self) -> Outcome:
        try:
            self.process.wait(timeout=self.limits.seconds)
        except subprocess.TimeoutExpired:
            self.stop(f"did not finish within {self.limits.seconds:.0f} s")
            self.process.wait()
        self._kill()  # whatever it left behind
        with _ACTIVE_LOCK:
            _ACTIVE.discard(self)
        self.threads[0].join(5)  # a process that escaped may still hold the pipe: stop reading after a while
        self.process.stdout.close()
        output = bytes(self.head)
        if self.tail:
            cut = self.total - len(self.head) - len(self.tail)
            output += (f"\n[... {cut} bytes cut ...]\n".encode() if cut > 0 else b"") + bytes(self.tail)
        status = None if self.stopped else self.process.returncode
        # What the student's code printed reaches the terminal, the logs and the reports: no control characters.
        return Outcome(status, text.clean(output.decode("utf-8", "replace")), self.stopped,
                       time.monotonic() - self.started)


# Processes ---------------------------------------------------------------------------------------------------------

def _process_table() -> dict[int, tuple[int, int, int]]:
    """Every process: pid -> (parent pid, resident bytes, uid)."""
    table = {}
    if Path("/proc/self/stat").exists():
        page = os.sysconf("SC_PAGE_SIZE")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
                resident = int(Path(entry.path, "statm").read_text().split()[1]) * page
                table[int(entry.name)] = (int(stat[1]), resident, entry.stat().st_uid)
            except (OSError, ValueError, IndexError):  # it ended while we looked
                continue
        return table
    listing = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,rss=,uid="], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 4 and all(f.isdigit() for f in fields):
            table[int(fields[0])] = (int(fields[1]), int(fields[2]) * 1024, int(fields[3]))
    return table


def _running_from(folders: list[Path]) -> list[int]:
    """The live processes whose program lies in one of `folders` (Linux's /proc; elsewhere none are found)."""
    prefixes = tuple(str(folder.resolve()) + os.sep for folder in folders)
    found = []
    if not prefixes or not Path("/proc/self/exe").exists():
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/exe").startswith(prefixes):
                found.append(int(entry.name))
        except OSError:
            pass  # gone, a zombie, or not ours to look at
    return found


def _descendants(root: int) -> dict[int, int]:
    """The processes under `root`, itself included: pid -> resident bytes."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, queue = {}, [root]
    while queue:
        pid = queue.pop()
        if pid in table and pid not in found:
            found[pid] = table[pid][1]
            queue += children.get(pid, [])
    return found


def _tasks_of(uid: int) -> int:
    """How many processes (on Linux: threads) this user has: what RLIMIT_NPROC counts."""
    if Path("/proc/self/status").exists():
        count = 0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        count += len(os.listdir(Path(entry.path, "task")))
                except OSError:
                    continue
        return count
    return sum(1 for _, _, owner in _process_table().values() if owner == uid)


# Finding out what works here ----------------------------------------------------------------------------------------

def detect(scratch: Path, *, use_bwrap: bool = True) -> Isolation:
    """What isolation this machine gives, found by trying it: a bwrap that is installed may still be refused user
    namespaces. RuntimeError if even the plain limits cannot run (the project unreadable by `nobody`, say)."""
    isolation = Isolation(user=_user_for_runs())
    probe_limits = Limits(seconds=30, cpu_seconds=10, memory=1 * GiB)
    plain = Sandbox(isolation, writable=[scratch], readable=[], tmp=scratch)
    outcome = plain.run(None, probe_limits, scratch)
    if not outcome.ok:
        who = f"the user {isolation.user[2]}" if isolation.user else "this user"
        raise RuntimeError(f"cannot run submissions as {who}: {outcome.output.strip() or outcome.stopped}"
                           + (f"\n(As root, kqlab runs submissions as nobody: {ROOT} must be readable by others.)"
                              if isolation.user else ""))
    isolation.refused = json.loads(outcome.output.strip().splitlines()[-1])["refused"]
    bwrap = shutil.which("bwrap")
    if not use_bwrap:
        isolation.why_no_bwrap = "turned off with --no-sandbox"
    elif platform.system() != "Linux":
        isolation.why_no_bwrap = f"bubblewrap needs Linux; this is {platform.system()}"
    elif not bwrap:
        isolation.why_no_bwrap = "bwrap is not installed"
    else:
        for options in (["--disable-userns"], []):
            isolation.bwrap, isolation.bwrap_options = bwrap, options
            trial = Sandbox(isolation, writable=[scratch], readable=[], tmp=scratch)
            outcome = trial.run(None, probe_limits, scratch)
            if outcome.ok:
                return isolation
        isolation.bwrap, isolation.bwrap_options = None, []
        isolation.why_no_bwrap = f"bwrap does not work here: {outcome.output.strip() or outcome.stopped}"
    return isolation
