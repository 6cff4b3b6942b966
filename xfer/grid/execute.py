"""Execute one run, the same whoever schedules it (the local workers of `xfer.grid.local`, a Slurm
job of `xfer.grid.slurm`): take its lock, log it, run its phase notebook with papermill (the pretrained
step in-process), verify it, and move a corrupt run folder aside.

Every run lives in `runs/<phase>/<id>/` (params.json, notebook.ipynb, metrics.json, checkpoint/).
`metrics.json` is written last and atomically, with the sha256 of the run's checkpoint files: a
run is done when it verifies (`xfer.record`), and a rerun skips it; a corrupt one is moved aside
to `<id>.corrupt-<UTC time>` and rerun. A failed run keeps its executed notebook (with the
traceback) and error.json."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from xfer import record
from xfer.config import ConfigError, Grid, ModelConfig, Run
from xfer.hub import revisions
from xfer.paths import from_runs, package_file, read_json, root, runs_dir, to_runs, write_json

PHASES = ("pretrained", "intermediate", "target", "evaluate")
NOTEBOOKS = {"intermediate": "01_intermediate.ipynb", "target": "02_target.ipynb", "evaluate": "03_evaluate.ipynb"}


def run_dir(run: Run) -> Path:
    return runs_dir() / run.phase / run.id


REQUIRED = {"pretrained": ("checkpoint",), "intermediate": ("checkpoint", "losses"),
            "target": ("checkpoint", "losses"), "evaluate": ("scores",)}


def state(run: Run, full: bool = False) -> str | None:
    """None when the run is done and its record verifies; else why not: "not run", or what is damaged.
    A run folder that is a link out of the runs folder is not one (its outputs would land outside,
    and a downstream run would record a machine's absolute path): take() moves the link aside."""
    folder = run_dir(run)
    if folder.is_symlink() and not folder.resolve().is_relative_to(runs_dir().resolve()):
        return f"{folder}: a link to {folder.resolve()}, outside the runs folder {runs_dir()}; allowed: a folder in it"
    return record.problem(folder, REQUIRED[run.phase], full)


def is_done(run: Run, full: bool = False) -> bool:
    return state(run, full) is None


def classify(run: Run, job: str | None = None) -> str:
    """A run's state, one rule for `make status` on both executors: "done" when its record
    verifies; "running" or "pending" while a Slurm job works on it (`job`: "running", "pending", or
    "ended" for a job that ended); "failed" when that job ended without finishing the run, or the
    run left an error.json; else "to run" (on Slurm: not submitted)."""
    if is_done(run):
        return "done"
    if job in ("running", "pending"):
        return job
    if job == "ended" or (run_dir(run) / "error.json").exists():
        return "failed"
    return "to run"


def checkpoint(run: Run) -> str:
    return from_runs(read_json(run_dir(run) / "metrics.json")["checkpoint"])


def lock_timeout() -> float:
    """How long a worker waits for a run another worker holds (XFER_LOCK_TIMEOUT, seconds; default a day)."""
    value = os.environ.get("XFER_LOCK_TIMEOUT", "").strip() or str(24 * 3600)
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"XFER_LOCK_TIMEOUT={value!r} is not a number of seconds; allowed: a number >= 0 "
                          "(default 86400, a day)")
    return seconds



def say(line: str) -> None:
    """A line on the terminal in one write: workers print at once, and print()'s text and its
    newline are two writes when stdout is unbuffered (PYTHONUNBUFFERED), so two lines could mix."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

class Lock:
    """One worker per run, so several `make run` processes (or cluster jobs sharing the runs
    folder) can work through one grid. An OS file lock (`filelock`): the system drops it when its
    process dies, so there is no stale lock to take over and no race between a release and a read.
    The lock file sits beside the run folder, not in it: a corrupt folder is moved aside under it."""

    def __init__(self, folder: Path):
        self.path = folder.with_name(f".{folder.name}.lock")
        self.lock = FileLock(self.path)

    def acquire(self, timeout: float = 0) -> bool:
        """True once held, False after `timeout`; a lock that cannot be made at all (permissions, a
        read-only folder) stops the grid in one line: no run in that folder can be recorded."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.lock.acquire(timeout=timeout, poll_interval=1.0)
            return True
        except Timeout:
            return False
        except OSError as e:
            raise GridStopped(f"{e.filename or self.path}: cannot take the run's lock ({e.strerror or e}); the grid "
                              "stops (allowed: a runs folder this user can write)") from None

    def release(self):
        self.lock.release()

    def wait(self, timeout: float) -> bool:
        """Block until no worker holds it (True), or `timeout` seconds pass (False)."""
        if self.acquire(timeout):
            self.release()
            return True
        return False


