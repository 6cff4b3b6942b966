"""Ctrl-C in a terminal: the signal reaches every process of the foreground group (the runner,
its workers); the grid stops with one line and no traceback or warning, the finished runs stay done."""

import os
import re
import signal
import subprocess
import sys
import time

from processes import with_env

from xfer.grid.execute import is_done
from xfer.grid.plan import plan
from xfer.paths import root


def as_a_terminal_starts_it() -> None:
    """SIGINT at its default, unblocked, as a terminal's foreground command has it. A process
    inherits an ignored signal, and a shell starts a background job (`make test &`) with SIGINT
    ignored: Python then installs no KeyboardInterrupt, and the runner ran its grid to the end (exit
    0) through the test's SIGINT. Only signal calls here, no lock a thread of pytest's could hold."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_stops_the_grid_in_one_line(micro_grid):
    path = micro_grid()
    proc = subprocess.Popen([sys.executable, "-m", "xfer.runner", "run", str(path)], cwd=root(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=as_a_terminal_starts_it)  # noqa: PLW1509
    try:
        seen = []
        for line in proc.stdout:  # the pretrained run is done and the next runs have started
            seen.append(line)
            if any(": done in" in s for s in seen) and ": running" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130, ("".join(seen), err)
    assert re.fullmatch(r"interrupted: [12] of 6 runs finished; the same command resumes the grid, skipping them",
                        err.strip()), err  # nothing else: no worker's traceback, no leaked-semaphore warning
    marker = f"XFER_RUNS={os.environ['XFER_RUNS']}"
    for _ in range(30):  # a kernel notices within a second or two that its worker is gone
        if not with_env(marker):
            break
        time.sleep(0.5)
    assert with_env(marker) == {}, "a process of the grid is still running"
    runs = plan(path).runs
    assert is_done(runs["pretrained"][0])
    finished = int(err.split()[1])
    assert sum(is_done(r) for rs in runs.values() for r in rs) == finished
