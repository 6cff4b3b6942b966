"""Carry a study to a lent GPU machine, which receives the checkout plus at most 64 MiB.

Neither the data folder nor the model cache travels, and the GPU machine reaches no network.
`pack` writes what a study needs into one folder: its data files (xz), the XLM-R tokenizer
(xz), and mE5-small still 4-bit, cut to the embedding rows the study's data uses, as a
reduced E5S1 file (about 12.5 MiB of layers + 216 bytes per kept row) with its id map.
`unpack` restores the data folder and dequantises the model into the model cache, where
`e5.checkpoint()` finds it: the params file stays as it is, and its runs keep their ids.

    python -m xfer.carry pack params/X.yaml .carry     # here; .carry/ is git-ignored
    python -m xfer.carry unpack .carry                 # there, then: python -m xfer.runner run params/X.yaml

On the study's own token ids the carried model computes what the full one does (trimming is
exact there); ids outside the study's data read as <unk>, so pack again for another study.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import lzma
import os
import struct
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from xfer.models import e5
from xfer.models.assets import E5_SMALL_Q4, XLMR_TOKENIZER, fetch, sha256_file
from xfer.paths import cache_dir, data_dir, read_json, root, write_json

LIMIT = 64 * 2**20  # what a lent machine receives beside the checkout
PARTS = {"data": "data.tar.xz", "tokenizer": "tokenizer.json.xz", "model": "model.e5s1", "id_map": "id_map.npz"}


class CarryError(RuntimeError):
    """The study cannot be carried as asked; the message says why and what to change."""


# ----------------------------------------------------------------------------- E5S1, raw

def reduce_e5s1(src: Path, dst: Path, rows: np.ndarray) -> None:
    """Write at dst an E5S1 file whose `emb.word` holds only `rows` (Q4_0 blocks copied, not
    re-quantised) and whose tokenizer section is empty; every other tensor is kept as it is.
    `e5.read_e5s1` reads it (VOC = len(rows))."""
    buf = Path(src).read_bytes()
    try:
        f = e5.layout(buf, src)
    except ValueError as e:
        raise CarryError(str(e)) from None
    dims, eps, qk, specials, tensors = f["dims"], f["eps"], f["qk"], f["special"], f["tensors"]
    H, voc = dims[0], dims[4]
    row_bytes = H // qk * e5.Q4_BLOCK.itemsize  # 216 for H = 384
    dtype, count, off, nbytes = tensors["emb.word"]
    assert dtype == e5.Q4_0 and nbytes == voc * row_bytes, tensors["emb.word"]
    word = np.frombuffer(buf, np.uint8, nbytes, off).reshape(voc, row_bytes)[rows]
    data = {name: buf[o:o + b] for name, (_, _, o, b) in tensors.items()}
    data["emb.word"] = word.tobytes()
    counts = {name: c for name, (_, c, _, _) in tensors.items()}
    counts["emb.word"] = len(rows) * H

    head = struct.pack("<4sI7ifi", b"E5S1", 1, *dims[:4], len(rows), *dims[5:], eps, qk)
    head += struct.pack("<5iQI", 0, *specials, 0, 0)  # no pieces: blob length 0, offsets [0]
    head += struct.pack("<iI", 0, 0)  # no normaliser entries
    entries = [name.encode() for name in tensors]
    dir_len = 4 + sum(2 + len(n) + struct.calcsize("<BIQQ") for n in entries)
    pos = -(-(len(head) + dir_len) // 32) * 32  # tensor data 32-byte aligned
    directory, blobs = [struct.pack("<i", len(entries))], []
    for name in tensors:
        pad = -pos % 32
        blobs.append(b"\0" * pad + data[name])
        pos += pad
        directory.append(struct.pack("<H", len(name)) + name.encode()
                         + struct.pack("<BIQQ", tensors[name][0], counts[name], pos, len(data[name])))
        pos += len(data[name])
    body = head + b"".join(directory)
    with open(dst, "wb") as f:
        f.write(body + b"\0" * (-len(body) % 32))
        for blob in blobs:
            f.write(blob)


# ----------------------------------------------------------------------------- pack

def _tar_xz(dst: Path, files: dict[str, Path], preset: int) -> None:
    """A reproducible tar (no owners or times), xz-compressed."""
    def clean(info):
        info.uid = info.gid = info.mtime = 0
        info.uname = info.gname = ""
        return info

    with lzma.open(dst, "wb", preset=preset) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for arcname, path in sorted(files.items()):
            tar.add(path, arcname=arcname, filter=clean)


def _files_read(task, lang: str, split: str) -> list[Path]:
    """A task's file and its siblings of the same stem (Tatoeba's .eng, BUCC's .en and .gold)."""
    path = task.path(lang, split)
    return sorted(path.parent.glob(glob.escape(path.stem) + ".*")) if path.suffix else [path]


