"""Multi-task intermediate training: one shared encoder, a head per task, and micro-batches
drawn from the tasks by a mixing distribution (the paper's multi-task intermediate "task").

A multi-task intermediate is named by joining task names with "+" (`mnli+squad+sst2`); the run
params' optional `mixing` ("proportional", "uniform" or "temperature") and `temperature` choose
the distribution. `train.finetune` builds the pieces with `phase` and runs them through the one
training loop (`loop.train`, with the mixer as its source of micro-batches); afterwards the
shared encoder is saved exactly as a single-task run's is."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from xfer.data import training_set
from xfer.loop import Shuffle
from xfer.tasks import get_task

MIXINGS = ("proportional", "uniform", "temperature")


def task_names(name: str) -> list[str]:
    """The tasks of a "+"-joined name, each checked against the registry."""
    names = name.split("+")
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"multi-task name {name!r}: give distinct task names joined by '+'")
    for n in names:
        get_task(n)  # an unknown name raises, listing the registered tasks
    return names


def mixing_weights(sizes: dict[str, int], mixing: str = "proportional", temperature: float = 2.0) -> dict[str, float]:
    """Sampling probability of each task from its training-set size n_i: p_i ∝ n_i (proportional),
    p_i = 1/K (uniform) or p_i ∝ n_i^(1/T) (temperature; T=1 is proportional, T→∞ uniform)."""
    n = np.array(list(sizes.values()), dtype=float)
    if mixing == "proportional":
        w = n
    elif mixing == "uniform":
        w = np.ones_like(n)
    elif mixing == "temperature":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        w = n ** (1.0 / temperature)
    else:
        raise ValueError(f"mixing {mixing!r}; allowed: {', '.join(MIXINGS)}")
    return dict(zip(sizes, (w / w.sum()).tolist()))


class MultiTaskModel(nn.Module):
    """One Hugging Face model per task, every one pointing at the first one's encoder, so the
    encoder is one set of parameters (`parameters()` yields it once; the state dict lists it under
    each head). `forward(task=..., **batch)` runs that task's model."""

    def __init__(self, models: dict[str, nn.Module]):
        super().__init__()
        encoder = next(iter(models.values())).base_model
        for model in models.values():
            setattr(model, model.base_model_prefix, encoder)
        self.heads = nn.ModuleDict(models)

    @classmethod
    def build(cls, tasks, encoder) -> MultiTaskModel:
        return cls({task.name: task.build_model(encoder) for task in tasks})

    @property
    def base_model(self) -> nn.Module:
        """The shared encoder (what an intermediate run keeps)."""
        return next(iter(self.heads.values())).base_model

    def get_input_embeddings(self):
        return self.base_model.get_input_embeddings()

    def set_input_embeddings(self, embedding):
        self.base_model.set_input_embeddings(embedding)

    def forward(self, task: str, **batch):
        return self.heads[task](**batch)


class TaskMixer:
    """Micro-batch k of a multi-task run, `[(task, feature), ...]`, a pure function of (seed, k)
    so a resumed run sees the batches an uninterrupted one would have.

    Each micro-batch is one task's. Tasks are drawn by `p` in seeded blocks of BLOCK draws, so the
    task of batch k is found without replaying every earlier draw; the j-th batch of a task is
    `Shuffle(n_task, batch_size, seed)(j)`: per-epoch shuffles of that task, as in a single-task run."""

    BLOCK = 4096

    def __init__(self, features: dict[str, list], p: dict[str, float], batch_size: int, seed: int,
                 group_by_length: bool = True):
        self.features, self.names = features, list(features)
        self.shuffles = {name: Shuffle.over(f, batch_size, seed, group_by_length)
                         for name, f in features.items()}
        self.p = np.array([p[name] for name in self.names])
        self.batch_size, self.seed = batch_size, seed
        self.before = [np.zeros(len(self.names), dtype=np.int64)]  # per task: its draws before block b

    def __len__(self) -> int:
        """All tasks' features: one epoch of the training loop."""
        return sum(len(f) for f in self.features.values())

    def __iter__(self):
        """All tasks' features (the embedding rows that train are those they use)."""
        return itertools.chain.from_iterable(self.features.values())

    def draws(self, block: int) -> np.ndarray:
        # [seed, block, 1]: a stream apart from Shuffle's [seed, epoch]
        return np.random.default_rng([self.seed, block, 1]).choice(len(self.names), self.BLOCK, p=self.p)

    def task_of(self, k: int) -> tuple[str, int]:
        """The task of micro-batch k, and how many of that task's micro-batches came before it."""
        block, r = divmod(k, self.BLOCK)
        while len(self.before) <= block:
            done = len(self.before) - 1
            self.before.append(self.before[-1] + np.bincount(self.draws(done), minlength=len(self.names)))
        draws = self.draws(block)
        t = draws[r]
        return self.names[t], int(self.before[block][t] + np.count_nonzero(draws[:r] == t))

    def __call__(self, k: int) -> list[tuple[str, dict]]:
        name, j = self.task_of(k)
        features = self.features[name]
        return [(name, features[i]) for i in self.shuffles[name](j)]


def phase(params: dict, upstream, tokenizer, cfg, id_map=None):
    """What `train.finetune` hands the training loop for a "+"-joined task: (model, mixer,
    collate, select, info). Each task trains on the same seeded `size` subset of its
    `language` training set that a single-task run takes; model selection scores the mean dev
    score of the tasks that have a dev split."""
    tasks = {name: get_task(name) for name in task_names(params["task"])}
    examples = {name: training_set(name, params["language"], params["size"], params["seed"]) for name in tasks}
    features = {name: task.encode(examples[name], tokenizer, cfg.max_length, id_map) for name, task in tasks.items()}
    p = mixing_weights({name: len(ex) for name, ex in examples.items()}, params.get("mixing", "proportional"),
                       params.get("temperature", 2.0))
    torch.manual_seed(params["seed"])  # the fresh heads' initialisation
    model = MultiTaskModel.build(tasks.values(), upstream)
    mixer = TaskMixer(features, p, cfg.batch_size, params["seed"], cfg.group_by_length)

    def collate(pairs):
        name = pairs[0][0]
        return {"task": name, **tasks[name].collate([f for _, f in pairs], tokenizer.pad_token_id)}

    select = None
    if cfg.eval_every:  # the dev split of the training language only, never a target language
        dev = {name: task.load(params["language"], "dev")[: cfg.dev_max_examples]
               for name, task in tasks.items() if "dev" in task.splits}
        if not dev:
            raise ValueError(f"eval_every: none of {', '.join(tasks)} has a dev split; unset eval_every")
        select = lambda m: float(np.mean([  # noqa: E731
            tasks[name].evaluate(m.heads[name], ex, tokenizer, cfg.max_length, 2 * cfg.batch_size, id_map)["score"]
            for name, ex in dev.items()]))
    info = {"n_train": sum(map(len, examples.values())),
            "n_train_per_task": {name: len(ex) for name, ex in examples.items()}, "mixing_p": p}
    return model, mixer, collate, select, info
