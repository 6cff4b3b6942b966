"""A Hugging Face cache laid out as an online `make fetch` leaves it, built offline from the real
benchmark files, so a grid with `XFER_DATA_DIR=hub` runs here through `datasets` and
`transformers` own hub code (`HF_HUB_OFFLINE=1`, `HF_HOME` in a test's folder).

Datasets: each (repo, config, split) as the hub stores it, a parquet file with the hub's column
names and ClassLabel features under `hub/datasets--org--name/snapshots/<sha>/<config>/` (with
`refs/main`), and the Arrow copy `load_dataset` prepares from it under
`datasets/org___name/<config>/0.0.0/<sha>/`, which is what `load_dataset` reads offline. The
model: a tiny random `XLMRobertaConfig` encoder and the real XLM-R tokenizer under the hub id.

Which real file stands in where the hub has a split this folder does not (an English training
set: XNLI, PAWS-X, SIQA, SQuAD): `STAND_INS`; every row still comes from the real release, and
a split is capped at `cap` rows (the hub's are larger; the grid samples them anyway). The local
release has no labelled PAN-X Thai at all (its test file has the tags removed), so a grid whose
evaluation takes every language needs `evaluate.languages` without `th` here."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

XNLI_LABELS = ["entailment", "neutral", "contradiction"]  # facebook/xnli's ClassLabel order
PAWSX_LABELS = ["0", "1"]  # google-research-datasets/paws-x: label names are the digits

# split the hub has -> split of the local release whose rows stand in for it
STAND_INS = {
    "xnli": {"train": "dev", "validation": "dev"},  # XNLI dev: row-aligned translations
    "pawsx": {"train": "dev", "validation": "dev", "test": "dev"},  # the local test has its labels removed
    "udpos": {"train": "train", "validation": "dev", "test": ("test", "dev")},  # German: UD's test is not in XTREME's
    "panx": {"train": "train", "validation": "dev", "test": "dev"},  # the local test has its labels removed
    "xcopa": {"validation": "dev", "test": "test"},
    "siqa": {"train": "dev", "validation": "dev"},
    "squad": {"train": "xquad-en", "validation": "xquad-en"},  # XQuAD en is SQuAD v1.1 dev, re-released
    "xquad": {"validation": "test"},
    "tatoeba": {"validation": "test"},
}


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _rows(task_name: str, lang: str, split: str, cap: int) -> tuple[list[dict], dict]:
    """Hub rows (hub column names) and their `datasets.Features`, from the local release."""
    import datasets
    from datasets import ClassLabel, Features, Sequence, Value

    from xfer.tasks import get_task
    from xfer.tasks.qa import read_squad
    from xfer.tasks.tagging import PANX, UPOS

    task = get_task(task_name)
    local = STAND_INS[task_name][split]
    if isinstance(local, tuple):  # the first the release has for this language
        local = next((c for c in local if task.path(lang, c).exists()), local[0])
    s = Value("string")
    if task_name == "squad":
        examples = read_squad(get_task("xquad").path("en", "test"))
    elif task_name in ("xcopa", "siqa"):
        path = task.path(lang, local)
        examples = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif task_name == "tatoeba":
        path = task.path(lang, "test")
        src = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
        eng = path.with_suffix(".eng").read_text(encoding="utf-8").rstrip("\n").split("\n")
        examples = list(zip(src, eng))
    else:
        examples = task.read_file(task.path(lang, local))
    examples = examples[:cap]
    if task_name == "xnli":
        feats = Features({"premise": s, "hypothesis": s, "label": ClassLabel(names=XNLI_LABELS)})
        rows = [{"premise": e["text_a"], "hypothesis": e["text_b"], "label": XNLI_LABELS.index(e["label"])}
                for e in examples]
    elif task_name == "pawsx":
        feats = Features({"id": Value("int32"), "sentence1": s, "sentence2": s, "label": ClassLabel(names=PAWSX_LABELS)})
        rows = [{"id": i, "sentence1": e["text_a"], "sentence2": e["text_b"], "label": task.labels.index(e["label"])}
                for i, e in enumerate(examples)]
    elif task_name in ("udpos", "panx"):
        names, column = (UPOS, "pos_tags") if task_name == "udpos" else (PANX, "ner_tags")
        feats = {"tokens": Sequence(s), column: Sequence(ClassLabel(names=list(names)))}
        if task_name == "panx":
            feats["langs"] = Sequence(s)
        feats = Features(feats)
        rows = [{"tokens": e["tokens"], column: [names.index(t) for t in e["tags"]],
                 **({"langs": [lang] * len(e["tokens"])} if task_name == "panx" else {})} for e in examples]
    elif task_name == "xcopa":
        feats = Features({"premise": s, "choice1": s, "choice2": s, "question": s, "label": Value("int32"),
                          "idx": Value("int32"), "changed": Value("bool")})
        rows = [{k: e[k] for k in feats} for e in examples]
    elif task_name == "siqa":
        feats = Features({"context": s, "question": s, "answerA": s, "answerB": s, "answerC": s, "label": s})
        rows = [{**{k: e[k] for k in ("context", "question", "answerA", "answerB", "answerC")},
                 "label": str("ABC".index(e["correct"]) + 1)} for e in examples]
    elif task_name in ("squad", "xquad"):
        feats = {"id": s, "context": s, "question": s,
                 "answers": Sequence({"text": s, "answer_start": Value("int32")})}
        if task_name == "squad":
            feats = {"id": s, "title": s, **feats}
        feats = Features(feats)
        rows = [{"id": e["id"], **({"title": e.get("title", "")} if task_name == "squad" else {}),
                 "context": e["context"], "question": e["question"],
                 "answers": {"text": [a["text"] for a in e["answers"]],
                             "answer_start": [a["answer_start"] for a in e["answers"]]}} for e in examples]
    elif task_name == "tatoeba":
        from xfer.tasks.retrieval import to_tatoeba

        feats = Features({"source_sentence": s, "target_sentence": s, "source_lang": s, "target_lang": s})
        rows = [{"source_sentence": a, "target_sentence": b, "source_lang": to_tatoeba(lang), "target_lang": "eng"}
                for a, b in examples]
    else:
        raise KeyError(f"no hub layout for task {task_name!r} in this builder")
    assert rows, (task_name, lang, split)
    del datasets
    return rows, feats


def write_dataset(home: Path, repo: str, config: str, split: str, rows: list[dict], features) -> None:
    """One config's split: the hub's parquet in the hub cache, and the Arrow cache `load_dataset`
    prepares from it (what an offline `load_dataset(repo, config)` reads)."""
    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet

    sha = _sha(repo)  # one commit per repository
    repo_dir = home / "hub" / f"datasets--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / sha / config
    snap.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(snap / f"{split}-00000-of-00001.parquet"))
    files = {p.name.split("-")[0]: [str(p)] for p in sorted(snap.glob("*.parquet"))}
    out = home / "datasets" / "___".join(repo.split("/")) / config / "0.0.0" / sha
    builder = Parquet(cache_dir=str(home / "tmp"), dataset_name=repo.split("/")[-1], config_name=config,
                      config_id=config, data_files=files, hash=sha)
    builder.download_and_prepare(output_dir=str(out), download_mode="force_redownload")


def write_task(home: Path, task_name: str, lang: str, splits: set[str], cap: int) -> None:
    """The hub config of one language with the grid's splits of it (xfer's names: train, dev, test)."""
    from xfer.tasks import get_task
    from xfer.tasks.base import language_name
    from xfer.tasks.retrieval import to_tatoeba

    task = get_task(task_name)
    name = to_tatoeba(lang) if task_name == "tatoeba" else lang
    config = task.hub_config.format(lang=name, name=language_name(lang)) or "default"
    for split in sorted(splits):
        hub = "validation" if task_name == "tatoeba" else task.hub_split(split)
        if hub not in STAND_INS[task_name]:
            continue  # the hub has no such split (XCOPA's English train): the grid never reads it
        rows, feats = _rows(task_name, lang, hub, cap)
        write_dataset(home, task.hub_id, config, hub, rows, feats)


def write_model(home: Path, repo: str = "FacebookAI/xlm-roberta-large", hidden: int = 16, layers: int = 2) -> Path:
    """A tiny random XLM-R-shaped encoder with the real XLM-R tokenizer, as the hub cache holds a model."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from xfer.models import load_tokenizer
    from xfer.models.assets import XLMR_TOKENIZER, fetch

    sha = _sha(repo)
    repo_dir = home / "hub" / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / sha
    snap.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    tokenizer = load_tokenizer(fetch(XLMR_TOKENIZER).parent)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=514,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    XLMRobertaModel(config).save_pretrained(snap)
    tokenizer.save_pretrained(snap)
    return snap


