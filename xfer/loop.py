"""The training loop, one for both training phases (intermediate and target) and for the bench.

One step is `train_step` (bf16 autocast on CUDA, dynamic padding by the task's collate, gradient
accumulation, clipping, fused AdamW where available); `train` repeats it under a linear
warm-up/decay with a resumable training state written atomically every `save_every` steps, so a
kill loses minutes, not runs. `xfer.bench` times the same `train_step`.
It knows no task and reads no data: every task family imports its parts (`autocast`,
`device_of`), and the phase that reads tasks and data (`xfer.train.finetune`) calls it."""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from xfer.config import TrainConfig
from xfer.paths import writing
from xfer.tracking import Curves


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def autocast(model, precision: str = "auto"):
    """bf16 autocast on CUDA by default (same range as fp32, no loss scaling needed); on the CPU
    only when asked (`precision: bf16`): its speed there depends on the CPU's bf16 instructions."""
    dev = device_of(model).type
    if precision == "bf16" or (precision == "auto" and dev == "cuda"):
        return torch.autocast(dev, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads() -> int:
    """Torch threads of this process from XFER_THREADS (the local executor sets it to share the
    cores among parallel runs); unset leaves torch's default. Returns the count in use."""
    value = os.environ.get("XFER_THREADS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"XFER_THREADS={value!r}: give a whole number of threads >= 1 (or unset it)")
        torch.set_num_threads(int(value))
    return torch.get_num_threads()


def check_runner() -> None:
    """Stop a notebook kernel whose grid runner was killed: the kernel runs in a session of its
    own, so it would otherwise train on as an orphan and race the rerun for the same run folder."""
    pid = int(os.environ.get("XFER_RUNNER_PID", 0))
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise SystemExit(f"xfer: the grid runner (pid {pid}) is gone; stopping this run") from None


class Shuffle:
    """Indices of micro-batch k: a fresh seeded shuffle each epoch, a pure function of (seed, k),
    so resuming at step k sees exactly the batches an uninterrupted run would have seen.

    With `lengths`, batches are length-grouped (as Hugging Face's `group_by_length`): the epoch's
    shuffle is cut into groups of GROUP batches, each sorted by length, and the batches are then
    taken in a seeded random order, so a batch pads to similar lengths and the epoch's order
    stays random. GROUP is small (Hugging Face's is 50) so that a small corpus still gets batches
    of new composition each epoch. The epoch's order is kept, so a step costs no re-shuffle."""

    GROUP = 8

    def __init__(self, n: int, batch_size: int, seed: int, lengths=None, full: bool = False):
        self.n, self.batch_size, self.seed, self.full = n, batch_size, seed, full
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.per_epoch = math.ceil(n / batch_size)
        self.epoch, self.order = None, None

    @classmethod
    def over(cls, features: list[dict], batch_size: int, seed: int, group_by_length: bool,
             full: bool = False) -> "Shuffle":
        """The shuffle of `features`, length-grouped by their token counts when asked."""
        return cls(len(features), batch_size, seed, [len(flat_ids(f)) for f in features] if group_by_length else None,
                   full)

    def __call__(self, k: int) -> np.ndarray:
        if self.full:
            return self._stream(k)
        epoch, i = divmod(k, self.per_epoch)
        if epoch != self.epoch:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(self.n)
            if self.lengths is None:
                self.order = (perm, np.arange(self.per_epoch))
            else:
                step = self.batch_size * self.GROUP
                perm = np.concatenate([g[np.argsort(-self.lengths[g], kind="stable")]
                                       for g in np.split(perm, range(step, self.n, step))])
                self.order = (perm, rng.permutation(self.per_epoch))
            self.epoch = epoch
        perm, batches = self.order
        b = batches[i]
        return perm[b * self.batch_size:(b + 1) * self.batch_size]

    def _stream(self, k: int) -> np.ndarray:
        """`full` batches: the epochs' seeded shuffles laid end to end as one stream, cut into
        batches of exactly `batch_size`, so no epoch ends in a short batch and a run of S steps
        sees S × batch_size examples whatever the corpus size (the dose of a fixed-steps design).
        Length grouping sorts each chunk of GROUP batches (at most one corpus long) and takes its
        batches in a seeded order, as in the epoch mode."""
        bs = self.batch_size
        group = max(1, min(self.GROUP, self.n // bs)) if self.lengths is not None else 1
        chunk, i = divmod(k, group)
        if self.epoch != ("chunk", chunk):
            pos = np.arange(chunk * group * bs, (chunk + 1) * group * bs)
            epoch, at = np.divmod(pos, self.n)
            ids = np.empty(len(pos), dtype=np.int64)
            for e in np.unique(epoch):
                ids[epoch == e] = np.random.default_rng([self.seed, e]).permutation(self.n)[at[epoch == e]]
            order = np.arange(group)
            if self.lengths is not None:
                ids = ids[np.argsort(-self.lengths[ids], kind="stable")]
                order = np.random.default_rng([self.seed, chunk, 2]).permutation(group)
            self.epoch, self.order = ("chunk", chunk), (ids, order)
        ids, order = self.order
        b = order[i]
        return ids[b * bs:(b + 1) * bs]


def flat_ids(feature: dict) -> list[int]:
    """A feature's token ids, flattened (one list per choice or window for some tasks)."""
    ids = feature["input_ids"]
    return [i for x in ids for i in x] if ids and isinstance(ids[0], (list, tuple)) else list(ids)


class RowsEmbedding(torch.nn.Module):
    """An embedding of which only `rows` train: the rows a run's training data uses. Its other
    rows stay exactly as they were (no gradient, no optimizer state, no weight decay), so other
    languages' tokens keep their pretrained vectors, and AdamW updates a few thousand rows per
    step instead of the whole vocabulary. Its state dict is the plain embedding's (`weight`, the
    trained rows written in), so training states and model selection see an ordinary model;
    `fold()` hands back the plain embedding with the trained rows."""

    def __init__(self, embedding: torch.nn.Embedding, rows: torch.Tensor):
        super().__init__()
        self.__dict__["plain"] = embedding.requires_grad_(False)  # not a submodule: its weight is ours
        slot = torch.full((embedding.num_embeddings,), -1, dtype=torch.long, device=rows.device)
        slot[rows] = torch.arange(len(rows), device=rows.device)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("slot", slot, persistent=False)
        self.trained = torch.nn.Parameter(embedding.weight[rows].detach().clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        slot = self.slot[ids]
        trained = torch.nn.functional.embedding(slot.clamp(min=0), self.trained)
        return torch.where((slot >= 0).unsqueeze(-1), trained, self.plain(ids))

    def weight(self) -> torch.Tensor:
        """The full matrix with the trained rows in it."""
        return self.plain.weight.detach().index_copy(0, self.rows, self.trained.detach())

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        if prefix + "weight" not in state_dict:
            missing.append(prefix + "weight")
            return
        with torch.no_grad():
            self.plain.weight.copy_(state_dict[prefix + "weight"])
            self.trained.copy_(self.plain.weight[self.rows])

    def fold(self) -> torch.nn.Embedding:
        with torch.no_grad():
            self.plain.weight.copy_(self.weight())
        return self.plain.requires_grad_(True)


def train_rows(model, features) -> RowsEmbedding | None:
    """Swap in a RowsEmbedding for the token ids of `features` (see `TrainConfig.embedding_rows`);
    None when the input embedding does not train (frozen) or is not a plain embedding."""
    emb = model.get_input_embeddings()
    if not isinstance(emb, torch.nn.Embedding) or not emb.weight.requires_grad:
        return None
    rows = torch.tensor(sorted({i for f in features for i in flat_ids(f)}), dtype=torch.long, device=emb.weight.device)
    wrapped = RowsEmbedding(emb, rows)
    model.set_input_embeddings(wrapped)
    return wrapped


def adamw(model, lr: float, weight_decay: float, fused: bool = True, foreach: bool | None = None):
    """AdamW over the trainable parameters, decaying matrices only (not biases or LayerNorm
    gains); `fused`: one kernel for all parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                             lr=lr, fused=fused, foreach=foreach)


def train_step(model, chunks: list[list[dict]], collate, opt, precision: str = "auto", forward=None) -> dict:
    """One optimizer step, the one `train` takes and `xfer.bench` times: each chunk of features (a
    micro-batch) collated onto the model's device and run forward under `autocast`, its loss divided
    by the number of chunks (gradient accumulation) and run backward; then the gradient clipped at
    norm 1 and the optimizer's step. `forward` is what calls the model (the bench's compiled one).
    Returns the step's loss, gradient norm, examples and non-pad tokens (the dose); a loss or norm
    that is not finite raises FloatingPointError before the weights take it (the run diverged)."""
    dev, forward = device_of(model), forward or model
    out = {"loss": 0.0, "examples": 0, "tokens": 0}
    for chunk in chunks:
        batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in collate(chunk).items()}
        out["examples"] += len(chunk)
        out["tokens"] += int(batch["attention_mask"].sum())
        with autocast(model, precision):
            loss = forward(**batch).loss / len(chunks)
        loss.backward()
        out["loss"] += loss.item()
    out["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    if not (math.isfinite(out["loss"]) and math.isfinite(out["grad_norm"])):
        raise FloatingPointError(f"loss {out['loss']}, gradient norm {out['grad_norm']}")
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out


def train(model, features: list[dict], collate, cfg: TrainConfig, seed: int, state_path: Path | None = None,
          progress: bool = True, select=None, batches=None, log_dir: Path | None = None) -> dict:
    """`select(model) -> score` (higher is better), called every `cfg.eval_every` steps, keeps the
    best weights and stops after `cfg.patience` evaluations without improvement.

    `batches(k) -> features` gives the k-th micro-batch (default: `Shuffle`'s seeded, length-grouped
    shuffles of `features`; multi-task training mixes tasks); it must depend on k alone, so a
    resumed run sees the same batches. `features` sets the length of an epoch and, with
    `cfg.embedding_rows == "used"`, the embedding rows that train. `log_dir` gets the per-step
    curves (`xfer.tracking`)."""
    if batches is None:
        shuffle = Shuffle.over(features, cfg.batch_size, seed, cfg.group_by_length, cfg.full_batches)
        batches = lambda k: [features[i] for i in shuffle(k)]  # noqa: E731
    torch.manual_seed(seed)
    dev = device()
    model.to(dev).train()
    rows = train_rows(model, features) if cfg.embedding_rows == "used" else None
    per_epoch = math.ceil(len(features) / (cfg.batch_size * cfg.grad_accum))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    opt = adamw(model, cfg.lr, cfg.weight_decay, fused=dev.type in ("cuda", "cpu"))
    warmup = int(cfg.warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    step, losses = 0, []
    seen = {"examples": 0, "tokens": 0}  # the dose: examples and non-pad subword tokens fed, all micro-batches
    best = {"score": -math.inf, "step": None, "state": None, "stale": 0, "history": []}
    state = load_state(state_path, dev) if state_path is not None else None
    if state is not None:  # resume an interrupted run
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, losses, best = state["step"], state["losses"], state["best"]
        seen = state.get("seen", seen)
        torch.set_rng_state(state["rng"])  # dropout masks continue as if never interrupted
        if dev.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
        print(f"resuming from step {step}/{total}")

    curves = Curves(log_dir, resume_at=step) if log_dir is not None else None
    bar = tqdm(total=total, initial=step, desc="train", disable=not progress, mininterval=2)
    t0 = time.perf_counter()
    samples = 0
    while step < total:
        check_runner()
        t_step, lr = time.perf_counter(), sched.get_last_lr()[0]
        chunks = [batches(step * cfg.grad_accum + micro) for micro in range(cfg.grad_accum)]
        try:
            out = train_step(model, chunks, collate, opt, cfg.precision)
        except FloatingPointError as e:
            raise FloatingPointError(f"training diverged at step {step + 1}/{total}: {e} (lr {cfg.lr}); "
                                     "the run fails") from None
        sched.step()
        loss_sum, norm, n = out["loss"], out["grad_norm"], out["examples"]
        seen["examples"] += out["examples"]
        seen["tokens"] += out["tokens"]
        step += 1
        samples += n
        losses.append(loss_sum)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.3f}")
        dev_score = None
        if select is not None and (step % cfg.eval_every == 0 or step == total):
            dev_score = select(model)
            model.train()
            best["history"].append((step, dev_score))
            if dev_score > best["score"]:
                best.update(score=dev_score, step=step, stale=0,
                            state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            else:
                best["stale"] += 1
        if curves is not None:
            curves.add(step, loss=loss_sum, lr=lr, grad_norm=norm,
                       samples_per_second=n / (time.perf_counter() - t_step), dev_score=dev_score)
        if dev_score is not None and cfg.patience and best["stale"] >= cfg.patience:
            break
        if state_path is not None and (step % cfg.save_every == 0) and step < total:
            if curves is not None:
                curves.flush()  # the curves reach the state's step before the state does
            with writing(state_path.with_suffix(".tmp")) as tmp:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "step": step, "losses": losses, "best": best, "seen": seen, "rng": torch.get_rng_state(),
                            "cuda_rng": torch.cuda.get_rng_state() if dev.type == "cuda" else None}, tmp)
                os.replace(tmp, state_path)
    bar.close()
    if curves is not None:
        curves.close()
    seconds = time.perf_counter() - t0
    if best["state"] is not None and cfg.keep == "best":
        model.load_state_dict(best["state"])
    if rows is not None:
        model.set_input_embeddings(rows.fold())
    return {"steps": step, "examples_seen": seen["examples"], "tokens_seen": seen["tokens"],
            "losses": losses, "train_seconds": seconds,
            "samples_per_second": samples / seconds if seconds > 0 else None,
            "trained_embedding_rows": None if rows is None else len(rows.rows),
            "selected_step": best["step"], "dev_history": best["history"],
            "dev_score": None if best["step"] is None else best["score"]}


def load_state(path: Path, dev) -> dict | None:
    """The saved training state, or None to start from step 0: none saved, or one that cannot be
    read (truncated by a full disk, say), which is removed with a warning instead of failing every rerun."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=dev, weights_only=False)
        missing = {"model", "opt", "sched", "step", "losses", "best", "rng"} - set(state)
        if missing:
            raise KeyError(f"no {', '.join(sorted(missing))}")
        return state
    except Exception as e:  # noqa: BLE001 - whatever is wrong with it, the run restarts
        import sys

        print(f"warning: {path}: unreadable training state ({type(e).__name__}: {str(e)[:200]}); "
              "restarting this run from step 0", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
        return None