class GridStopped(Exception):
    """A fault the grid cannot go on after: the failure of a run could not even be recorded."""


class RunLog:
    """`<run folder>/log.txt`, written as the run goes (`tail -f` it): the notebook's stdout and
    stderr (papermill's stdout_file/stderr_file) and, while open, everything on this process's
    stderr file descriptor, so the kernel it starts and the libraries' bars, load reports and
    warnings too. The terminal gets one line of the run's per-language scores when it ends
    (xfer/evaluate.py prints them one by one into the log)."""

    SCORE = re.compile(r"(\S+): (\S+) (-?\d+\.\d) \(n=\d+(?:, (\d+) words not encoded)?\)$")

    def __init__(self, folder: Path):
        self.path = folder / "log.txt"
        self.run_id, self.scores, self.metric = folder.name, [], None

    def __enter__(self):
        sys.stderr.flush()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a", buffering=1)
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def write(self, text: str) -> None:
        self.file.write(text)
        for line in text.splitlines():
            if m := self.SCORE.match(line.strip()):
                self.scores.append(f"{m[1]} {m[3]}" + (f" ({m[4]} words not encoded)" if m[4] else ""))
                self.metric = m[2]

    def flush(self) -> None:
        self.file.flush()

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.close()
        if self.scores:  # one line per run, so runs going at once do not mix their languages
            say(f"    {self.run_id} {self.metric}: {', '.join(self.scores)}")


