"""Speed figures, as ratios against a baseline measured in the same run: machines are noisy,
so an absolute number means little and speed goals live here, never in timed tests.

mE5-small fine-tuned on UD-POS English (batch 16, length 64; 2 warm-up steps, then 10 timed),
with (a) the full 250k vocabulary, the baseline, (b) the vocabulary trimmed to a study's data,
(c) trimmed + frozen embeddings, (d) trimmed + the first 6 layers; on CUDA also (b) in fp32, so
bf16 autocast / fp32. The configurations take turns step by step, so a change in the machine's
load hits them alike. Also evaluation sentences/s. `estimate_gpu_hours` turns a rate into GPU
hours per phase for a planned grid.

    python -m xfer.bench [--params params/smoke.yaml]     # writes bench/bench-<device>.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import platform
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BATCH, LENGTH, WARMUP, STEPS = 16, 64, 2, 10
LAYERS = 6
EVAL_BATCH, EVAL_LENGTH = 64, 128
# shared/NOTES.md: lent H100, XLM-R Large shape, bf16 + SDPA, batch 32, length 128
DEFAULT_SAMPLES_PER_SECOND = 335.0
# evaluation is a forward pass, about a third of a training step's compute (forward + backward)
EVAL_SPEEDUP = 3.0


# ----------------------------------------------------------------------------- estimates

# Examples per language in the published releases, for planning a hub grid without downloading
# it (training sets: English unless noted; evaluation sets: a typical language). Approximate.
PUBLISHED = {
    ("mnli", "train"): 392_702, ("xnli", "train"): 392_702, ("anli", "train"): 162_865, ("qqp", "train"): 363_846,
    ("sst2", "train"): 67_349, ("squad", "train"): 87_599, ("squad_v2", "train"): 130_319,
    ("ccg", "train"): 38_015, ("commonsenseqa", "train"): 9_741, ("cosmosqa", "train"): 25_262,
    ("hellaswag", "train"): 39_905, ("siqa", "train"): 33_410, ("copa", "train"): 400,
    ("panx", "train"): 20_000, ("udpos", "train"): 12_543, ("pawsx", "train"): 49_401,
    ("tydiqa", "train"): 3_696, ("xnli", "test"): 5_010, ("pawsx", "test"): 2_000, ("udpos", "test"): 1_000,
    ("panx", "test"): 10_000, ("xquad", "test"): 1_190, ("mlqa", "test"): 5_000, ("tydiqa", "dev"): 500,
    ("xcopa", "test"): 500, ("tatoeba", "test"): 1_000, ("bucc", "test"): 10_000,
}


def published_count(task: str, lang: str, split: str) -> int:
    """A corpus size without touching the hub: the local files when they are here, else the
    release's published size (1,000 where none is recorded)."""
    from xfer.tasks import get_task

    t = get_task(task)
    if t.reads_local():
        return len(t.load(lang, split))
    return PUBLISHED.get((task, split), 1_000)


def _train_samples(params: dict, count) -> int:
    """Samples one training run processes: steps × batch × accumulation, the steps from epochs
    when there is no max_steps (a "+"-joined multi-task run takes `size` of each task)."""
    t = params["train"]
    per_step = t["batch_size"] * t.get("grad_accum", 1)
    if t.get("max_steps"):
        return t["max_steps"] * per_step
    size = params["size"] if isinstance(params["size"], int) and params["size"] > 0 else None
    n = sum(size or count(task, params["language"], "train") for task in params["task"].split("+"))
    return max(1, math.ceil(t["epochs"] * math.ceil(n / per_step))) * per_step


def estimate_gpu_hours(runs: dict, samples_per_second: float, count=None,
                       eval_samples_per_second: float | None = None) -> dict[str, float]:
    """GPU hours per phase of planned runs (`xfer.runner.plan(...)[1]`), at a measured training rate.

    count(task, lang, split) gives a corpus size when the params do not (size 'full' or null,
    evaluation files); by default it reads the data. Evaluation runs at `eval_samples_per_second`,
    by default EVAL_SPEEDUP × the training rate. The rate must be for the study's model and shape:
    nothing is rescaled here, and dev scoring for model selection (`eval_every`) is not counted."""
    # every evaluation run of a grid asks for the same files: read each once per estimate
    count = count or functools.cache(published_count)
    eval_rate = eval_samples_per_second or EVAL_SPEEDUP * samples_per_second
    hours = {"pretrained": 0.0}  # a conversion on the CPU, not GPU work
    for phase in ("intermediate", "target"):
        hours[phase] = sum(_train_samples(r.params, count) for r in runs.get(phase, [])) / samples_per_second / 3600
    sentences = 0
    for r in runs.get("evaluate", []):
        p = r.params
        for lang in p["languages"]:
            n = count(p["task"], lang, p["split"])
            sentences += min(n, p["max_examples"]) if p.get("max_examples") else n
    hours["evaluate"] = sentences / eval_rate / 3600
    hours["total"] = sum(hours.values())
    return hours


