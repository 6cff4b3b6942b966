"""Vocabulary trimming: keep only the embedding rows a study's data uses.

On a 2-core CPU, updating a 250k-row embedding dominates a fine-tuning step, yet a study
only ever feeds the token ids its own data produces. `trim` keeps those rows (plus the
tokenizer's specials) and saves `id_map.npy`, original id -> new row; the tokenizer files
stay unchanged, so text is tokenised as before and `apply_id_map` renumbers the ids.
On kept ids the trimmed model computes exactly what the full one does.

    ids = tokenizer(texts).input_ids                      # original ids
    ids = apply_id_map(ids, load_id_map(checkpoint))      # rows of the trimmed model
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from xfer.paths import read_json, replace_dir, write_json, writing

ID_MAP = "id_map.npy"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt")


def load_id_map(ckpt: Path) -> np.ndarray | None:
    """Original id -> row of this checkpoint's embedding; None for an untrimmed checkpoint."""
    path = Path(ckpt) / ID_MAP
    return np.load(path) if path.exists() else None


def apply_id_map(input_ids, id_map: np.ndarray | None):
    """Renumber token ids (nested lists, numpy or torch int arrays) into a trimmed model's rows."""
    if id_map is None:
        return input_ids
    if isinstance(input_ids, torch.Tensor):
        if input_ids.numel() and int(input_ids.min()) < 0:
            raise ValueError("negative token id")
        return torch.as_tensor(id_map, device=input_ids.device)[input_ids]
    if isinstance(input_ids, np.ndarray) and input_ids.dtype != object:
        if input_ids.size and input_ids.min() < 0:
            raise ValueError("negative token id")
        return id_map[input_ids]
    if all(isinstance(i, (int, np.integer)) for i in input_ids):  # one sequence
        return apply_id_map(np.asarray(input_ids, dtype=np.int64), id_map).tolist()
    return [apply_id_map(row, id_map) for row in input_ids]  # a (ragged) batch


def trim(src: Path, dst: Path, keep_ids, tokenizer=None) -> Path:
    """Save at dst a copy of the encoder at src with only the rows of keep_ids and the specials.

    keep_ids are ids of the ORIGINAL tokenizer, also when src is itself trimmed: maps compose,
    and ids an earlier trim dropped stay dropped (they already read as <unk>). `tokenizer`: src's,
    where the caller has it loaded already (XLM-R's takes seconds to load)."""
    from transformers import AutoModel, AutoTokenizer

    src, dst = Path(src), Path(dst)
    model, info = AutoModel.from_pretrained(src, output_loading_info=True)
    tok = tokenizer or AutoTokenizer.from_pretrained(src)
    if tok.unk_token_id is None:
        raise ValueError(f"{src}: the tokenizer has no <unk>, so dropped ids would have nowhere to go")
    weight = model.get_input_embeddings().weight.detach()
    old_map = load_id_map(src)
    if old_map is None:
        old_map = np.arange(weight.shape[0], dtype=np.int64)

    unk = tok.unk_token_id
    keep = np.array(sorted({int(i) for i in keep_ids} | set(tok.all_special_ids) | {unk}), dtype=np.int64)
    if keep[0] < 0 or keep[-1] >= len(old_map):
        raise ValueError(f"keep_ids must lie in [0, {len(old_map)}): got {keep[0]}..{keep[-1]}")
    keep = keep[(old_map[keep] != old_map[unk]) | (keep == unk)]
    rows = old_map[keep]  # rows of src, increasing
    new_map = np.full(len(old_map), np.searchsorted(keep, unk), dtype=np.int64)
    new_map[keep] = np.arange(len(keep))

    row_of = {int(r): i for i, r in enumerate(rows)}  # src row -> new row
    config = model.config
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(config, name, None) is not None:
            setattr(config, name, row_of[getattr(config, name)])
    config.vocab_size = len(keep)
    emb = torch.nn.Embedding(len(keep), weight.shape[1], padding_idx=config.pad_token_id, dtype=weight.dtype)
    emb.weight.data.copy_(weight[torch.from_numpy(rows)])
    model.set_input_embeddings(emb)
    if getattr(model, "pooler", None) is not None and any(k.startswith("pooler.") for k in info["missing_keys"]):
        model.pooler = None  # src had none: do not save the random one from_pretrained made

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
    tmp.chmod(0o755)
    with writing(tmp):  # a failure removes the half-written folder
        model.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copyfile(src / name, tmp / name)
        np.save(tmp / ID_MAP, new_map)
        source = read_json(src / "xfer_source.json") if (src / "xfer_source.json").exists() else {}
        source["vocab_trim"] = {"from": str(src), "rows": len(keep), "original_vocab": len(new_map)}
        write_json(tmp / "xfer_source.json", source)
        replace_dir(tmp, dst)
    return dst
