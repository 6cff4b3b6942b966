"""Every path the project uses, derived from one root, so notebooks run from any cwd."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def root() -> Path:
    return Path(os.environ.get("XFER_ROOT", ROOT))


def runs_dir() -> Path:
    return Path(os.environ.get("XFER_RUNS", root() / "runs"))


def cache_dir() -> Path:
    """Downloaded wheels and converted checkpoints: shared across grids, never per run."""
    return Path(os.environ.get("XFER_CACHE", root() / ".cache"))


def data_dir() -> Path | None:
    """The local copy of the benchmarks' original files, or None to read from the hub.

    `XFER_DATA_DIR` wins (`hub` reads the hub even where `data/raw` exists: how a hub grid is
    planned on a machine whose folder holds only part of its tasks); otherwise `data/raw` in the
    checkout is used when it exists (the Makefile unpacks `../shared/data` there)."""
    env = os.environ.get("XFER_DATA_DIR")
    if env == "hub":
        return None
    if env:
        path = Path(env)
        if not path.is_dir():
            raise FileNotFoundError(
                f"XFER_DATA_DIR={env!r} is not a folder; set it to 'hub' to read from the hub, "
                "or point it at a folder holding xtreme/ and extra/ (see README, Data)."
            )
        return path
    default = root() / "data" / "raw"
    return default if default.is_dir() else None


def write_json(path: Path, obj) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place, replacing any older one."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