def gpu_samples_per_second(model=None, folder: Path | None = None) -> tuple[float, str]:
    """The training rate to plan with: the newest CUDA bench JSON in bench/ (its figure for the
    model config's approximations), else the NOTES.md default. Returns (rate, where it came from)."""
    import json

    from xfer.paths import root

    key = "full"
    if model is not None and model.trim_vocab:
        key = "trimmed_6_layers" if model.num_layers else "trimmed_frozen" if model.freeze_embeddings else "trimmed"
    found = sorted((folder or root() / "bench").glob("bench-*.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        bench = json.loads(path.read_text())
        if bench.get("device_type") == "cuda" and key in bench.get("train_samples_per_second", {}):
            return bench["train_samples_per_second"][key], f"{path.name}: {key}, batch {BATCH}, length {LENGTH}"
    return DEFAULT_SAMPLES_PER_SECOND, "NOTES.md default: H100, XLM-R Large, bf16 + SDPA, batch 32, length 128"


def describe_estimate(grid, runs) -> str:
    """One line for `xfer.runner plan`: GPU hours per phase."""
    rate, source = gpu_samples_per_second(grid.model)
    h = estimate_gpu_hours(runs, rate)
    parts = ", ".join(f"{p} {h[p]:.2f}" for p in ("intermediate", "target", "evaluate"))
    return f"  GPU hours (estimate): {h['total']:.2f} ({parts}) at {rate:.0f} training samples/s ({source})"


# ----------------------------------------------------------------------------- measuring

class _Trainer:
    """`xfer.train.train`'s step (AdamW with its groups, autocast, clipping), one step at a time,
    so the configurations take turns and a change in the machine's load hits them all alike."""

    def __init__(self, model, features, pad_id, fp32: bool = False):
        import torch

        from xfer.train import device

        self.dev = device()
        self.model, self.features, self.pad_id, self.fp32 = model.to(self.dev).train(), features, pad_id, fp32
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
                                      {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                                     lr=1e-5, fused=self.dev.type == "cuda")
        self.seconds: list[float] = []

    def step(self) -> None:
        import torch

        from xfer.tasks import get_task
        from xfer.train import autocast, micro_batch

        idx = micro_batch(len(self.features), BATCH, 0, len(self.seconds))
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batch = get_task("udpos").collate([self.features[i] for i in idx], self.pad_id)
        batch = {k: v.to(self.dev) for k, v in batch.items()}
        with contextlib.nullcontext() if self.fp32 else autocast(self.model):
            loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss.item()  # as train() does: waits for the device
        self.seconds.append(time.perf_counter() - t0)

    def samples_per_second(self) -> float:
        """From the median timed step: a burst of other work on the machine moves it little."""
        import statistics

        return BATCH / statistics.median(self.seconds[WARMUP:])


def _load() -> float | None:
    import os

    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _device() -> tuple[str, str]:
    """(type, name) of the device training uses."""
    import os

    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def run(params: str | Path, out_dir: Path) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForTokenClassification

    from xfer.models import e5, load_tokenizer
    from xfer.models.vocab import apply_id_map, load_id_map, trim
    from xfer.runner import data_token_ids, plan
    from xfer.tasks import get_task

    transformers.logging.set_verbosity_error()  # load reports of fresh heads are expected here
    transformers.utils.logging.disable_progress_bar()
    start, load_start = time.perf_counter(), _load()
    task = get_task("udpos")
    dev_type, dev_name = _device()
    full = e5.checkpoint()
    tok = load_tokenizer(full)
    enc = task.encode(task.load("en", "train"), tok, LENGTH)
    features = [f for f in enc if len(f["input_ids"]) == LENGTH][:512]  # every batch exactly 16 × 64
    evals = task.load("en", "test")[: 2048 if dev_type == "cuda" else 256]

    def model_from(folder, **kw):
        return AutoModelForTokenClassification.from_pretrained(folder, num_labels=len(task.labels), **kw)

    def mapped(id_map):
        return [{**f, "input_ids": apply_id_map(f["input_ids"], id_map)} for f in features]

    with tempfile.TemporaryDirectory() as tmp:
        if load_id_map(full) is None:
            _, runs = plan(params)
            ids = data_token_ids(runs["pretrained"][0].params["data"]["files"], tok)
            trimmed = trim(full, Path(tmp) / "trimmed", ids)
        else:  # a checkpoint carried to a GPU machine is already trimmed (xfer.carry)
            trimmed = full
        id_map = load_id_map(trimmed)
        rows = int(id_map.max()) + 1
        notes = {}
        full_model = model_from(full)
        if load_id_map(full) is not None:  # same shapes as the full vocabulary, so the same speed
            full_model.resize_token_embeddings(len(id_map), mean_resizing=False)
            notes["full"] = "carried checkpoint padded with random rows to the full vocabulary"
        frozen = model_from(trimmed)
        frozen.get_input_embeddings().requires_grad_(False)
        trainers = {"full": _Trainer(full_model, mapped(load_id_map(full)), tok.pad_token_id),
                    "trimmed": _Trainer(model_from(trimmed), mapped(id_map), tok.pad_token_id),
                    "trimmed_frozen": _Trainer(frozen, mapped(id_map), tok.pad_token_id),
                    f"trimmed_{LAYERS}_layers": _Trainer(model_from(trimmed, num_hidden_layers=LAYERS), mapped(id_map),
                                                         tok.pad_token_id)}
        if dev_type == "cuda":  # train() autocasts to bf16 on CUDA: the figures above are bf16
            trainers["trimmed_fp32"] = _Trainer(model_from(trimmed), mapped(id_map), tok.pad_token_id, fp32=True)
        order = list(trainers.values())
        for k in range(WARMUP + STEPS):  # round robin, starting one further each round
            for t in order[k % len(order):] + order[:k % len(order)]:
                t.step()
        rates = {name: t.samples_per_second() for name, t in trainers.items()}
        steps = {name: [round(x, 3) for x in t.seconds] for name, t in trainers.items()}

        model = trainers["trimmed"].model
        task.evaluate(model, evals[:EVAL_BATCH], tok, EVAL_LENGTH, EVAL_BATCH, id_map)  # warm-up
        t0 = time.perf_counter()
        task.evaluate(model, evals, tok, EVAL_LENGTH, EVAL_BATCH, id_map)
        eval_rate = len(evals) / (time.perf_counter() - t0)
        attention = model.config._attn_implementation
        del trainers, order, model, full_model, frozen

    ratios = {f"{k}/full": v / rates["full"] for k, v in rates.items() if k not in ("full", "trimmed_fp32")}
    if "trimmed_fp32" in rates:
        ratios["bf16/fp32"] = rates["trimmed"] / rates["trimmed_fp32"]
    result = {
        "device_type": dev_type, "device": dev_name, "torch": torch.__version__,
        "transformers": transformers.__version__, "threads": torch.get_num_threads(), "attention": attention,
        "model": e5.NAME, "shape": {"task": "udpos", "language": "en", "batch": BATCH, "length": LENGTH,
                                    "warmup_steps": WARMUP, "timed_steps": STEPS},
        "vocab_rows": {"full": len(id_map), "trimmed": rows, "trimmed_to": str(params)},
        "train_samples_per_second": rates, "ratios": ratios, "step_seconds": steps,
        "eval_sentences_per_second": eval_rate,
        "eval": {"sentences": len(evals), "batch": EVAL_BATCH, "max_length": EVAL_LENGTH, "split": "test"},
        "notes": notes, "bench_seconds": round(time.perf_counter() - start),
        "load_average": {"start": load_start, "end": _load()},  # other work on the machine skews figures
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    slug = "cpu" if dev_type == "cpu" else re.sub(r"[^a-z0-9]+", "-", dev_name.lower()).strip("-")
    out_dir.mkdir(parents=True, exist_ok=True)
    from xfer.paths import write_json

    write_json(out_dir / f"bench-{slug}.json", result)
    print(table(result))
    print(f"wrote {out_dir / f'bench-{slug}.json'}")
    return result


def table(r: dict) -> str:
    lines = [f"{r['device']} · torch {r['torch']} · {r['threads']} threads · {r['attention']} attention",
             f"{'train (udpos en, 16 × 64)':<34}{'samples/s':>10}{'× full':>9}"]
    for k, v in r["train_samples_per_second"].items():
        ratio = r["ratios"].get(f"{k}/full")
        lines.append(f"  {k:<32}{v:>10.1f}{'' if ratio is None else f'{ratio:>9.2f}'}")
    if "bf16/fp32" in r["ratios"]:
        lines.append(f"  {'bf16 / fp32 (trimmed)':<32}{'':>10}{r['ratios']['bf16/fp32']:>9.2f}")
    lines.append(f"{'evaluate (udpos en test)':<34}{r['eval_sentences_per_second']:>10.1f} sentences/s")
    lines.append(f"vocabulary rows: full {r['vocab_rows']['full']}, trimmed {r['vocab_rows']['trimmed']}")
    lines.append(f"load average {r['load_average']['start']} -> {r['load_average']['end']}; {r['bench_seconds']} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    from xfer.paths import root

    ap = argparse.ArgumentParser(prog="python -m xfer.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(root() / "params" / "smoke.yaml"),
                    help="the study whose data the vocabulary is trimmed to")
    ap.add_argument("--out", default=str(root() / "bench"))
    args = ap.parse_args(argv)
    run(args.params, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
