"""Token tagging: UD-POS, WikiANN / PAN-X (and any CoNLL-style tagging set).

Labels sit on the first sub-word of each word, as in XTREME; NER is scored with seqeval's
entity F1, POS with token-level micro F1 (XTREME's POS score). CCG supertagging (an English
intermediate task) has a large, data-defined tag set: its labels are read off the training file."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xfer.loop import autocast, device_of
from xfer.paths import data_dir
from xfer.tasks.base import DataError, Task, open_utf8, pad

UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
        "PUNCT", "SCONJ", "SYM", "VERB", "X")
PANX = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")


def read_conll(path: Path, sep: str | None = "\t", labels: tuple[str, ...] = ()) -> list[dict]:
    """`token<sep>label` lines, a blank line between sentences (XTREME / CoNLL layout). Every
    line has exactly the two columns and, when `labels` are given, one of them as its label: a
    stray column would otherwise shift into the token and change the score without a word."""
    examples, tokens, tags = [], [], []
    known = set(labels)
    with open_utf8(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    examples.append({"tokens": tokens, "tags": tags})
                    tokens, tags = [], []
                continue
            cols = line.split(sep or " ")
            if len(cols) != 2 or not cols[1]:
                raise DataError(f"{path}:{n}: {len(cols)} {'tab' if sep else 'space'}-separated column(s) "
                                f"{'with an empty label ' if len(cols) == 2 else ''}in {line[:60]!r}; "
                                "allowed: token, label")
            token, tag = cols
            if known and tag not in known:
                raise DataError(f"{path}:{n}: label {tag!r} is unknown; allowed: {', '.join(labels)}")
            tokens.append(token)
            tags.append(tag)
    if tokens:
        examples.append({"tokens": tokens, "tags": tags})
    return examples


def read_ccg(path: Path) -> list[dict]:
    """CCG supertags in either layout: one `token<TAB>supertag` per line with a blank line between
    sentences (as the XTREME tagging files), or jiant's one sentence per line, `tokens<TAB>tags`
    (both space-separated). A file is the latter when any of its lines holds a space."""
    with open_utf8(path) as f:
        rows = [(n, line.strip().split("\t")) for n, line in enumerate(f, 1) if line.strip()]
    if not any(" " in col for _, cols in rows for col in cols):
        return read_conll(path)
    examples = []
    for n, cols in rows:
        if len(cols) != 2:
            raise DataError(f"{path}:{n}: {len(cols)} tab-separated column(s); allowed: tokens, tags")
        tokens, tags = cols[0].split(), cols[1].split()
        if len(tokens) != len(tags):
            raise DataError(f"{path}:{n}: {len(tokens)} tokens but {len(tags)} tags; allowed: one tag per token")
        examples.append({"tokens": tokens, "tags": tags})
    return examples


@functools.lru_cache(maxsize=8)
def _file_tags(path: str, reader: str, mtime_ns: int, size: int) -> list[str]:
    """The sorted tag set of a tagging file (cached per file version: the key holds its stamp)."""
    examples = read_ccg(Path(path)) if reader == "ccg" else read_conll(Path(path))
    return sorted({t for ex in examples for t in ex["tags"]})


def seqeval_f1(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level precision/recall/F1 (conlleval semantics, as XTREME scores NER)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    return {"f1": 100 * f1_score(gold, pred), "precision": 100 * precision_score(gold, pred),
            "recall": 100 * recall_score(gold, pred)}


def token_f1(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Token-level micro F1: every gold token has one prediction, so it equals accuracy."""
    from sklearn.metrics import f1_score

    g = [t for s in gold for t in s]
    p = [t for s in pred for t in s]
    return {"f1": 100 * f1_score(g, p, average="micro"), "tokens": len(g)}


