"""Training sets as the grid asks for them: nested, seeded subsets of a task's corpus; evaluation
sets as seeded samples; the check that a row-aligned corpus really is aligned; and the content
digests of the files a grid reads, which its run ids hash."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from xfer.tasks import get_task
from xfer.tasks.base import DataError


def subsample(n_total: int, size: int | str | None, seed: int) -> np.ndarray:
    """Indices of a seeded subset. For one seed, every smaller size is a prefix of the same
    permutation, so the subsets are nested: size 1k ⊂ 2k ⊂ 5k, as the design requires. The
    indices depend on (n_total, size, seed) only: in corpora of equal length (row-aligned
    translations) a seed and size pick the same rows in every language."""
    if size in (None, "full"):
        size = n_total
    if size > n_total:
        raise ValueError(f"size {size} is larger than the corpus ({n_total} examples); allowed: 0..{n_total} or 'full'")
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[:size])


def check_aligned(task_name: str, lang: str, split: str, examples: list[dict]) -> None:
    """Refuse a corpus that claims to be row-aligned with its English counterpart (a translation,
    or one language of a parallel corpus) unless its labels equal the English ones row by row:
    a shifted or filtered file would silently change content along with the language."""
    task = get_task(task_name)
    source, aligned = task.content()
    if not aligned or (source == task.name and lang == "en"):
        return
    english = get_task(source).load("en", split)
    where = f"{task.name} {lang} {split}"
    if len(english) != len(examples):
        raise DataError(f"{where}: {len(examples)} rows but {len(english)} in the English {source} {split}: "
                        "not row-aligned, so it cannot serve as a translation of it")
    for i, (ex, en) in enumerate(zip(examples, english)):
        if ex.get("label") != en.get("label"):
            raise DataError(f"{where}: row {i} is labelled {ex.get('label')!r} but {en.get('label')!r} in the "
                            f"English {source}: not row-aligned, so it cannot serve as a translation of it")


def training_set(task_name: str, lang: str, size, seed: int, split: str = "train") -> list[dict]:
    examples = get_task(task_name).load(lang, split)
    check_aligned(task_name, lang, split, examples)
    return [examples[i] for i in subsample(len(examples), size, seed)]


def evaluation_set(examples: list, max_examples: int | None, seed: int = 0) -> list:
    """At most `max_examples` of a language's evaluation examples: a seeded random sample in file
    order (not the first N, which are often one document or one topic). The sample depends only on
    the file and `seed`, so every run of a grid, and every rerun, scores the same rows."""
    if max_examples is None or max_examples >= len(examples):
        return examples
    return [examples[i] for i in subsample(len(examples), max_examples, seed)]


def readers_version() -> int:
    """When the task readers (xfer/tasks) last changed: what is kept of the files read with them
    is read again after."""
    return max(p.stat().st_mtime_ns for p in Path(__file__).with_name("tasks").glob("*.py"))


def read_checked(task, lang: str, split: str) -> tuple[int, dict[str, str]]:
    """The number of examples in one language and split of a local task, every line of its files
    checked by the task's reader, and the sha256 of each file it reads (run ids hash them, so a
    changed file gives new runs). Both are kept in `<cache>/data-files.json` under the files'
    sizes and mtimes and the readers' own (xfer/tasks), so planning rereads only what changed."""
    from xfer.models.assets import sha256_file
    from xfer.paths import cache_dir, read_json, write_json

    store = cache_dir() / "data-files.json"
    try:
        cache = read_json(store)
    except (OSError, ValueError):  # none yet, or unreadable: it is only a cache
        cache = {}
    digests, changed = cache.setdefault("sha256", {}), False
    paths = task.files(lang, split)
    stamps = {str(p.resolve()): [p.stat().st_size, p.stat().st_mtime_ns] for p in paths}
    for key, stamp in stamps.items():
        if digests.get(key, [None])[:2] != stamp:
            digests[key] = [*stamp, sha256_file(Path(key))]
            changed = True
    key = f"{task.name} {lang} {split} {paths[0].resolve()}"
    version = [sorted(stamps.items()), readers_version()]
    seen = cache.setdefault("examples", {}).get(key)
    if seen is None or seen[0] != json.loads(json.dumps(version)):
        seen = cache["examples"][key] = [version, len(task.load(lang, split))]
        changed = True
    if changed:
        try:
            write_json(store, cache)
        except OSError:  # a read-only cache folder costs speed, not correctness
            pass
    return seen[1], {str(p): digests[str(p.resolve())][2] for p in paths}


def dev_task(params: dict):
    """The task whose dev split selects the model: the evaluated target's own (XNLI's English dev
    for a model trained on MNLI, as the paper stops early) when it has the training language,
    else the training task's (COPA's for XCOPA, which has no English)."""
    for name in (params.get("select_task"), params["task"]):
        if name is None:
            continue
        try:
            if params["language"] in get_task(name).languages("dev"):
                return get_task(name)
        except DataError:
            continue
    raise DataError(f"model selection (train.eval_every) needs a dev split in {params['language']!r} of "
                    f"{params.get('select_task') or params['task']} or {params['task']}; none found: unset eval_every")


def data_token_ids(files: list, tokenizer):
    """Ids of `tokenizer`, read off every (task, lang, split) file the study uses: the rows
    vocabulary trimming keeps (and `xfer.carry` packs).

    Encoding every file of a study takes seconds to minutes and recurs in each grid over the same
    data, so local files' ids are kept in `<cache>/token-ids/`, under the files' sha256, the
    tokenizer's own definition and the readers' version (hub data is read each time)."""
    import hashlib

    from xfer.models import as_defined
    from xfer.paths import cache_dir, data_dir, writing

    store = None
    if data_dir() is not None:
        digests = [read_checked(get_task(t), lang, split)[1] for t, lang, split in files]
        with as_defined(tokenizer):
            definition = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
        key = json.dumps([files, digests, definition, readers_version()], sort_keys=True)
        store = cache_dir() / "token-ids" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
        try:
            return np.load(store)
        except (OSError, ValueError):  # not kept yet, or damaged: it is only a cache
            pass
    ids = set()

    def add(seq):  # a list of ids, or one list per choice / window
        for x in seq:
            add(x) if isinstance(x, (list, tuple)) else ids.add(int(x))

    for task_name, lang, split in files:
        task = get_task(task_name)
        for f in task.encode(task.load(lang, split), tokenizer, 100_000):
            add(f["input_ids"])
    found = np.array(sorted(ids), dtype=np.int64)
    if store is not None:
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            tmp = store.with_name(f".{store.name}.{os.getpid()}.npy")
            with writing(tmp):
                np.save(tmp, found)
            os.replace(tmp, store)
        except OSError:  # a read-only cache folder costs speed, not correctness
            pass
    return found
