"""Multiple choice: XCOPA as target; COPA, SocialIQa, CosmosQA, CommonsenseQA, HellaSwag as
intermediate tasks. Metric: accuracy.

Each dataset's row becomes {context, choices, label}; every (context, choice) pair is one
sequence and AutoModelForMultipleChoice scores them against each other. Prompts follow jiant,
whose encodings Phang et al. and XTREME-R's XCOPA runs used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from xfer.tasks.classification import FileTask, accuracy, keep_labelled, predict, read_records

COPA_QUESTION = {"cause": "What was the cause of this?", "effect": "What happened as a result?"}


def index(raw, base: int = 0) -> int | None:
    """A choice index from an int or digit string; None for a hidden label ("", -1)."""
    if raw is None or str(raw).strip() in ("", "-1"):
        return None
    return int(raw) - base


def copa(row: dict) -> dict:
    """COPA / XCOPA: the question turns into a connective after the premise (jiant, XTREME)."""
    return {"context": f"{row['premise']} {COPA_QUESTION[row['question']]}",
            "choices": [row["choice1"], row["choice2"]], "label": index(row.get("label"))}


def siqa(row: dict) -> dict:
    """SocialIQa: the release's files give the answer as a letter, the hub as "1".."3"."""
    label = "ABC".index(row["correct"]) if row.get("correct") else index(row.get("label"), base=1)
    return {"context": f"{row['context']} {row['question']}",
            "choices": [row["answerA"], row["answerB"], row["answerC"]], "label": label}


def cosmosqa(row: dict) -> dict:
    return {"context": f"{row['context']} {row['question']}",
            "choices": [row[f"answer{i}"] for i in range(4)], "label": index(row.get("label"))}


def commonsenseqa(row: dict) -> dict:
    """Both layouts: the original release nests the choices in "question", the hub does not."""
    question = row["question"]
    if isinstance(question, dict):
        keys = [c["label"] for c in question["choices"]]
        texts, question = [c["text"] for c in question["choices"]], question["stem"]
    else:
        keys, texts = row["choices"]["label"], row["choices"]["text"]
    key = row.get("answerKey")
    return {"context": question, "choices": list(texts), "label": keys.index(key) if key else None}


def hellaswag(row: dict) -> dict:
    """Context = ctx_a; each ending continues ctx_b (jiant's encoding). Test rows have no label."""
    return {"context": row["ctx_a"], "choices": [f"{row['ctx_b']} {e}".strip() for e in row["endings"]],
            "label": index(row.get("label"))}


@dataclass(frozen=True)
class MultipleChoiceTask(FileTask):
    n_choices: int = 2  # every example has exactly this many: batches stack to (batch, n_choices, length)
    convert: Callable[[dict], dict] = copa  # a release's row -> {context, choices, label}

    def example(self, row: dict) -> dict:
        ex = self.convert(row)
        if len(ex["choices"]) != self.n_choices:
            raise ValueError(f"task {self.name!r}: a row with {len(ex['choices'])} choices, expected {self.n_choices}")
        if ex["label"] is not None and not 0 <= ex["label"] < self.n_choices:
            raise ValueError(f"task {self.name!r}: label {ex['label']} is not a choice index < {self.n_choices}")
        return ex

    def read_file(self, path: Path):
        return keep_labelled(read_records(path, convert=self.example), str(path))

    def from_hub(self, row: dict) -> dict:
        return self.example(row)

    def build_model(self, encoder):
        from transformers import AutoModelForMultipleChoice

        return AutoModelForMultipleChoice.from_pretrained(encoder)

    def encode(self, examples, tokenizer, max_length, id_map=None):
        from xfer.models.vocab import apply_id_map

        k = self.n_choices
        enc = tokenizer([ex["context"] for ex in examples for _ in range(k)],
                        [c for ex in examples for c in ex["choices"]], truncation=True, max_length=max_length)
        ids = apply_id_map(enc["input_ids"], id_map)
        return [{"input_ids": [list(x) for x in ids[i * k:(i + 1) * k]], "labels": ex["label"]}
                for i, ex in enumerate(examples)]

    def collate(self, features, pad_id):
        n = max(len(seq) for f in features for seq in f["input_ids"])
        ids = torch.full((len(features), self.n_choices, n), pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), self.n_choices, n), dtype=torch.long)
        for i, f in enumerate(features):
            for j, seq in enumerate(f["input_ids"]):
                ids[i, j, :len(seq)] = torch.tensor(seq)
                mask[i, j, :len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([f["labels"] for f in features], dtype=torch.long)}

    @torch.inference_mode()
    def evaluate(self, model, examples, tokenizer, max_length, batch_size, id_map=None):
        pred = predict(self, model, self.encode(examples, tokenizer, max_length, id_map), tokenizer, batch_size)
        acc = accuracy([ex["label"] for ex in examples], pred)
        return {"score": acc, "accuracy": acc, "n_examples": len(examples)}


MULTIPLE_CHOICE_TASKS = [
    MultipleChoiceTask(
        name="xcopa", family="multiple_choice", metric="accuracy", splits=("dev", "test"),
        local="xtreme/xcopa/{lang}/{split}.{lang}.jsonl", file_splits=(("dev", "val"),),
        hub_id="cambridgeltl/xcopa", languages_hint=("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"),
        description="XCOPA causal commonsense, COPA translated into 11 languages (no train: train on COPA/SIQA)",
    ),
    MultipleChoiceTask(
        name="copa", family="multiple_choice", metric="accuracy", local="extra/copa_en/{split}-en.jsonl",
        file_splits=(("dev", "val"),), hub_id="aps/super_glue", hub_config="copa", unlabelled=("test",),
        languages_hint=("en",),
        description="English COPA, XCOPA's source (400 train, 100 dev); test labels hidden (all 0 in the file)",
    ),
    MultipleChoiceTask(
        name="siqa", family="multiple_choice", metric="accuracy", n_choices=3, convert=siqa,
        local="extra/siqa/socialIQa_v1.4_{split}.jsonl", file_splits=(("train", "trn"), ("test", "tst")),
        hub_id="allenai/social_i_qa", hub_config="", languages_hint=("en",),
        description="SocialIQa social commonsense (local: dev and test; train on the hub or the release's trn file)",
    ),
    MultipleChoiceTask(
        name="cosmosqa", family="multiple_choice", metric="accuracy", n_choices=4, convert=cosmosqa,
        local="extra/cosmosqa/{split}.csv", file_splits=(("dev", "valid"),), hub_id="allenai/cosmos_qa",
        hub_config="", unlabelled=("test",), languages_hint=("en",),
        description="CosmosQA reading comprehension with commonsense (release CSV layout; local: dev only)",
    ),
    MultipleChoiceTask(
        name="commonsenseqa", family="multiple_choice", metric="accuracy", n_choices=5, convert=commonsenseqa,
        local="extra/commonsenseqa/{split}_rand_split.jsonl", hub_id="tau/commonsense_qa", hub_config="",
        unlabelled=("test",), languages_hint=("en",),
        description="CommonsenseQA, 5 choices (local: dev only)",
    ),
    MultipleChoiceTask(
        name="hellaswag", family="multiple_choice", metric="accuracy", n_choices=4, convert=hellaswag,
        local="extra/hellaswag/hellaswag_{split}.jsonl", file_splits=(("dev", "val"),), hub_id="Rowan/hellaswag",
        hub_config="", unlabelled=("test",), languages_hint=("en",),
        description="HellaSwag sentence completion (release JSON lines; no local copy here)",
    ),
]