@dataclass(frozen=True)
class TaggingTask(Task):
    labels: tuple[str, ...] = ()  # empty: data-defined, the training split's tags + `unk_label`
    scorer: str = "seqeval"  # or "token"
    hub_tokens: str = "tokens"
    hub_tags: str = "tags"
    missing_label: str = "O"  # predicted for a word the encoder never saw (truncated)
    unk_label: str = "<unk>"  # data-defined labels only: the label of a tag unseen in training
    reader: str = "conll"  # or "ccg" (either CCG layout)

    def label_set(self) -> tuple[str, ...]:
        """The fixed labels, or the sorted tags of the training split (first hinted language)
        followed by `unk_label`; a local file's set is read once per process (and file version)."""
        if self.labels:
            return self.labels
        lang = self.languages_hint[0] if self.languages_hint else "en"
        if self.reads_local():
            path = self.path(lang, "train")
            if not path.exists():
                raise DataError(f"task {self.name!r} takes its label set from its training split, "
                                f"but {path} does not exist")
            stat = path.stat()
            tags = _file_tags(str(path), self.reader, stat.st_mtime_ns, stat.st_size)
        else:
            tags = sorted({t for ex in self.read_hub(lang, "train") for t in ex["tags"]})
        return (*[t for t in tags if t != self.unk_label], self.unk_label)

    def path(self, lang: str, split: str) -> Path:
        self.check_language(lang)
        return super().path(lang, split)

    def languages(self, split: str) -> list[str]:
        if "{lang}" in self.local or not self.reads_local():
            return super().languages(split)
        self.check_split(split)
        return [lang for lang in self.languages_hint if self.path(lang, split).exists()]

    def read_hub(self, lang: str, split: str) -> list[dict]:
        self.check_language(lang)
        if not self.hub_id:
            where = data_dir() or "<data folder> (set XFER_DATA_DIR)"
            raise DataError(f"task {self.name!r} cannot be loaded from the hub: {self.description}; put the "
                            f"files at {where}/{self.local} for splits {', '.join(self.splits)}")
        return super().read_hub(lang, split)

    def read_file(self, path: Path) -> list[dict]:
        # data-defined labels (no `labels`): a tag unseen in training becomes `unk_label` in encode
        return read_ccg(path) if self.reader == "ccg" else read_conll(path, labels=self.labels)

    def from_hub(self, row: dict) -> dict:
        tags = row[self.hub_tags]
        return {"tokens": row[self.hub_tokens], "tags": [self.labels[t] if isinstance(t, int) else t for t in tags]}

    def build_model(self, encoder):
        from transformers import AutoModelForTokenClassification

        labels = self.label_set()
        return AutoModelForTokenClassification.from_pretrained(
            encoder, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={l: i for i, l in enumerate(labels)})

    def encode(self, examples, tokenizer, max_length, id_map=None):
        from xfer.models.vocab import apply_id_map

        index = {l: i for i, l in enumerate(self.label_set())}
        unk = None if self.labels else index[self.unk_label]  # data-defined: unseen tag -> unk_label
        enc = tokenizer([ex["tokens"] for ex in examples], is_split_into_words=True, truncation=True,
                        max_length=max_length)
        ids = enc["input_ids"] if id_map is None else apply_id_map(enc["input_ids"], id_map)
        features = []
        for i, ex in enumerate(examples):
            word_ids = enc.word_ids(i)
            labels, prev = [], None
            for w in word_ids:
                if w is None or w == prev:
                    labels.append(-100)
                else:
                    labels.append(index[ex["tags"][w]] if unk is None else index.get(ex["tags"][w], unk))
                prev = w
            features.append({"input_ids": list(ids[i]), "labels": labels, "word_ids": word_ids})
        return features

    def collate(self, features, pad_id):
        batch = pad(features, pad_id)
        labels = torch.full(batch["input_ids"].shape, -100, dtype=torch.long)  # -100: no loss
        for i, f in enumerate(features):
            labels[i, :len(f["labels"])] = torch.tensor(f["labels"])
        return {**batch, "labels": labels}

    def windows(self, examples, tokenizer, max_length) -> tuple[list[dict], list[tuple[int, int]]]:
        """Examples cut into consecutive runs of whole words that each fit `max_length` subwords
        (special tokens included), with (example index, first word) of each: a sentence longer
        than the model's window is scored in pieces, never truncated with its tail scored as
        wrong. A sentence that fits is one piece, as it was. Only a single word longer than the
        window itself is cut (its subwords past the window; `words_not_encoded` counts it)."""
        room = max(1, max_length - tokenizer.num_special_tokens_to_add())
        enc = tokenizer([ex["tokens"] for ex in examples], is_split_into_words=True, add_special_tokens=False)
        pieces, spans = [], []
        for i, ex in enumerate(examples):
            if len(enc["input_ids"][i]) <= room:
                pieces.append(ex)
                spans.append((i, 0))
                continue
            sizes = np.bincount([w for w in enc.word_ids(i) if w is not None], minlength=len(ex["tokens"]))
            start, used = 0, 0
            for w, n in enumerate(sizes):
                if w > start and used + n > room:
                    pieces.append({**ex, "tokens": ex["tokens"][start:w], "tags": ex["tags"][start:w]})
                    spans.append((i, start))
                    start, used = w, 0
                used += n
            pieces.append({**ex, "tokens": ex["tokens"][start:], "tags": ex["tags"][start:]})
            spans.append((i, start))
        return pieces, spans

    @torch.inference_mode()
    def evaluate(self, model, examples, tokenizer, max_length, batch_size, id_map=None):
        pieces, spans = self.windows(examples, tokenizer, max_length)
        features = self.encode(pieces, tokenizer, max_length, id_map)
        names = self.label_set()
        order = np.argsort([len(f["input_ids"]) for f in features])  # similar lengths batch together
        pred = [[self.missing_label] * len(ex["tokens"]) for ex in examples]
        model.eval()
        for start in range(0, len(order), batch_size):
            chunk = [features[i] for i in order[start:start + batch_size]]
            batch = {k: v.to(device_of(model)) for k, v in self.collate(chunk, tokenizer.pad_token_id).items()}
            with autocast(model):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            best = logits.argmax(-1).cpu().numpy()
            for row, i in enumerate(order[start:start + batch_size]):
                example, first = spans[i]
                prev = None
                for pos, w in enumerate(features[i]["word_ids"]):
                    if w is not None and w != prev:
                        pred[example][first + w] = names[best[row, pos]]
                    prev = w
        gold = [ex["tags"] for ex in examples]
        scores = seqeval_f1(gold, pred) if self.scorer == "seqeval" else token_f1(gold, pred)
        missing = sum(len(ex["tokens"]) - len({w for w in f["word_ids"] if w is not None})
                      for ex, f in zip(pieces, features))
        return {"score": scores["f1"], **scores, "n_examples": len(examples), "words_not_encoded": missing,
                "sentences_in_windows": len({i for i, first in spans if first})}

