"""What every task family provides. The training loop and the runner only talk to this."""

from __future__ import annotations

import glob
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from xfer.paths import data_dir, package_file, read_utf8


def pad(features: list[dict], pad_id: int) -> dict:
    """input_ids padded to the batch's longest, and the attention mask (dynamic padding)."""
    import torch

    n = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), n), dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, :len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[i, :len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _languages_table() -> list[dict]:
    import csv

    with open(package_file("languages.csv"), encoding="utf-8") as f:
        return list(csv.DictReader(f))


def language_name(lang: str) -> str:
    """English name of an ISO 639-1 code (hub configurations such as `udpos.English` use it)."""
    return {row["iso639_1"]: row["language"] for row in _languages_table()}.get(lang, lang)


def xtreme_languages(task: str) -> list[str]:
    """The XTREME-R languages of a task, from the project's language metadata."""
    return sorted(row["iso639_1"] for row in _languages_table() if task in row["xtremeR_tasks"].split(";"))


class DataError(ValueError):
    """A split, language or file that cannot be had; the message says what can."""


def open_utf8(path: Path) -> io.StringIO:
    """The file's text as `open(path, encoding="utf-8")` reads it (universal newlines); a byte
    that is not UTF-8 stops with the file, line and column, where the codec names neither."""
    try:
        return io.StringIO(read_utf8(path), newline=None)
    except UnicodeError as e:
        raise DataError(str(e)) from None


def read_json(path: Path):
    """A JSON file; a syntax error names the file, line and column."""
    try:
        return json.load(open_utf8(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: column {e.colno}: not valid JSON ({e.msg})") from None


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    metric: str
    local: str  # file template under the data folder, with {split} and {lang}
    hub_id: str  # the dataset a user with internet loads
    hub_config: str = "{lang}"  # its configuration template
    splits: tuple[str, ...] = ("train", "dev", "test")
    unlabelled: tuple[str, ...] = ()  # splits whose release hides the labels
    description: str = ""
    languages_hint: tuple[str, ...] = field(default=())  # hub languages (local: read off the folder)
    translation_of: str | None = None  # a row-aligned translation of this task's corpus (same content)
    row_aligned: bool = False  # its languages are row-aligned translations of one corpus (XNLI)

    def content(self) -> tuple[str, bool]:
        """The corpus this task's text comes from, and whether its rows are aligned translations of
        it. Runs of equal content key, size and seed differ only in language when aligned: the
        English one is then the control of the other (sst2_pt -> sst2; xnli_derived de -> en)."""
        if self.translation_of:
            return self.translation_of, True
        return self.name, self.row_aligned

    # -- data -------------------------------------------------------------------------
    def path(self, lang: str, split: str) -> Path:
        root = data_dir()
        assert root is not None
        return root / self.local.format(lang=lang, split=split)

    def files(self, lang: str, split: str) -> list[Path]:
        """Every local file one (language, split) reads: its own and those beside it of the same
        stem (Tatoeba's .eng, BUCC's .en and .gold). Their contents go into the run ids."""
        path = self.path(lang, split)
        return sorted({path, *path.parent.glob(glob.escape(path.stem) + ".*")}) if path.suffix else [path]

    def reads_local(self) -> bool:
        """Local files when the data folder holds any of this task's; else the hub, so a task whose
        release is not in the folder (MNLI, SQuAD here) still loads for a user with internet."""
        root = data_dir()
        return root is not None and next(root.glob(re.sub(r"\{\w+\}", "*", self.local)), None) is not None

    def languages(self, split: str) -> list[str]:
        """Languages with labelled `split` data (from the local folder, else the hub list)."""
        self.check_split(split)
        root = data_dir()
        if not self.reads_local():
            return list(self.languages_hint) or xtreme_languages(self.name)
        pattern = self.local.format(lang="*", split=split)
        prefix, suffix = pattern.split("*")
        return sorted(str(p.relative_to(root))[len(prefix): -len(suffix) or None] for p in root.glob(pattern))

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise DataError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        if split in self.unlabelled and self.reads_local():  # the hub may carry the labels
            labelled = [s for s in self.splits if s not in self.unlabelled]
            raise DataError(f"task {self.name!r}: the {split!r} split carries no labels in the local files; "
                            f"use one of: {', '.join(labelled)}, or read the hub (XFER_DATA_DIR=hub)")

    def check_language(self, lang: str) -> None:
        """A corpus whose file template names no language has only its own (`languages_hint`)."""
        if "{lang}" not in self.local and lang not in self.languages_hint:  # a one-language corpus
            raise DataError(f"task {self.name!r} is a {'/'.join(self.languages_hint)} corpus; "
                            f"there is no {lang!r} version")

    def load(self, lang: str, split: str) -> list[dict]:
        """Examples of one language and split: local files when a data folder is set, else the hub."""
        self.check_split(split)
        if not self.reads_local():
            return self.read_hub(lang, split)
        path = self.path(lang, split)
        if not path.exists():
            have = self.languages(split)
            raise DataError(f"task {self.name!r} has no {split} data for language {lang!r} in {data_dir()}; "
                            f"languages with {split} data: {', '.join(have) or 'none'}")
        examples = self.read_file(path)
        if not examples:  # an empty file would fail far downstream (an empty array to a metric)
            raise DataError(f"{path}: no examples (the file is empty); allowed: a file with at least one")
        return examples

    def read_hub(self, lang: str, split: str) -> list[dict]:
        import datasets

        config = self.hub_config.format(lang=lang, split=split, name=language_name(lang))
        ds = datasets.load_dataset(self.hub_id, config, split=self.hub_split(split))
        return [self.from_hub(row) for row in ds]

    def hub_split(self, split: str) -> str:
        return {"dev": "validation"}.get(split, split)

    # -- family specific ---------------------------------------------------------------
    def read_file(self, path: Path) -> list[dict]:
        raise NotImplementedError

    def from_hub(self, row: dict) -> dict:
        raise NotImplementedError

    def build_model(self, encoder: str | Path):
        """The encoder under a freshly initialised head for this task."""
        raise NotImplementedError

    def encode(self, examples: list[dict], tokenizer, max_length: int, id_map=None) -> list[dict]:
        raise NotImplementedError

    def collate(self, features: list[dict], pad_id: int) -> dict:
        raise NotImplementedError

    def evaluate(self, model, examples: list[dict], tokenizer, max_length: int, batch_size: int,
                 id_map=None) -> dict:
        """{'score': headline metric 0-100, plus the metric's parts}."""
        raise NotImplementedError
