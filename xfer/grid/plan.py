"""Plan a grid: validate a params file against the data (every local file it reads is read here,
once, so a bad line stops the grid before any training) and expand it into runs with their ids,
by phase. What the executors (`xfer.grid.local`, `xfer.grid.slurm`), the collector and the report run on."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from xfer.config import ConfigError, Grid, Run, TargetConfig, expand, load_grid, select_seeds
from xfer.data import read_checked
from xfer.grid.execute import PHASES, lock_timeout  # noqa: F401 - PHASES: the grid's, read from here
from xfer.paths import data_dir
from xfer.tasks import TASKS, get_task
from xfer.tasks.base import DataError


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


@dataclass(frozen=True)
class Plan:
    """A validated grid and its runs by phase: built once by the command (`plan`) and handed to the
    executors, the collector, the bench and the report, so nothing downstream plans again from a path."""

    grid: Grid
    runs: dict[str, list[Run]]
    overrides: tuple[str, ...] = ()  # the command's --set, as the report records them

    @property
    def pretrained(self) -> Run:
        """The pretrained encoder's run: every chain starts from it, and its id holds the data signature."""
        return self.runs["pretrained"][0]

    @property
    def data(self) -> dict:
        """The data signature (`validate`): the files read with their sha256, the languages per target."""
        return self.pretrained.params["data"]

    @cached_property
    def by_id(self) -> dict[str, Run]:
        return {r.id: r for rs in self.runs.values() for r in rs}

    def seeds(self, seeds) -> Plan:
        """The runs those seeds need (`xfer.config.select_seeds`): one look of a sequential design."""
        return replace(self, runs=select_seeds(self.runs, seeds))


def plan(path: str | Path, overrides: list[str] = ()) -> Plan:
    lock_timeout()  # the environment's settings are checked with the params, before any compute
    grid = load_grid(path, overrides)
    if (n := expected_runs(grid)) > MAX_RUNS:
        raise ConfigError(f"seeds: the grid expands to up to {n:,} runs ({len(grid.seeds)} seeds); allowed: at most "
                          f"{MAX_RUNS:,} runs per grid (fewer seeds, sizes or languages; split a larger study)")
    grid, signature = validate(grid)
    return Plan(grid, expand(grid, signature), tuple(overrides))