TAGGING_TASKS = [
    TaggingTask(
        name="udpos", family="tagging", metric="f1", labels=UPOS, scorer="token", missing_label="X",
        local="xtreme/udpos/{split}-{lang}.tsv", hub_id="google/xtreme", hub_config="udpos.{name}",
        hub_tags="pos_tags", description="Universal Dependencies v2.5 POS tagging (XTREME preprocessing)",
    ),
    TaggingTask(
        name="panx", family="tagging", metric="f1", labels=PANX, scorer="seqeval",
        local="xtreme/panx/{split}-{lang}.tsv", hub_id="google/xtreme", hub_config="PAN-X.{lang}",
        hub_tags="ner_tags", unlabelled=("test",),
        description="WikiANN / PAN-X NER (XTREME preprocessing); test labels hidden, evaluate on dev",
    ),
    TaggingTask(  # labels=(): the ~1,300 supertags are read off the training file, plus <unk>
        name="ccg", family="tagging", metric="accuracy", labels=(), scorer="token", missing_label="<unk>",
        reader="ccg", local="extra/ccg/ccg.{split}.tsv", hub_id="", languages_hint=("en",),
        description="CCGbank supertagging. CCGbank (LDC2005T13) is LDC-licensed, so no hub has a copy: "
                    "obtain it from the LDC and preprocess it with jiant (one `token<TAB>supertag` per line, "
                    "a blank line between sentences; jiant's `tokens<TAB>tags` per sentence is read too)",
    ),
]
