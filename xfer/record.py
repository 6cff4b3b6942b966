"""A run's record: `metrics.json` holds the run's numbers and the sha256 of every artefact it
leaves, so "done" means verified, not merely "a file exists".

A run is done when its metrics.json parses, holds only finite numbers, has the keys its phase
needs, and every recorded artefact exists with its recorded size and sha256. Checking stays cheap
because `make plan`, `make report` and every rerun look at every run: sizes are always compared,
and a file is hashed again only when its (size, mtime_ns) differ from the last time it was found
intact (kept in the run folder's `.verified.json`, so a copy made without keeping mtimes costs one
hash per file, once). Just before a run is used as an upstream the runner asks for a full check
(`full=True`): the next phase reads every byte of the checkpoint anyway, and this also catches a
corruption that kept the size and the mtime."""

from __future__ import annotations

import math
from pathlib import Path

from xfer.paths import read_json, write_json

METRICS = "metrics.json"
CACHE = ".verified.json"


def _sha256(path: Path) -> str:
    from xfer.models.assets import sha256_file

    return sha256_file(path)


def nonfinite(obj, where: str = "") -> str | None:
    """The first NaN or infinite number in `obj` (its key path), or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{where or 'value'} = {obj}"
    if isinstance(obj, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    return next((bad for key, v in items if (bad := nonfinite(v, key))), None)


def write_metrics(folder: Path, metrics: dict, artefacts: tuple[str, ...] = ()) -> dict:
    """Write `folder/metrics.json` (last, atomically: its presence marks the run done) with the
    size and sha256 of every file under each of `artefacts` (folder-relative names). Refuses
    non-finite numbers, so a diverged run fails instead of finishing with NaN scores."""
    folder = Path(folder)
    bad = nonfinite(metrics)
    if bad:
        raise ValueError(f"{folder / METRICS}: {bad}, not a finite number; the run is not recorded as done")
    files = sorted(p for name in artefacts for p in ([folder / name] if (folder / name).is_file()
                                                     else (folder / name).rglob("*")) if p.is_file())
    record = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    metrics = {**metrics, "artefacts": record}
    write_json(folder / METRICS, metrics)
    _remember(folder, record)
    return metrics


def _remember(folder: Path, record: dict) -> None:
    cache = {}
    for rel, want in record.items():
        st = (folder / rel).stat()
        cache[rel] = [st.st_size, st.st_mtime_ns, want["sha256"]]
    try:
        write_json(folder / CACHE, cache)
    except OSError:  # a read-only copy of runs/: verify in full each time instead
        pass


def problem(folder: Path, required: tuple[str, ...] = (), full: bool = False) -> str | None:
    """Why the run in `folder` is not done and intact, or None when it is. "not run" when it
    has no metrics.json; any other answer names the damaged file (the run is corrupt)."""
    folder = Path(folder)
    path = folder / METRICS
    if folder.exists() and not folder.is_dir():  # a file where the run's folder should be
        return f"{folder}: not a folder"
    if not path.exists():
        return "not run"
    try:
        metrics = read_json(path)
    except (ValueError, OSError) as e:
        return str(e)
    if not isinstance(metrics, dict):
        return f"{path}: not a JSON object"
    missing = [k for k in required if k not in metrics]
    if missing:
        return f"{path}: no {', '.join(missing)}"
    bad = nonfinite(metrics)
    if bad:
        return f"{path}: {bad}, not a finite number"
    try:
        cache = read_json(folder / CACHE)
    except (ValueError, OSError):
        cache = {}
    seen = {}
    for rel, want in (metrics.get("artefacts") or {}).items():  # none recorded: a run from before records
        p = folder / rel
        try:
            st = p.stat()
        except FileNotFoundError:
            return f"{p}: missing (recorded in {path})"
        if st.st_size != want["size"]:
            return f"{p}: {st.st_size} bytes, {path} records {want['size']}"
        if not full and cache.get(rel) == [st.st_size, st.st_mtime_ns, want["sha256"]]:
            continue
        if _sha256(p) != want["sha256"]:
            return f"{p}: sha256 differs from the one {path} records"
        seen[rel] = True
    if seen:
        _remember(folder, metrics["artefacts"])
    return None
