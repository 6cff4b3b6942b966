"""The processes a test looks for in /proc (Linux): by environment, by parentage, alive or gone.
A grid's runner, its workers and their notebook kernels (in sessions of their own) all inherit
the runner's environment, so a variable of it finds every process of one grid."""

from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(c) for c in f.read().split()]
        except FileNotFoundError:
            kids = []
        found.update(kids)
        todo += kids
    return found


def gone_within(pids, seconds: float) -> set[int]:
    """The pids still alive after waiting up to `seconds` for them to go."""
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return {p for p in pids if alive(p)}


def with_env(marker: str, command: str = "") -> dict[int, str]:
    """The processes whose environment holds `marker` (`KEY=value`, whole) and whose command line
    contains `command`, each with its command line. A zombie has no environment left: never here."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ, cmdline = (proc / "environ").read_bytes(), (proc / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        line = cmdline.replace(b"\0", b" ").decode(errors="replace")
        if b"\0" + marker.encode() + b"\0" in b"\0" + environ + b"\0" and command in line:
            found[int(proc.name)] = line
    return found
