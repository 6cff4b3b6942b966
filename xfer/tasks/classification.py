"""Sentence-pair and single-sentence classification: XNLI, PAWS-X, AmericasNLI as targets;
MNLI, ANLI, QQP, SST-2 and native-language NLI corpora as intermediate tasks. Metric: accuracy.

One reader serves every layout (headerless or headed TSV, CSV, JSON lines) and every label
spelling maps onto one label set per task. Rows without a gold label ("-" in NLI, -1 in GLUE
test files) are dropped and counted; a file with no labelled row at all is an error."""

from __future__ import annotations

import csv
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xfer.loop import autocast, device_of
from xfer.paths import data_dir
from xfer.tasks.base import DataError, Task, language_name, open_utf8, pad, xtreme_languages

NLI = ("entailment", "neutral", "contradiction")
# spellings of NLI labels in the releases: IndoNLI/ANLI's e/n/c, XNLI-MT's "contradictory"
ALIASES = {"e": "entailment", "n": "neutral", "c": "contradiction", "contradictory": "contradiction"}
NO_LABEL = ("-", "", "-1")  # annotators disagreed (NLI "-"), or a hidden label (GLUE -1)
XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
LANG_CODE = "[a-z]{2,3}"  # what a language part of a file name looks like (not "anli.dev")


class Examples(list):
    """A list of examples that remembers how many rows were dropped for lacking a gold label."""

    dropped: int = 0


def read_records(path: Path, names: tuple[str, ...] = (), convert=lambda row: row) -> list:
    """`convert` of each row of a JSON-lines, CSV or TSV file (as a dict). A TSV with `names` has
    no header row, and may lack its last column (the label) throughout: an unlabelled release.
    TSVs are read unquoted (GLUE style: a leading '"' is text). Every row has the file's number
    of columns, and a row that does not parse or convert stops with the file and line."""
    path = Path(path)
    out = []
    with open_utf8(path) as f:
        if path.suffix in (".jsonl", ".json"):
            rows = ((n, line) for n, line in enumerate(f, 1) if line.strip())
        elif path.suffix == ".csv":
            reader = csv.DictReader(f)
            rows = ((reader.line_num, row) for row in reader)
        else:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = not names
            names = names or next(reader, [])
            rows = ((reader.line_num, row) for row in reader if row)
        width = None
        for n, row in rows:
            try:
                if path.suffix in (".jsonl", ".json"):
                    row = json.loads(row)
                    if not isinstance(row, dict):
                        raise ValueError(f"a JSON {type(row).__name__}, not an object")
                elif path.suffix == ".csv":
                    if None in row or None in row.values():
                        raise ValueError(f"{'more' if None in row else 'fewer'} comma-separated columns than the header; "
                                         f"allowed: {len(reader.fieldnames)} ({', '.join(reader.fieldnames)})")
                else:
                    width = width or (len(names) - 1 if not header and len(row) == len(names) - 1 else len(names))
                    if len(row) != width:
                        raise ValueError(f"{len(row)} tab-separated columns; allowed: {width} ({', '.join(names[:width])})")
                    row = dict(zip(names, row))
                out.append(convert(row))
            except (ValueError, KeyError, TypeError, IndexError) as e:
                msg = f"field {e.args[0]!r} is missing" if isinstance(e, KeyError) else str(e)
                raise DataError(f"{path}:{n}: {msg}") from None
    return out


def keep_labelled(examples: list[dict], source: str) -> Examples:
    """Drop examples whose label is None, say how many, and refuse a source with none labelled."""
    kept = Examples(ex for ex in examples if ex["label"] is not None)
    kept.dropped = len(examples) - len(kept)
    if examples and not kept:
        raise DataError(f"{source}: none of its {len(examples)} rows carries a label (this release hides "
                        "them); evaluate on a labelled split")
    if kept.dropped:
        warnings.warn(f"{source}: dropped {kept.dropped} of {len(examples)} rows without a gold label",
                      stacklevel=2)
    return kept