def move_aside(folder: Path) -> Path:
    """Keep a corrupt run folder for inspection, out of the way of its rerun."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside, n = folder.with_name(f"{folder.name}.corrupt-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}.corrupt-{stamp}-{n}")
    os.replace(folder, aside)
    return aside


def prepare_pretrained(grid: Grid, run: Run) -> None:
    """Phase (i) runs in-process: it is a conversion, not an experiment."""
    from functools import partial

    # not at the top: it imports torch, which a Slurm job's own process never needs
    from xfer.data import data_token_ids
    from xfer.models import prepare

    folder = run_dir(run)
    model = ModelConfig(**run.params["model"])  # the run's own: the control differs from grid.model
    ckpt, kept = prepare(model, folder / "checkpoint", partial(data_token_ids, run.params["data"]["files"]))
    hub = revisions({f[0] for f in run.params["data"]["files"]}, run.params["model"])  # the grid's hub reads
    record.write_metrics(folder, {"checkpoint": to_runs(ckpt), "kept_token_ids": kept, "hub_revisions": hub},
                         artefacts=("checkpoint",))


# a fresh kernel per run over Unix sockets (xfer.kernel: TCP ports can collide between processes starting
# kernels at once, here or in another job on the node); forked warm in CPU workers and packed Slurm jobs
KERNEL_MANAGER = "xfer.kernel.IpcKernelManager"
WARM = "xfer.kernel.WarmKernelManager"  # what local workers and packed Slurm jobs set it to on a CPU machine


def without_iri_grammar() -> None:
    """Before a process of xfer's own imports papermill or nbformat: nbformat imports jsonschema,
    which imports the optional `rfc3987_syntax` if it is installed (jupyterlab's jupyter-events
    pulls it in), and that compiles an IRI grammar at import, 2 CPU-seconds in every grid worker,
    Slurm job and report (papermill's import: 2.6 s, 0.7 s without it). No notebook schema
    checks an IRI (python-jsonschema/jsonschema#1428; opendatahub-io/notebooks#3532), so the
    package is marked absent and jsonschema goes without its `iri` checks, as it does where the
    package is not installed. Only for the command and the processes it starts, never on import
    of xfer: a researcher's own kernel keeps its jsonschema whole."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # None: `import` raises ImportError, which jsonschema expects


def execute(run: Run, upstream: str, log=None, registration: dict | None = None) -> None:
    """Run one phase notebook with papermill; the executed notebook stays in the run folder.

    papermill rewrites its output after every cell, so it writes to a temp name that goes into
    place whole (with the traceback of a failed run): a full disk or a kill leaves no half notebook.
    `registration` (the pre-registered plan's hash and time) goes into params.json, so the runs
    themselves say which plan they were started under (`report.checked_registration`)."""
    without_iri_grammar()
    import papermill as pm

    folder = run_dir(run)
    tasks = [run.params["task"]] + ([run.params["select_task"]] if "select_task" in run.params else [])
    write_json(folder / "params.json", {"phase": run.phase, "id": run.id, "upstream": run.upstream,
                                        "upstream_checkpoint": to_runs(upstream), "params": run.params,
                                        "hub_revisions": revisions(tasks),  # outside params: not in the run id
                                        **({"preregistration": registration} if registration else {})})
    tmp = folder / ".notebook.partial.ipynb"
    if KERNEL_MANAGER == WARM:
        from xfer.kernel import warm_tokenizer

        warm_tokenizer(upstream)
    try:
        pm.execute_notebook(
            str(package_file("notebooks", NOTEBOOKS[run.phase])), str(tmp),
            parameters={"params": run.params, "upstream": upstream, "run_dir": str(folder)},
            kernel_name="python3", cwd=str(root()), progress_bar=False, stdout_file=log, stderr_file=log,
            kernel_manager_class=KERNEL_MANAGER,
        )
    except OSError as e:  # papermill's own write of the notebook (a full disk): say which file
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror, str(folder / "notebook.ipynb")) from e
    finally:
        try:
            json.loads(tmp.read_text())
            os.replace(tmp, folder / "notebook.ipynb")
        except (OSError, ValueError):  # missing or half written
            tmp.unlink(missing_ok=True)


def runner_gone() -> bool:
    """Whether the grid runner this process works for was killed (a `run_grid` worker whose
    parent changed); a Slurm job or an in-process run is its own runner."""
    pid = int(os.environ.get("XFER_RUNNER_PID") or 0)
    return bool(pid) and pid not in (os.getpid(), os.getppid())


def take(grid: Grid, run: Run, upstream: Run | None, label: str, full: bool = False,
         note: str = "", registration: dict | None = None) -> tuple[str, dict | None]:
    """Run `run` (from its `upstream` run's checkpoint) unless it is done and verifies. Returns the
    outcome ("done", "ran", "failed", or "busy" when another worker holds it) and, for a failure,
    its error record."""
    folder = run_dir(run)
    if is_done(run, full):
        try:
            (folder / "train_state.pt").unlink(missing_ok=True)  # left by a kill just after metrics.json
        except OSError:  # a read-only (archived, published) runs folder: the run is done all the same
            pass
        return "done", None
    lock = Lock(folder)
    if not lock.acquire():
        say(f"{label}: another worker holds it ({lock.path}); coming back to it at the end")
        return "busy", None
    try:
        why = state(run, full)  # again under the lock: another worker may have just finished it
        if why is None:
            return "done", None
        if why != "not run":
            say(f"{label}: corrupt ({why}); moved to {move_aside(folder).name}, rerunning")
        say(f"{label}: running{note}")
        t0 = time.time()
        try:
            with RunLog(folder) as log:
                if run.phase == "pretrained":
                    prepare_pretrained(grid, run)
                else:
                    execute(run, checkpoint(upstream), log, registration)
            (folder / "error.json").unlink(missing_ok=True)
            say(f"{label}: done in {time.time() - t0:.0f}s")
            return "ran", None
        except Exception as e:  # noqa: BLE001 - a failed run must not stop the grid
            if runner_gone():  # the runner's kill broke the run, not a fault of its own: record nothing
                raise SystemExit(f"xfer: the grid runner is gone; {run.phase} run {run.id} stops unrecorded") from None
            # a notebook's own exception, not papermill's wrapper around its coloured traceback
            what = f"{e.ename}: {e.evalue}" if hasattr(e, "ename") else f"{type(e).__name__}: {e}"
            err = {"phase": run.phase, "run_id": run.id, "error": what[-1500:], "notebook": str(folder / "notebook.ipynb"),
                   "traceback": re.sub(r"\x1b\[[0-9;]*m", "", traceback.format_exc())[-4000:]}
            try:
                write_json(folder / "error.json", err)
            except OSError as w:  # a full disk, a folder we may not write: nothing more can be recorded, so stop
                where = next(p for p in (folder, *folder.parents) if p.exists())
                free = (f"; {shutil.disk_usage(where).free / 2**20:.1f} MiB free there"
                        if w.errno in (errno.ENOSPC, errno.EDQUOT) else "")  # space only when it is the reason
                raise GridStopped(f"{run.phase} run {run.id} failed and its error record cannot be written to "
                                  f"{folder} ({w.strerror or w}{free}); the grid stops") from None
            say(f"{label}: FAILED ({err['error'][:300]}); see {folder}")
            return "failed", err
    finally:
        lock.release()