@contextlib.contextmanager
def _data_folder(folder: Path):
    """XFER_DATA_DIR pointed at folder for the duration."""
    old = os.environ.get("XFER_DATA_DIR")
    os.environ["XFER_DATA_DIR"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XFER_DATA_DIR")
        else:
            os.environ["XFER_DATA_DIR"] = old


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def pack(params_path: str | Path, dest_dir: str | Path, preset: int = 6) -> dict:
    """Write into dest_dir what the study of params_path needs on a GPU machine; fail when it
    exceeds 64 MiB. Returns the manifest (sizes in bytes per part)."""
    from xfer.config import ConfigError
    from xfer.data import data_token_ids
    from xfer.grid.plan import plan
    from xfer.models import load_tokenizer
    from xfer.tasks import get_task
    from xfer.tasks.base import DataError

    planned = plan(params_path)
    grid, files = planned.grid, planned.data["files"]
    if grid.model.source not in ("e5", "scratch"):
        raise CarryError(f"model.source {grid.model.source!r}: only 'e5' (carried 4-bit) and 'scratch' "
                         "(built there) can be carried; the GPU machine has no hub and no model cache")
    folder = data_dir()
    if folder is None:
        raise CarryError("no local data folder to pack: set XFER_DATA_DIR or run `make data`")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name in [*PARTS.values(), "manifest.json"]:  # no stale part from an earlier pack
        (dest / name).unlink(missing_ok=True)

    paths = {str(f.relative_to(folder)): f for t, l, s in files for f in _files_read(get_task(t), l, s)}
    _tar_xz(dest / PARTS["data"], paths, preset)
    tok_file = fetch(XLMR_TOKENIZER)
    (dest / PARTS["tokenizer"]).write_bytes(lzma.compress(tok_file.read_bytes(), preset=preset))
    manifest = {"params": str(params_path), "grid": grid.name, "model_source": grid.model.source,
                "data_files": sorted(paths)}
    tok = load_tokenizer(tok_file.parent)
    with tempfile.TemporaryDirectory() as tmp, _data_folder(Path(tmp)):  # what the GPU machine will see
        with tarfile.open(dest / PARTS["data"], "r:xz") as tar:
            tar.extractall(tmp, filter="data")
        try:  # the same runs (their ids hash the data signature), and every file reads from the pack
            there = plan(params_path).data  # planned again, on the packed data alone
            ids = data_token_ids(files, tok)  # exactly what prepare_pretrained keeps
        except (ConfigError, DataError, OSError) as e:
            raise CarryError(f"the packed data does not serve the study ({type(e).__name__}: {e}); "
                             "a task reads files beside its own, which _files_read does not know") from None
        here = planned.data
        if there != here:
            diff = {k: (here.get(k), there.get(k)) for k in (here.keys() | there.keys()) - {"files"}
                    if here.get(k) != there.get(k)}
            raise CarryError(f"with the packed data alone the grid plans differently (here, there): {diff}; a task "
                             "with no local files falls back to the hub, which the GPU machine cannot reach")
    if grid.model.source == "e5":
        rows = np.array(sorted({int(i) for i in ids} | set(tok.all_special_ids) | {tok.unk_token_id}), np.int64)
        id_map = np.full(len(tok), np.searchsorted(rows, tok.unk_token_id), np.int64)  # as vocab.trim
        id_map[rows] = np.arange(len(rows))
        reduce_e5s1(fetch(E5_SMALL_Q4), dest / PARTS["model"], rows)
        np.savez_compressed(dest / PARTS["id_map"], id_map=id_map, rows=rows)
        manifest["kept_rows"] = len(rows)
        if not grid.model.trim_vocab:
            print("note: the carried model keeps only the rows of the study's data (exact on its token ids)")

    sizes = {part: (dest / name).stat().st_size for part, name in PARTS.items() if (dest / name).exists()}
    manifest.update(sizes=sizes, total=sum(sizes.values()), limit=LIMIT,
                    sha256={PARTS[p]: sha256_file(dest / PARTS[p]) for p in sizes})
    write_json(dest / "manifest.json", manifest)
    for part, n in sizes.items():
        rows = f"  ({manifest['kept_rows']} embedding rows)" if part == "model" else ""
        print(f"  {PARTS[part]:<18} {_mib(n):>10}{rows}")
    print(f"  {'total':<18} {_mib(manifest['total']):>10}  of {_mib(LIMIT)}")
    if manifest["total"] > LIMIT:
        raise CarryError(f"{dest}: the study needs {_mib(manifest['total'])}, more than the {_mib(LIMIT)} a GPU "
                         f"machine receives ({', '.join(f'{PARTS[p]} {_mib(n)}' for p, n in sizes.items())}); "
                         "list fewer evaluation languages or intermediate languages in the params")
    return manifest


# ----------------------------------------------------------------------------- unpack

def build_checkpoint(model_file: Path, id_map: np.ndarray, tok_file: Path, dst: Path) -> Path:
    """Dequantise a reduced E5S1 file into a trimmed Hugging Face checkpoint, as `e5.convert`
    followed by `vocab.trim` makes on the CPU; it passes `e5._is_current`, so `e5.checkpoint()` uses it."""
    m = e5.read_e5s1(model_file)
    model = e5.bert_from(m, m.hparams["VOC"], int(id_map[m.special["pad"]]))  # the kept rows only
    return e5.save(model, m, tok_file, dst, id_map=id_map, carried=True,
                   vocab_trim={"from": "xfer.carry", "rows": m.hparams["VOC"], "original_vocab": len(id_map)})


def unpack(src_dir: str | Path, data_dest: str | Path, cache_dest: str | Path, force: bool = False) -> Path | None:
    """Restore a pack: data files under data_dest, the tokenizer asset and (for e5) the trimmed
    checkpoint under cache_dest, where `fetch` and `e5.checkpoint()` look. Returns the checkpoint."""
    src, data_dest, cache_dest = Path(src_dir), Path(data_dest), Path(cache_dest)
    manifest = read_json(src / "manifest.json")
    for name, want in manifest["sha256"].items():
        if sha256_file(src / name) != want:
            raise CarryError(f"{src / name} is damaged (sha256 differs from the manifest): pack and copy it again")
    ckpt = cache_dest / "models" / e5.NAME
    if manifest["model_source"] == "e5" and ckpt.exists() and not force \
            and not read_json(ckpt / "xfer_source.json").get("carried"):
        raise CarryError(f"{ckpt} holds the full converted model; unpacking would replace it with a trimmed one "
                         "(pass --force, or another cache folder)")

    data_dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src / PARTS["data"], "r:xz") as tar:
        tar.extractall(data_dest, filter="data")
    tok_dir = cache_dest / "assets" / f"{XLMR_TOKENIZER.package}-{XLMR_TOKENIZER.version}"
    tok_dir.mkdir(parents=True, exist_ok=True)
    tok_file = tok_dir / XLMR_TOKENIZER.filename
    tok_file.write_bytes(lzma.decompress((src / PARTS["tokenizer"]).read_bytes()))
    if sha256_file(tok_file) != XLMR_TOKENIZER.sha256:
        raise CarryError(f"{tok_file}: not the XLM-R tokenizer this project pins")
    print(f"data: {len(manifest['data_files'])} files under {data_dest}")
    if manifest["model_source"] != "e5":
        return None
    with np.load(src / PARTS["id_map"]) as z:
        id_map = z["id_map"]
    build_checkpoint(src / PARTS["model"], id_map, tok_file, ckpt)
    print(f"model: {ckpt} (mE5-small, {manifest['kept_rows']} embedding rows; model.source e5 uses it)")
    return ckpt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xfer.carry", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack a study's data and model into a folder")
    p.add_argument("params")
    p.add_argument("dest", nargs="?", default=".carry")
    u = sub.add_parser("unpack", help="restore a pack into the data folder and the model cache")
    u.add_argument("src", nargs="?", default=".carry")
    u.add_argument("--data", help="data folder (default: XFER_DATA_DIR, else data/raw)")
    u.add_argument("--cache", help="model cache (default: XFER_CACHE, else .cache)")
    u.add_argument("--force", action="store_true", help="replace a full converted model in the cache")
    args = ap.parse_args(argv)
    from xfer.config import ConfigError

    try:
        if args.command == "pack":
            pack(args.params, args.dest)
            print(f"copy {args.dest}/ to the GPU machine beside the checkout (keep it git-ignored; the device "
                  f"tool's carry=['{args.dest}']), then there: python -m xfer.carry unpack {args.dest}")
        else:
            unpack(args.src, args.data or data_dir() or root() / "data" / "raw", args.cache or cache_dir(), args.force)
    except (CarryError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
