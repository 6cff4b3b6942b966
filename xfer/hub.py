"""Which revision (commit hash) of a hub dataset or model a grid read, so a result can be traced to
the exact files even though the hub's `main` moves. Local data needs none of this: its sha256 are
in the run ids already.

Where a machine has internet the hub answers (`HfApi().dataset_info(id).sha`); offline, the
Hugging Face cache does (`<cache>/datasets--org--name/refs/main` holds the hash of the snapshot
that `load_dataset` / `from_pretrained` used, under `snapshots/<sha>/`); with neither, the answer
is "unknown (offline)", never an exception: provenance must not stop a grid."""

from __future__ import annotations

import functools
import os
from pathlib import Path

UNKNOWN = "unknown (offline)"


def _offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE",
                                                                                      "HF_DATASETS_OFFLINE"))


def _cache() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def cached_revision(repo_id: str, kind: str = "dataset", cache: str | Path | None = None) -> str | None:
    """The snapshot hash the cache resolves `main` to, or its only snapshot; None when not cached."""
    folder = Path(cache or _cache()) / f"{kind}s--{repo_id.replace('/', '--')}"
    ref = folder / "refs" / "main"
    if ref.is_file():
        sha = ref.read_text().strip()
        if sha:
            return sha
    snapshots = sorted(p.name for p in (folder / "snapshots").glob("*") if p.is_dir())
    return snapshots[0] if len(snapshots) == 1 else None


def revision(repo_id: str, kind: str = "dataset", cache: str | Path | None = None) -> str:
    """The commit hash of a hub dataset or model ("dataset" or "model"): the hub's when online,
    else the cache's, else "unknown (offline)". A local folder given as an id is "local folder"."""
    if Path(repo_id).exists():
        return "local folder"
    sha = None if _offline() else _hub_sha(repo_id, kind)
    return sha or cached_revision(repo_id, kind, cache) or UNKNOWN


@functools.lru_cache(maxsize=None)
def _hub_sha(repo_id: str, kind: str) -> str | None:
    """The hub's answer, asked once per process: a grid's runs share their datasets, and a machine
    whose network drops packets would otherwise wait out the timeout once per run."""
    try:
        from huggingface_hub import HfApi

        return (HfApi().dataset_info if kind == "dataset" else HfApi().model_info)(repo_id, timeout=10).sha
    except Exception:  # no network, unknown id, rate limit: the cache may still know
        return None


def revisions(tasks, model: dict | None = None) -> dict[str, str]:
    """`{"dataset <id>": sha, "model <id>": sha}` for what a run reads from the hub: the datasets of
    those of `tasks` (names; "a+b" for a mixture) not read from the local data folder, and the
    model when its source is the hub."""
    from xfer.tasks import get_task

    hub = [get_task(part) for name in tasks for part in name.split("+")]
    ids = sorted({t.hub_id for t in hub if t.hub_id and not t.reads_local()})
    out = {f"dataset {i}": revision(i, "dataset") for i in ids}
    if model and model.get("source") == "hub":
        out[f"model {model['name']}"] = revision(model["name"], "model")
    return out