def build(home: Path, files: list, cap: int = 64) -> Path:
    """The cache for a grid's data signature `files` ([task, lang, split] triples: its training,
    dev and evaluation splits) and its model; returns `home` (set HF_HOME to it)."""
    need: dict[tuple[str, str], set] = {}
    for task_name, lang, split in files:
        need.setdefault((task_name, lang), set()).add(split)
    for (task_name, lang), splits in sorted(need.items()):
        write_task(home, task_name, lang, splits, cap)
    write_model(home)
    return home


def build_once(home: Path, files: list, cap: int = 64) -> Path:
    """`build`, laid out once per machine under the project cache (keyed by this file and the
    files it holds) and copied to `home`: the layout takes minutes on 2 busy cores, a copy a second."""
    import shutil

    from xfer.paths import cache_dir

    key = hashlib.sha256((Path(__file__).read_text() + json.dumps(sorted(map(list, files))) + str(cap)).encode())
    done = cache_dir() / "hub-layouts" / key.hexdigest()[:16]
    if not done.is_dir():
        tmp = done.with_name(f".{done.name}.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp, files, cap)
        shutil.rmtree(tmp / "tmp", ignore_errors=True)
        try:
            os.replace(tmp, done)
        except OSError:  # another test laid it out meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(done, home, symlinks=True)
    return home


def environ(home: Path) -> dict:
    return {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_CACHE": str(home / "hub"), "HF_DATASETS_CACHE": str(home / "datasets")}


def hub_files(params, overrides=()) -> list:
    """The [task, lang, split] a grid reads from the hub, as its plan lists them (no data read)."""
    from xfer.config import load_grid
    from xfer.grid import plan

    old = os.environ.get("XFER_DATA_DIR")
    os.environ["XFER_DATA_DIR"] = "hub"
    try:
        return plan.validate(load_grid(params, list(overrides)))[1]["files"]
    finally:
        os.environ.pop("XFER_DATA_DIR") if old is None else os.environ.__setitem__("XFER_DATA_DIR", old)


if __name__ == "__main__":  # by hand: XFER_DATA_DIR=data/raw python tests/hub_cache.py <HF_HOME> params/study.yaml
    import sys

    files = hub_files(sys.argv[2])
    print(build(Path(sys.argv[1]), files))