def accuracy(gold: list, pred: list) -> float:
    """Per cent of predictions equal to the gold label."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    return 100.0 * float(np.mean([g == p for g, p in zip(gold, pred)])) if gold else 0.0


@dataclass(frozen=True)
class FileTask(Task):
    """What sentence-level corpora need beyond the base: split names that differ in files and
    on the hub (dev -> val), single-language corpora (no {lang} in `local`: `languages_hint`
    names the language), and rows without a gold label dropped and counted."""

    file_splits: tuple[tuple[str, str], ...] = ()  # split -> its name in `local`
    hub_splits: tuple[tuple[str, str], ...] = ()  # split -> hub split ("test_lay+test_expert")
    split_local: tuple[tuple[str, str], ...] = ()  # split -> a file template of its own (another release)

    def file_split(self, split: str) -> str:
        return dict(self.file_splits).get(split, split)

    def template(self, split: str) -> str:
        return dict(self.split_local).get(split, self.local)

    def hub_split(self, split: str) -> str:
        return dict(self.hub_splits).get(split) or super().hub_split(split)

    def path(self, lang: str, split: str) -> Path:
        self.check_language(lang)
        return data_dir() / self.template(split).format(lang=lang, split=self.file_split(split))

    def languages(self, split: str) -> list[str]:
        self.check_split(split)
        root = data_dir()
        if not self.reads_local():
            return list(self.languages_hint) or xtreme_languages(self.name)
        if "{lang}" not in self.template(split):
            return [lang for lang in self.languages_hint if self.path(lang, split).exists()]
        local = self.template(split).replace("{split}", self.file_split(split))
        first, *rest = [re.escape(part) for part in local.split("{lang}")]
        pattern = first + "".join(("(?P<lang>%s)" % LANG_CODE if i == 0 else "(?P=lang)") + part
                                  for i, part in enumerate(rest))  # a template may repeat {lang}
        paths = root.glob(local.replace("{lang}", "*"))
        return sorted({m["lang"] for p in paths if (m := re.fullmatch(pattern, p.relative_to(root).as_posix()))})

    def read_hub(self, lang: str, split: str) -> list[dict]:
        """As the base's, but counting the rows dropped for lacking a gold label."""
        import datasets

        self.check_language(lang)
        name = language_name(lang) if "{name}" in self.hub_config else lang
        config = self.hub_config.format(lang=lang, split=split, name=name) or None  # "" = the only one
        ds = datasets.load_dataset(self.hub_id, config, split=self.hub_split(split))
        return keep_labelled([self.from_hub(row) for row in self.hub_rows(ds)],
                             f"{self.hub_id} {config or ''} {self.hub_split(split)}")

    def hub_rows(self, ds):
        return iter(ds)


@dataclass(frozen=True)
class ClassificationTask(FileTask):
    labels: tuple[str, ...] = NLI
    text: tuple[str, ...] = ("premise", "hypothesis")  # one field: single-sentence task
    label: str = "label"
    header: tuple[str, ...] = ()  # column names of a TSV without a header row
    hub_text: tuple[str, ...] = ()  # when the hub names the text fields differently
    hub_label: str = "label"

    # -- data -------------------------------------------------------------------------
    def label_of(self, raw) -> str | None:
        """The task's label for a raw label: its name, an alias, or an index into `labels`;
        None for no gold label. An unknown label is an error, never a silent drop."""
        raw = str(raw).strip() if raw is not None else ""
        raw = ALIASES.get(raw, raw)
        if raw in self.labels:
            return raw
        if raw in NO_LABEL:
            return None
        if raw.isdigit() and int(raw) < len(self.labels):
            return self.labels[int(raw)]
        raise ValueError(f"task {self.name!r}: unknown label {raw!r}; labels: {', '.join(self.labels)}")

    def example(self, row: dict, text: tuple[str, ...], label: str) -> dict:
        texts = [row[f] for f in text]
        return {"text_a": texts[0], "text_b": texts[1] if len(texts) > 1 else None,
                "label": self.label_of(row.get(label))}

    def read_file(self, path: Path) -> Examples:
        return keep_labelled(read_records(path, self.header, lambda r: self.example(r, self.text, self.label)),
                             str(path))

    def from_hub(self, row: dict) -> dict:
        return self.example(row, self.hub_text or self.text, self.hub_label)

    def hub_rows(self, ds):
        """Rows with ClassLabel ids as their names: hubs order the same labels differently."""
        import datasets

        names = {k: f.names for k, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
        for row in ds:
            yield {k: names[k][v] if k in names and v is not None and v >= 0 else v for k, v in row.items()}

    # -- model ------------------------------------------------------------------------
    def build_model(self, encoder):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            encoder, num_labels=len(self.labels), id2label=dict(enumerate(self.labels)),
            label2id={l: i for i, l in enumerate(self.labels)})

    def encode(self, examples, tokenizer, max_length, id_map=None):
        from xfer.models.vocab import apply_id_map

        pairs = len(self.text) > 1
        enc = tokenizer([ex["text_a"] for ex in examples], [ex["text_b"] for ex in examples] if pairs else None,
                        truncation=True, max_length=max_length)
        ids = apply_id_map(enc["input_ids"], id_map)
        index = {l: i for i, l in enumerate(self.labels)}
        return [{"input_ids": list(ids[i]), "labels": index[ex["label"]]} for i, ex in enumerate(examples)]

    def collate(self, features, pad_id):
        return {**pad(features, pad_id), "labels": torch.tensor([f["labels"] for f in features], dtype=torch.long)}

    @torch.inference_mode()
    def evaluate(self, model, examples, tokenizer, max_length, batch_size, id_map=None):
        best = predict(self, model, self.encode(examples, tokenizer, max_length, id_map), tokenizer, batch_size)
        pred = [self.labels[i] for i in best]
        acc = accuracy([ex["label"] for ex in examples], pred)
        return {"score": acc, "accuracy": acc, "n_examples": len(examples)}


