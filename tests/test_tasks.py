"""The contract every task family keeps with the training loop and the runner (xfer/tasks/base.py),
checked once over every family on the real files with a small scratch encoder: encode (an identity
id map changes nothing), collate to padded tensors of one shape, a few steps lower the loss, and
evaluate gives its headline score in 0-100, different from what a constant predictor (the same
model, every output replaced by one value) scores on the same examples. Readers, metrics by hand
and each family's own cases stay in its file (test_classification.py, test_qa.py, ...)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xfer.config import TrainConfig
from xfer.tasks import get_task
from xfer.loop import train

# (task, language, split, learning rate): one or two of every family that trains, 8 examples each;
# a span head learns slower than a label head (at 3e-3 QA's 8 answers are not found after 10 steps)
TRAINED = [("udpos", "en", "dev", 3e-3), ("xnli", "en", "dev", 3e-3), ("sst2", "en", "dev", 3e-3),
           ("xcopa", "et", "dev", 3e-3), ("commonsenseqa", "en", "dev", 3e-3), ("xquad", "en", "test", 1e-2)]
N = 8


def fit(task, model, features, pad_id, lr) -> list[float]:
    """Ten full-batch steps on the head and layers (embeddings frozen, no dropout: fast, deterministic)."""
    model.get_input_embeddings().requires_grad_(False)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    cfg = TrainConfig(lr=lr, batch_size=len(features), max_steps=10, warmup_ratio=0.0, weight_decay=0.0)
    return train(model, features, lambda f: task.collate(f, pad_id), cfg, seed=0, progress=False)["losses"]


class Constant(torch.nn.Module):
    """`model` with every output replaced by ones: every label, choice and span scores alike and
    every sentence gets one vector, so its predictions do not depend on the input."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, **batch):
        out = self.model(**batch)
        return type(out)(**{k: tuple(map(torch.ones_like, v)) if isinstance(v, tuple) else torch.ones_like(v)
                            for k, v in out.items()})


def collated_shapes(task, batch, n: int, examples) -> None:
    """One batch of `n` features: ids and mask of one shape (a row per choice in multiple choice),
    one label (or answer span) per feature."""
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == n
    if task.family == "multiple_choice":
        assert batch["input_ids"].shape[1] == len(examples[0]["choices"]) in (2, 5)  # XCOPA, CommonsenseQA
    assert batch["attention_mask"].sum() > 0 and set(batch["attention_mask"].unique().tolist()) <= {0, 1}
    if task.family == "qa":
        assert batch["start_positions"].shape == batch["end_positions"].shape == (n,)
    elif task.family == "tagging":
        assert batch["labels"].shape == batch["input_ids"].shape
    else:
        assert batch["labels"].shape == (n,)


@pytest.mark.parametrize("name, lang, split, lr", TRAINED, ids=[t[0] for t in TRAINED])
def test_a_trained_family_keeps_the_contract(scratch, name, lang, split, lr):
    folder, tokenizer = scratch
    task = get_task(name)
    examples = task.load(lang, split)[:N]
    features = task.encode(examples, tokenizer, max_length=96)
    assert len(features) >= N  # QA: one or more windows per question
    identity = np.arange(len(tokenizer))  # a trimmed vocabulary keeping every id changes nothing
    assert task.encode(examples, tokenizer, max_length=96, id_map=identity) == features
    collated_shapes(task, task.collate(features, tokenizer.pad_token_id), len(features), examples)
    torch.manual_seed(0)
    model = task.build_model(folder)
    losses = fit(task, model, features, tokenizer.pad_token_id, lr)
    assert losses[-1] < losses[0] - (0.1 if task.family == "qa" else 0), losses  # QA: 4.67 to 1.08 here
    result = task.evaluate(model, examples, tokenizer, max_length=96, batch_size=16)
    constant = task.evaluate(Constant(model), examples, tokenizer, max_length=96, batch_size=16)
    assert result["n_examples"] == constant["n_examples"] == N
    assert 0 <= result["score"] <= 100 and 0 <= constant["score"] <= 100
    assert result["score"] != constant["score"], (result, constant)


def test_the_retrieval_family_keeps_the_contract(scratch):
    """Retrieval trains nothing (its targets score the encoder itself): evaluate only."""
    folder, tokenizer = scratch
    task = get_task("tatoeba")
    examples = task.load("de", "test")[:100]
    model = task.build_model(folder)
    result = task.evaluate(model, examples, tokenizer, 48, 256)
    constant = task.evaluate(Constant(model), examples, tokenizer, 48, 256)
    assert 0 <= result["score"] <= 100 and 0 <= constant["score"] <= 100
    assert result["score"] != constant["score"], (result, constant)
