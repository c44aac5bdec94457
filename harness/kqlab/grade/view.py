"""What a student's sandbox shows: the bubblewrap options that build its file system, and nothing else.

The sandbox starts from an empty root (bubblewrap's own tmpfs) and gets, read-only unless said otherwise:

    /usr, and /bin /lib /lib64 /sbin as the links (or folders) they are here   the system's programs, libraries
                                                                               and compiler
    /etc: only ld.so.cache, ld.so.conf(.d), alternatives/ (where /usr/bin/c++ points), passwd, group,
          nsswitch.conf, hosts, host.conf, localtime                          no shadow, no keys, no secrets
    /proc of its own PID namespace, a minimal /dev
    the project's CMakeLists.txt, CMakePresets.json, compat/, lessons/, harness/, bench/, docs/
                                                                               never build/ (other slots, other
                                                                               runs), workspace/, solutions/, .git/
    this slot's workspace/ (the submission's sources)                          read-only
    this slot's build/ (a tmpfs with a size and an inode cap when the grader is root), read-write
    /tmp and /dev/shm: folders of this slot's sandbox-tmp/ (another capped   so every byte and inode the
          tmpfs when root), which is not itself in the sandbox                 student writes is capped and
                                                                               goes when the submission is done

Nothing else of the host is there: no /home, /root, /run, /var, /mnt, /media, no other slot and no report. The
sandbox's own root and /dev are read-only (sealed()), so the slot's build/ is the only place it can write.
Python itself, pytest and the tools are found where they are installed; one outside /usr is bound too.
"""
from __future__ import annotations

import functools
import shutil
import sys
from pathlib import Path

from ..course import ROOT

# The project's files a build reads (CMakeLists.txt adds these folders when they exist). Not solutions/: grading
# builds only the student's copies, and a teacher's own reference stays out of the student's reach.
PROJECT_ENTRIES = ("CMakeLists.txt", "CMakePresets.json", "compat", "lessons", "harness", "bench", "docs")
SYSTEM_LINKS = ("/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin")
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "passwd", "group", "nsswitch.conf",
               "hosts", "host.conf", "localtime")
TMP_FOLDER, SHM_FOLDER = "tmp", "shm"  # inside the slot's sandbox-tmp/, made before each run


@functools.lru_cache(maxsize=None)
def _outside_usr() -> tuple[str, ...]:
    """Where this Python and the build tools live when that is not under /usr (a virtualenv, /opt)."""
    needed = {sys.prefix, sys.base_prefix}
    for tool in ("cmake", "make", "c++", "g++", "cc", "gcc", "clang++", "ninja"):
        found = shutil.which(tool)
        if found:
            needed.add(str(Path(found).resolve().parents[1]))
    return tuple(sorted(path for path in needed if not Path(path).is_relative_to("/usr") and path != "/"))


def system() -> list[str]:
    """The system's programs and libraries, /etc's few harmless files, /proc and /dev."""
    options = ["--ro-bind", "/usr", "/usr"]
    for path in SYSTEM_LINKS:
        if Path(path).is_symlink():
            options += ["--symlink", str(Path(path).readlink()), path]
        elif Path(path).is_dir():
            options += ["--ro-bind", path, path]
    options += ["--dir", "/etc"]
    for name in ETC_ENTRIES:
        options += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for path in _outside_usr():
        options += ["--ro-bind", path, path]
    return options + ["--proc", "/proc", "--dev", "/dev"]


def project() -> list[str]:
    options = []
    for name in PROJECT_ENTRIES:
        options += ["--ro-bind-try", str(ROOT / name), str(ROOT / name)]
    return options


def private_tmp(tmp: Path) -> list[str]:
    """/tmp and /dev/shm, from folders inside `tmp` (the slot's sandbox-tmp/, which the sandbox never shows as
    itself: the student can fill them, but never swap them for a link to somewhere else); bound before anything
    else under /tmp, so that a project cloned under /tmp stays visible over the private /tmp."""
    return ["--bind", str(tmp / TMP_FOLDER), "/tmp", "--bind", str(tmp / SHM_FOLDER), "/dev/shm"]


def scratch(readable: list[Path], writable: list[Path]) -> list[str]:
    """The slot's folders."""
    options = []
    for path in readable:
        options += ["--ro-bind", str(path), str(path)]
    for path in writable:
        options += ["--bind", str(path), str(path)]
    return options


def sealed() -> list[str]:
    """Last: bubblewrap's own root and /dev made read-only, so that nothing but the slot's folders takes a byte
    (unsized, the root tmpfs would take whatever memory a student writes into it)."""
    return ["--remount-ro", "/dev", "--remount-ro", "/"]


def make_private_folders(tmp: Path) -> None:
    for name in (TMP_FOLDER, SHM_FOLDER):
        (tmp / name).mkdir(parents=True, exist_ok=True)
        (tmp / name).chmod(0o1777)
