"""The training phase (intermediate and target): the upstream encoder under a task's fresh
head, trained on its data through the one loop (`xfer.loop.train`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from xfer import multitask
from xfer.config import TrainConfig
from xfer.data import dev_task, training_set  # noqa: F401 - dev_task: its callers import it from here too
from xfer.loop import set_threads, train
from xfer.models import load_tokenizer, save_checkpoint
from xfer.models.vocab import load_id_map
from xfer.paths import replace_dir, to_runs, writing
from xfer.record import write_metrics
from xfer.tasks import get_task


def finetune(params: dict, upstream: str | Path, run_dir: str | Path, keep_head: bool, progress: bool = True) -> dict:
    """One training phase: the upstream encoder under a fresh head for `params['task']`,
    trained on a seeded subset of its `params['language']` training set.

    The intermediate phase keeps only the encoder (the next phase puts a fresh head on it);
    the target phase keeps the head too, since evaluation needs it. A "+"-joined task
    (`mnli+sst2`) is a multi-task intermediate: a head per task on one shared encoder, each
    micro-batch one task's, drawn by `params['mixing']` (see `xfer.multitask`)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    set_threads()
    cfg = TrainConfig(**params["train"])
    tokenizer = load_tokenizer(upstream)
    id_map = load_id_map(Path(upstream)) if Path(upstream).is_dir() else None
    if "+" in params["task"]:  # a multi-task intermediate
        if keep_head:
            raise ValueError(f"task {params['task']!r}: multi-task training is an intermediate phase only")
        model, mixer, collate, select, info = multitask.phase(params, upstream, tokenizer, cfg, id_map)
        features = batches = mixer  # an epoch is len(mixer) features; micro-batch k is mixer(k)
    else:
        task = get_task(params["task"])
        examples = training_set(task.name, params["language"], params["size"], params["seed"])
        features = task.encode(examples, tokenizer, cfg.max_length, id_map)
        collate = lambda f: task.collate(f, tokenizer.pad_token_id)  # noqa: E731
        batches, info = None, {"n_train": len(examples)}  # batches: Shuffle's seeded shuffles

        torch.manual_seed(params["seed"])  # the fresh head's initialisation
        model = task.build_model(upstream)
        select = None
        if cfg.eval_every:  # a dev split in the training language only, never a target language
            judge = dev_task(params)
            dev = judge.load(params["language"], "dev")[: cfg.dev_max_examples]
            select = lambda m: judge.evaluate(m, dev, tokenizer, cfg.max_length, 2 * cfg.batch_size, id_map)["score"]
    if params.get("freeze_embeddings"):
        model.get_input_embeddings().requires_grad_(False)
    stats = train(model, features, collate, cfg, params["seed"], state_path=run_dir / "train_state.pt",
                  progress=progress, select=select, batches=batches, log_dir=run_dir)

    tmp = run_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if not keep_head:  # an encoder only: forget the head's label set, the next phase brings its own
        model.base_model.config.num_labels = 2
        model.base_model.config.problem_type = None
    with writing(tmp):
        save_checkpoint(model if keep_head else model.base_model, tokenizer, tmp, source=upstream)
    replace_dir(tmp, run_dir / "checkpoint")
    metrics = {**info, **stats, "checkpoint": to_runs(run_dir / "checkpoint")}
    # last, with the checkpoint's sha256: its presence marks the run done; only then is the
    # training state dropped, so a kill in between finds a finished run, not one to retrain
    metrics = write_metrics(run_dir, metrics, artefacts=("checkpoint",))
    (run_dir / "train_state.pt").unlink(missing_ok=True)
    return metrics