def predict(task: Task, model, features: list[dict], tokenizer, batch_size: int) -> list[int]:
    """Arg-max class (or choice) per feature, batching similar lengths together."""
    def length(f):
        ids = f["input_ids"]
        return max(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)

    order = np.argsort([length(f) for f in features])
    best = [0] * len(features)
    model.eval()
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = task.collate([features[i] for i in rows], tokenizer.pad_token_id)
        with autocast(model):
            logits = model(input_ids=batch["input_ids"].to(device_of(model)),
                           attention_mask=batch["attention_mask"].to(device_of(model))).logits
        for i, b in zip(rows, logits.argmax(-1).tolist()):
            best[i] = b
    return best


PAIR_TSV = ("sentence1", "sentence2", "label")  # XTREME's headerless PAWS-X layout
NLI_TSV = ("premise", "hypothesis", "label")  # XTREME's headerless XNLI layout (MNLI train too)

CLASSIFICATION_TASKS = [
    # -- targets ------------------------------------------------------------------------------
    ClassificationTask(
        name="xnli", family="classification", metric="accuracy", local="xtreme/xnli/{split}-{lang}.tsv",
        header=NLI_TSV, hub_id="facebook/xnli", unlabelled=("test",), languages_hint=XNLI_LANGS, row_aligned=True,
        description="XNLI (XTREME layout): dev labelled, test labels hidden in this release; English "
                    "train = MNLI (XTREME writes it as xnli/train-en.tsv); on the hub, train in every "
                    "language = MNLI's 392,702 pairs machine-translated, row-aligned across the 15 languages",
    ),
    ClassificationTask(
        name="pawsx", family="classification", metric="accuracy", labels=("different", "paraphrase"),
        text=("sentence1", "sentence2"), header=PAIR_TSV, local="xtreme/pawsx/{split}-{lang}.tsv",
        hub_id="google-research-datasets/paws-x", languages_hint=("de", "en", "es", "fr", "ja", "ko", "zh"),
        description="PAWS-X paraphrase identification; a test file without labels is refused "
                    "(evaluate on dev); English train = PAWS-Wiki (hub only)",
    ),
    ClassificationTask(
        name="americasnli", family="classification", metric="accuracy", splits=("dev", "test"),
        local="extra/americasnli/{split}/{lang}.tsv", hub_id="americas_nli",
        languages_hint=("aym", "bzd", "cni", "gn", "hch", "nah", "oto", "quy", "shp", "tar"),
        description="AmericasNLI: XNLI translated into 10 indigenous languages of the Americas (no train)",
    ),
    # -- intermediate / training corpora --------------------------------------------------------
    ClassificationTask(
        name="mnli", family="classification", metric="accuracy", splits=("train", "dev"),
        local="xtreme/xnli/train-en.tsv", header=NLI_TSV, hub_id="nyu-mll/glue", hub_config="mnli",
        languages_hint=("en",), hub_splits=(("dev", "validation_matched"),),
        split_local=(("dev", "xtreme/xnli/dev_matched-en.tsv"),),
        description="MultiNLI train (392k): the XNLI TSV layout, as XTREME's download script writes it; "
                    "dev = the hub's validation_matched (model selection of an MNLI intermediate run)",
    ),
    ClassificationTask(
        name="anli", family="classification", metric="accuracy", local="extra/anli/{split}.jsonl",
        text=("context", "hypothesis"), hub_text=("premise", "hypothesis"), hub_id="facebook/anli",
        hub_config="", languages_hint=("en",),
        hub_splits=tuple((s, "+".join(f"{h}_r{r}" for r in (1, 2, 3))) for s, h in
                         (("train", "train"), ("dev", "dev"), ("test", "test"))),
        description="Adversarial NLI, rounds 1-3 together (local: the release's R1-R3 JSON lines, concatenated)",
    ),
    ClassificationTask(
        name="qqp", family="classification", metric="accuracy", labels=("not_duplicate", "duplicate"),
        local="extra/qqp/{split}.tsv", text=("question1", "question2"), label="is_duplicate",
        hub_id="nyu-mll/glue", hub_config="qqp", unlabelled=("test",),
        languages_hint=("en",), description="Quora Question Pairs (GLUE layout; test labels hidden)",
    ),
    ClassificationTask(
        name="sst2", family="classification", metric="accuracy", labels=("negative", "positive"),
        text=("sentence",), local="extra/sst2/{split}.tsv", file_splits=(("train", "train_full"),
                                                                      ("test", "test-labeled")),
        hub_id="nyu-mll/glue", hub_config="sst2", languages_hint=("en",),
        description="SST-2 sentiment (GLUE layout, 67,349 train); local test = the labelled copy of "
                    "GLUE's test file (row-aligned)",
    ),
    ClassificationTask(
        name="sst2_pt", family="classification", metric="accuracy", labels=("negative", "positive"),
        text=("sentence",), local="extra/plue_pt/SST-2/{split}.tsv", hub_id="dlb/plue", hub_config="sst2",
        unlabelled=("test",), languages_hint=("pt",), translation_of="sst2",
        description="SST-2 machine-translated to Portuguese (PLUE), row-aligned with the English file: "
                    "same labels and size, other language",
    ),
    ClassificationTask(
        name="ocnli", family="classification", metric="accuracy", local="extra/ocnli/{split}.json",
        splits=("train", "train_3k", "dev", "test"), file_splits=(("train", "train.10k"), ("train_3k", "train.3k")),
        text=("sentence1", "sentence2"), hub_id="clue/clue", hub_config="ocnli", unlabelled=("test",),
        languages_hint=("zh",),
        description="OCNLI, native Chinese NLI; local train = the release's 10k subset (the hub has the full 50k)",
    ),
    ClassificationTask(
        name="indonli", family="classification", metric="accuracy", local="extra/indonli/{split}.jsonl",
        splits=("train", "dev", "test", "test_lay", "test_expert"), file_splits=(("dev", "val"),),
        hub_id="afaji/indonli", hub_config="", hub_splits=(("test", "test_lay+test_expert"),),
        languages_hint=("id",), description="IndoNLI, native Indonesian NLI (labels e/n/c); test = lay + expert",
    ),
    ClassificationTask(
        name="kornli", family="classification", metric="accuracy", splits=("dev", "test"),
        local="extra/kornli/xnli.{split}.ko.tsv", text=("sentence1", "sentence2"), label="gold_label",
        hub_id="kor_nli", hub_config="xnli", hub_text=("premise", "hypothesis"), languages_hint=("ko",),
        description="KorNLI: XNLI dev/test translated to Korean, labelled",
    ),
    ClassificationTask(
        name="xnli_derived", family="classification", metric="accuracy", splits=("train", "dev"),
        file_splits=(("train", "test"),), local="extra/xnli_test_derived/{split}-{lang}.tsv", header=NLI_TSV,
        split_local=(("dev", "xtreme/xnli/dev-{lang}.tsv"),), hub_id="facebook/xnli",
        hub_splits=(("train", "test"),), languages_hint=XNLI_LANGS, row_aligned=True,
        description="XNLI test (5,010 pairs, 15-way parallel) as a training corpus in any of its languages, "
                    "XNLI dev for model selection; local labels are a projection from KorNLI's row-aligned "
                    "Korean test, not the official labels (the hub has those)",
    ),
]
