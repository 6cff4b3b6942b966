"""Every path the project uses, derived from one root, so notebooks run from any cwd."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent  # the checkout when the package runs from one; site-packages when installed


def checkout() -> Path | None:
    """The source checkout the package runs from (an editable install or PYTHONPATH), or None
    when it is installed: a wheel's parent folder is site-packages, never a project."""
    return ROOT if (ROOT / "pyproject.toml").is_file() and (ROOT / "Makefile").is_file() else None


def root() -> Path:
    """The project folder: params/, runs/, report/, .cache/ and data/ live here. `XFER_ROOT`
    (the runner's `--root`) wins; else the current folder when it holds a params/ folder (a
    project `xfer init` wrote, or a checkout); else the checkout the package runs from (a
    notebook opened in its notebooks/ folder); else the current folder. So an installed package
    never writes inside site-packages, and a checkout works as it always did."""
    if env := os.environ.get("XFER_ROOT"):
        return Path(env)
    here = Path.cwd()
    return here if (here / "params").is_dir() and here.resolve() != PACKAGE else checkout() or here


def package_file(*parts: str) -> Path:
    """A file shipped inside the package (phase notebooks, presets, languages.csv): the same
    file whether xfer is installed or checked out (`notebooks/` and `params/` in a checkout are
    links to these folders)."""
    return Path(str(resources.files("xfer").joinpath(*parts)))


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
                "or point it at a folder holding xtreme/ and extra/ (see docs/data.md)."
            )
        return path
    default = root() / "data" / "raw"
    return default if default.is_dir() else None


def read_utf8(path: Path) -> str:
    """A text file's contents. A byte that is not UTF-8 raises UnicodeError naming the file, line
    and column, where the codec's own error names neither file nor line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise UnicodeError(f"{path}:{line}: column {column}: byte 0x{data[e.start]:02x} is not UTF-8; "
                           "allowed: UTF-8 text") from None


def plain_text(value: str) -> str:
    """A name or path from a params file: no NUL or control character (one would end a C string
    or a line of a log, and crash or mislead far from the params file)."""
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"{value!r} holds the control character {bad!r}; allowed: printable characters")
    return value


def output_path(value: str) -> Path:
    """A folder the project writes to, from a params file: relative to the root, and inside it
    (or inside `XFER_OUTPUT`, a root the user names for output elsewhere), so no setting sends
    results, notebooks or a PDF outside the project."""
    path = (root() / plain_text(value)).resolve()
    long = next((part for part in path.parts if len(part.encode()) > 255), None)
    if long is not None:
        raise ValueError(f"{value!r}: the folder name {long[:40]!r}... is {len(long.encode())} bytes long; allowed: "
                         "names of at most 255 bytes (the file system's limit)")
    inside = [root().resolve()] + ([Path(os.environ["XFER_OUTPUT"]).resolve()] if os.environ.get("XFER_OUTPUT") else [])
    if not any(path.is_relative_to(r) and (path != r or r != inside[0]) for r in inside):
        where = " or XFER_OUTPUT=" + str(inside[1]) if len(inside) > 1 else ""
        raise ValueError(f"{value!r} resolves to {path}, outside the project; allowed: a folder inside {inside[0]}"
                         f"{where} (set XFER_OUTPUT to write elsewhere)")
    return path


def to_runs(path: str | Path) -> str:
    """How a run folder names a path in another one: relative to runs/, so the runs folder can
    be copied or moved (a copy never reads the original's files). Paths elsewhere, and hub ids, as given."""
    if not Path(path).exists():
        return str(path)  # a hub id
    try:
        return str(Path(path).resolve().relative_to(runs_dir().resolve()))
    except ValueError:
        return str(Path(path).resolve())


def from_runs(name: str) -> str:
    """The path (or hub id) that `to_runs` recorded: a relative `<phase>/<id>/checkpoint` is in
    this runs folder (a hub id has at most one `/`). An absolute one written before paths were
    relative is read from this runs folder when the run is here, so a copy never reads the original."""
    path = Path(name)
    if not path.is_absolute():
        return str(runs_dir() / path) if len(path.parts) >= 3 else name
    here = runs_dir().joinpath(*path.parts[-3:])
    return str(here) if len(path.parts) > 3 and here.exists() else name


def portable(text: str) -> str:
    """Text with this machine's folders in it named as a reader of a published copy can use
    them: paths inside the project relative to it (`runs/…`, `data/raw/…`), the project itself
    as `.`; outside it, a runs folder as `runs`, a data folder as `$XFER_DATA_DIR` and the target
    of a link in the project (a shared `.venv`) by the link's name."""
    here = {str(root()), str(root().resolve())}
    outside = {}
    for path, name in [(data_dir(), "$XFER_DATA_DIR"), (runs_dir(), "runs")] + \
            [(link, link.name) for link in root().iterdir() if link.is_symlink()]:
        for p in {str(Path(path)), str(Path(path).resolve())} if path is not None else ():
            if not any(p == r or p.startswith(r + "/") for r in here):
                outside[p] = name
    for p in sorted(outside, key=len, reverse=True):  # the longest first
        text = re.sub(re.escape(p) + r"(?![\w.-])", outside[p], text)
    for p in sorted(here, key=len, reverse=True):
        text = re.sub(re.escape(p) + r"(/|(?![\w.-]))", lambda m: "" if m.group(1) else ".", text)
    return text


@contextlib.contextmanager
def writing(tmp: Path, name: Path | None = None):
    """Around writing a temp file or folder: if it fails, remove it, and make an OSError name
    it (or `name`, the file it is to replace), so a full disk leaves nothing half-written and says where."""
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:
            raise OSError(e.errno, e.strerror, str(name or tmp)) from e
        raise


def write_json(path: Path, obj) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one; the
    temp file is removed on every path (a full disk included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with writing(Path(tmp)):
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
    """Parsed JSON; a damaged file raises a ValueError that names it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place, replacing any older one. Safe against another
    process doing the same at once (two reports of one grid): each moves the old folder to a name
    of its own, and the last one to move its folder in wins."""
    for attempt in range(20):
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{attempt}")
        try:
            os.replace(final, old)
        except FileNotFoundError:  # none yet, or the other process has just moved it
            pass
        try:
            os.replace(tmp, final)
        except OSError as e:
            try:
                os.replace(old, final)  # put the older one back: a failed replace loses nothing
            except OSError:  # none was moved, or the other process's folder is already in place
                shutil.rmtree(old, ignore_errors=True)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and attempt < 19:
                continue
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
