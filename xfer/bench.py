"""Speed figures, as ratios against a baseline measured in the same run: machines are noisy,
so an absolute number means little and speed goals live here, never in timed tests.

Training loops on UD-POS English at the data's own lengths (up to 128), taking turns step by step
so a change in the machine's load hits them alike: the xtreme-style recipe (fp32, pad to 128, full
vocabulary, plain AdamW) against xfer's loop, with each of its parts added in turn (CPU_LOOPS:
mE5-small's first 4 layers, as params/cpu.yaml) or, on CUDA, an XLM-R Large-shaped encoder with
random weights (CUDA_LOOPS: bf16, SDPA, dynamic padding, length grouping, fused AdamW, and
torch.compile over bucketed shapes), with model TFLOP/s and MFU. On the CPU also the machine's
throughput as one run on every core against one single-threaded run per core (`xfer run -j`).
Also evaluation sentences/s. `estimate_gpu_hours` turns a rate into GPU hours for a planned grid.

    python -m xfer.bench [--params params/smoke.yaml]     # writes bench/bench-<device>.json

One concern, the speed figures `make bench` and `make gpu-check` write, and the GPU-hour estimate
`make plan` derives from them.
"""

from __future__ import annotations

import argparse
import functools
import math
import platform
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

CPU_BATCH, CUDA_BATCH, MAX_LENGTH, WARMUP, STEPS = 16, 32, 128, 3, 12
CPU_LAYERS = 4  # params/cpu.yaml's encoder
EVAL_BATCH = 64
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
    """GPU hours per phase of planned runs (`xfer.grid.plan.plan(...).runs`), at a measured training rate.

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
    """The training rate to plan with: xfer's loop in the newest CUDA bench JSON in bench/, else
    the NOTES.md default. Returns (rate, where it came from). `model` is for a future per-shape
    figure; the bench measures XLM-R Large's shape."""
    import json

    from xfer.paths import root

    found = sorted((folder or root() / "bench").glob("bench-*.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        bench = json.loads(path.read_text())
        if bench.get("device_type") == "cuda" and "xfer" in bench.get("train_samples_per_second", {}):
            shape = bench.get("shape", {})
            return (bench["train_samples_per_second"]["xfer"],
                    f"{path.name}: {bench.get('device', 'cuda')}, xfer loop, batch {shape.get('batch')}, "
                    f"up to {shape.get('max_length')} tokens")
    return DEFAULT_SAMPLES_PER_SECOND, "NOTES.md default: H100, XLM-R Large, bf16 + SDPA, batch 32, length 128"


def describe_estimate(grid, runs) -> str:
    """One line for `xfer.runner plan`: GPU hours per phase."""
    rate, source = gpu_samples_per_second(grid.model)
    h = estimate_gpu_hours(runs, rate)
    parts = ", ".join(f"{p} {h[p]:.2f}" for p in ("intermediate", "target", "evaluate"))
    return f"  GPU hours (estimate): {h['total']:.2f} ({parts}) at {rate:.0f} training samples/s ({source})"


# ----------------------------------------------------------------------------- measuring

# The training loops compared, as knobs of one step. "xtreme_style" is the reference recipe (fp32,
# pad to max length, full vocabulary, plain AdamW, eager attention); "before" is xfer's loop until
# the hot-loop change; "xfer" is `xfer.loop.train` with its defaults.
CPU_LOOPS = {
    "xtreme_style": dict(vocab="full", pad_to=MAX_LENGTH, group=False, rows="all", fused=False, precision="fp32"),
    "before": dict(vocab="trimmed", pad_to=None, group=False, rows="all", fused=False, precision="fp32"),
    "grouped_rows": dict(vocab="trimmed", pad_to=None, group=True, rows="used", fused=False, precision="fp32"),
    "xfer": dict(vocab="trimmed", pad_to=None, group=True, rows="used", fused=True, precision="fp32"),
    "xfer_bf16": dict(vocab="trimmed", pad_to=None, group=True, rows="used", fused=True, precision="bf16"),
}
CUDA_LOOPS = {
    "xtreme_style": dict(vocab="full", pad_to=MAX_LENGTH, group=False, rows="all", fused=False, precision="fp32",
                         attention="eager"),
    "xfer": dict(vocab="full", pad_to=None, group=True, rows="used", fused=True, precision="auto", attention="sdpa"),
    # torch.compile wants few shapes: lengths padded up to a multiple of 32 (4 buckets up to 128)
    "xfer_compile": dict(vocab="full", pad_to=32, group=True, rows="used", fused=True, precision="auto",
                         attention="sdpa", compile=True),
}
# XLM-R Large's shape (random weights: no hub needed) for the CUDA bench
XLMR_LARGE = dict(vocab_size=250_002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
# dense bf16 peak FLOP/s, for MFU (vendor figures, without sparsity)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "B200": 2250e12}


def pad_to(batch: dict, multiple: int | None, pad_id: int) -> dict:
    """Pad the sequence dimension up to a multiple of `multiple` (pad ids, mask 0, label -100)."""
    if not multiple:
        return batch
    import torch.nn.functional as F

    n = batch["input_ids"].shape[-1]
    extra = -n % multiple
    fill = {"input_ids": pad_id, "labels": -100}
    return {k: F.pad(v, (0, extra), value=fill.get(k, 0)) if v.ndim >= 2 and v.shape[-1] == n else v
            for k, v in batch.items()}


class Loop:
    """One training loop: its knobs (vocabulary, padding, length grouping, trained rows, fused AdamW,
    precision, compile) around the very step that trains (`xfer.loop.train_step`), taken one step
    at a time, so the loops take turns and a change in the machine's load hits them all alike."""

    def __init__(self, model, features, pad_id, batch_size, vocab="trimmed", pad_to=None, group=True,
                 rows="used", fused=True, precision="auto", compile=False, **_):
        import torch

        from xfer.loop import Shuffle, adamw, train_rows

        self.dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.dev).train()
        self.features, self.pad_id, self.pad, self.precision = features, pad_id, pad_to, precision
        self.shuffle = Shuffle.over(features, batch_size, 0, group)
        if rows == "used":
            train_rows(self.model, features)
        self.opt = adamw(self.model, 1e-5, 0.01, fused=fused, foreach=None if fused else True)
        self.forward = torch.compile(self.model) if compile else self.model
        self.seconds, self.samples, self.tokens = [], 0, 0

    def step(self) -> None:
        import torch

        from xfer.loop import train_step

        chunk = [self.features[i] for i in self.shuffle(len(self.seconds))]
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = train_step(self.model, [chunk], self.collate, self.opt, self.precision, self.forward)
        if self.dev.type == "cuda":
            torch.cuda.synchronize()  # the optimizer's step too, which train() waits for at its next loss
        self.seconds.append(time.perf_counter() - t0)
        if len(self.seconds) > WARMUP:
            self.samples += out["examples"]
            self.tokens += out["tokens"]  # real tokens, not padding

    def collate(self, chunk: list[dict]) -> dict:
        from xfer.tasks import get_task

        return pad_to(get_task("udpos").collate(chunk, self.pad_id), self.pad, self.pad_id)

    def rates(self) -> dict:
        """Samples/s and real tokens/s over the timed steps (after WARMUP)."""
        t = sum(self.seconds[WARMUP:])
        return {"samples_per_second": self.samples / t, "tokens_per_second": self.tokens / t}


def interleave(loops: dict, steps: int) -> dict:
    """Round robin, starting one further each round, WARMUP + `steps` steps each."""
    order = list(loops.values())
    for k in range(WARMUP + steps):
        for loop in order[k % len(order):] + order[:k % len(order)]:
            loop.step()
    return {name: loop.rates() for name, loop in loops.items()}


def flops_per_token(config, seq: int) -> float:
    """Training FLOPs per token: 6 × the non-embedding parameters (forward + backward) plus the
    attention scores and values, 12 × layers × hidden × sequence length (Kaplan et al., PaLM's MFU)."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * h * h + 2 * h * inter
    return 6 * layers * per_layer + 12 * layers * h * seq


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k.lower() in name.lower()), None)


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


def _parallel_worker(args) -> float:
    """One process of the threads measurement: `xfer` loop steps at `threads` torch threads; its samples/s."""
    threads, folder, layers, pad_id, features, steps = args
    import torch
    from transformers import AutoModelForTokenClassification

    from xfer.tasks import get_task

    torch.set_num_threads(threads)
    model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=len(get_task("udpos").labels),
                                                            num_hidden_layers=layers)
    loop = Loop(model, features, pad_id, CPU_BATCH, **CPU_LOOPS["xfer"])
    for _ in range(WARMUP + steps):
        loop.step()
    return loop.rates()["samples_per_second"]


def threads_measurement(folder: Path, layers: int, pad_id: int, features: list, steps: int) -> dict:
    """Throughput of the whole machine: one run with every core's thread, against as many runs in
    parallel as cores with one thread each (how `xfer run -j` would share them). Twice, in turns."""
    import multiprocessing as mp
    import os

    cores = os.cpu_count() or 1
    ctx, args = mp.get_context("spawn"), (folder, layers, pad_id, features, steps)
    out = {"one_run_all_threads": [], "parallel_runs_one_thread": []}
    for _ in range(2):
        with ctx.Pool(1) as pool:
            out["one_run_all_threads"].append(pool.map(_parallel_worker, [(cores, *args)])[0])
        with ctx.Pool(cores) as pool:
            out["parallel_runs_one_thread"].append(sum(pool.map(_parallel_worker, [(1, *args)] * cores)))
    best = {k: max(v) for k, v in out.items()}
    return {"cores": cores, "samples_per_second": best, "runs": out,
            "ratio_parallel/one": best["parallel_runs_one_thread"] / best["one_run_all_threads"]}


def kernel_start_measurement(rounds: int = 3) -> dict:
    """Seconds to run a notebook that imports what a phase notebook imports (xfer's training and
    evaluation, torch, transformers), in a fresh kernel against one forked warm (`xfer.kernel`),
    in turns, after one warm run that starts the fork server: the per-run overhead `-j` workers save."""
    import nbformat
    import papermill as pm

    from xfer import kernel

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from xfer import evaluate, runner, train\n"
                                          "from transformers import AutoModelForTokenClassification")]
    times = {"fresh": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        nbformat.write(nb, Path(tmp) / "in.ipynb")

        def once(manager=None) -> float:
            t0 = time.perf_counter()
            pm.execute_notebook(str(Path(tmp) / "in.ipynb"), str(Path(tmp) / "out.ipynb"), kernel_name="python3",
                                progress_bar=False, **({"kernel_manager_class": manager} if manager else {}))
            return time.perf_counter() - t0

        once(kernel.WarmKernelManager)
        for _ in range(rounds):
            times["fresh"].append(once())
            times["warm"].append(once(kernel.WarmKernelManager))
    best = {k: min(v) for k, v in times.items()}
    return {"seconds": best, "runs": times, "ratio_fresh/warm": best["fresh"] / best["warm"]}


def run(params: str | Path, out_dir: Path, steps: int = STEPS, quick: bool = False) -> dict:
    """The bench: on the CPU, the cpu preset's encoder (mE5-small, its first 4 layers, vocabulary
    trimmed to the study's data) on UD-POS English at batch CPU_BATCH; on CUDA, an XLM-R
    Large-shaped encoder with random weights at batch CUDA_BATCH. Lengths are the data's own, cut at
    MAX_LENGTH. `quick` (tests): a 1-layer model, few steps, no threads measurement."""
    import torch
    import transformers
    from transformers import AutoModelForTokenClassification, XLMRobertaConfig

    from xfer.data import data_token_ids
    from xfer.grid.plan import plan
    from xfer.models import e5, load_tokenizer
    from xfer.models.vocab import apply_id_map, load_id_map, trim
    from xfer.tasks import get_task

    transformers.logging.set_verbosity_error()  # load reports of fresh heads are expected here
    transformers.utils.logging.disable_progress_bar()
    start, load_start = time.perf_counter(), _load()
    task = get_task("udpos")
    dev_type, dev_name = _device()
    full = e5.checkpoint()
    tok = load_tokenizer(full)
    features = task.encode(task.load("en", "train")[:2048], tok, MAX_LENGTH)
    evals = task.load("en", "test")[: 2048 if dev_type == "cuda" else 256]
    layers = 1 if quick else CPU_LAYERS
    notes = {}
    with tempfile.TemporaryDirectory() as tmp:
        if dev_type == "cuda":
            batch, loops = CUDA_BATCH, CUDA_LOOPS
            config = XLMRobertaConfig(**XLMR_LARGE, num_labels=len(task.labels))

            def model_for(knobs):
                torch.manual_seed(0)
                return AutoModelForTokenClassification.from_config(config, attn_implementation=knobs["attention"])

            feats = {name: features for name in loops}
            seq = MAX_LENGTH
        else:
            batch, loops = CPU_BATCH, CPU_LOOPS
            if load_id_map(full) is None:
                trimmed = trim(full, Path(tmp) / "trimmed", data_token_ids(plan(params).data["files"], tok), tok)
            else:  # a carried checkpoint is already trimmed (xfer.carry): both loops get its rows
                trimmed = full
                notes["full"] = "carried checkpoint: already trimmed, so 'full' is the trimmed vocabulary"
            folders = {"full": full, "trimmed": trimmed}

            def model_for(knobs):
                torch.manual_seed(0)
                return AutoModelForTokenClassification.from_pretrained(
                    folders[knobs["vocab"]], num_labels=len(task.labels), num_hidden_layers=layers)

            def mapped(folder):
                id_map = load_id_map(folder)
                return features if id_map is None else [{**f, "input_ids": apply_id_map(f["input_ids"], id_map)}
                                                        for f in features]

            feats = {name: mapped(folders[k["vocab"]]) for name, k in loops.items()}
        built = {name: Loop(model_for(k), feats[name], tok.pad_token_id, batch, **k) for name, k in loops.items()}
        config = built["xfer"].model.config
        rates = interleave(built, steps)
        attention = config._attn_implementation
        model = built["xfer"].model.eval()
        eval_map = load_id_map(folders["trimmed"]) if dev_type == "cpu" else None
        task.evaluate(model, evals[:EVAL_BATCH], tok, MAX_LENGTH, EVAL_BATCH, eval_map)  # warm-up
        t0 = time.perf_counter()
        task.evaluate(model, evals, tok, MAX_LENGTH, EVAL_BATCH, eval_map)
        eval_rate = len(evals) / (time.perf_counter() - t0)
        del built, model
        threads = kernels = None
        if dev_type == "cpu" and not quick:  # warm kernels are a CPU machine's (xfer.grid.local.run_grid)
            kernels = kernel_start_measurement()
            # the same model folder the workers load: layers cut by from_pretrained there too
            threads = threads_measurement(folders["trimmed"], layers, tok.pad_token_id, feats["xfer"], steps)

    per_token = flops_per_token(config, seq if dev_type == "cuda" else MAX_LENGTH)
    peak = peak_flops(dev_name) if dev_type == "cuda" else None
    samples = {k: v["samples_per_second"] for k, v in rates.items()}
    result = {
        "device_type": dev_type, "device": dev_name, "torch": torch.__version__,
        "transformers": transformers.__version__, "threads": torch.get_num_threads(), "attention": attention,
        "model": "XLM-R Large shape, random weights" if dev_type == "cuda" else f"{e5.NAME}, first {layers} layers",
        "shape": {"task": "udpos", "language": "en", "batch": batch, "max_length": MAX_LENGTH,
                  "warmup_steps": WARMUP, "timed_steps": steps, "lengths": "the data's own (dynamic) unless pad_to"},
        "loops": loops, "train_samples_per_second": samples,
        "train_tokens_per_second": {k: v["tokens_per_second"] for k, v in rates.items()},
        "ratios": {f"{k}/xtreme_style": v / samples["xtreme_style"] for k, v in samples.items()}
        | {f"{k}/before": v / samples["before"] for k, v in samples.items() if "before" in samples},
        "model_tflops_per_second": {k: v["tokens_per_second"] * per_token / 1e12 for k, v in rates.items()},
        "mfu": None if peak is None else {k: v["tokens_per_second"] * per_token / peak for k, v in rates.items()},
        "peak_bf16_flops": peak, "eval_sentences_per_second": eval_rate,
        "eval": {"sentences": len(evals), "batch": EVAL_BATCH, "max_length": MAX_LENGTH, "split": "test"},
        "threads_measurement": threads, "kernel_start": kernels, "notes": notes, "bench_seconds": round(time.perf_counter() - start),
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
    base = "before" if "before" in r["train_samples_per_second"] else "xtreme_style"
    lines = [f"{r['device']} · torch {r['torch']} · {r['threads']} threads · {r['model']}",
             f"{'train (udpos en, batch ' + str(r['shape']['batch']) + ')':<30}{'samples/s':>10}{'× xtreme':>10}"
             f"{'× ' + base:>10}{'TFLOP/s':>9}{'MFU':>7}"]
    for k, v in r["train_samples_per_second"].items():
        mfu = r["mfu"][k] if r["mfu"] else None
        lines.append(f"  {k:<28}{v:>10.1f}{r['ratios'][f'{k}/xtreme_style']:>10.2f}{r['ratios'][f'{k}/{base}']:>10.2f}"
                     f"{r['model_tflops_per_second'][k]:>9.2f}{'' if mfu is None else f'{mfu:>7.1%}'}")
    lines.append(f"{'evaluate (udpos en test)':<30}{r['eval_sentences_per_second']:>10.1f} sentences/s")
    t = r.get("threads_measurement")
    if t:
        lines.append(f"{t['cores']} runs × 1 thread vs 1 run × {t['cores']} threads: "
                     f"{t['samples_per_second']['parallel_runs_one_thread']:.1f} vs "
                     f"{t['samples_per_second']['one_run_all_threads']:.1f} samples/s (× {t['ratio_parallel/one']:.2f})")
    k = r.get("kernel_start")
    if k:
        lines.append(f"a phase notebook's imports, fresh kernel vs warm fork: {k['seconds']['fresh']:.1f} vs "
                     f"{k['seconds']['warm']:.1f} s (× {k['ratio_fresh/warm']:.2f})")
    lines.append(f"load average {r['load_average']['start']} -> {r['load_average']['end']}; {r['bench_seconds']} s")
    return "\n".join(lines)


def gpu_check(out_dir: Path, params: Path, budget_s: float = 600) -> dict:
    """`make gpu-check`, for the first GPU at hand: the CUDA bench, then the given preset's first seed
    (`xfer run --set seeds=[first]`) for what is left of `budget_s`; one JSON of figures,
    `bench/gpu-check.json`, says how far the grid got and at what speed."""
    import os
    import subprocess
    import sys

    import torch

    from xfer.paths import root, write_json
    from xfer.grid.execute import is_done
    from xfer.grid.plan import plan

    if not torch.cuda.is_available():
        raise SystemExit("gpu-check: no CUDA device here; `make bench` measures this machine's CPU")
    t0 = time.perf_counter()
    bench = run(params, out_dir)
    grid = plan(params).grid
    seed = [f"seeds=[{grid.seeds[0]}]"]
    left = max(60.0, budget_s - (time.perf_counter() - t0))
    t1 = time.perf_counter()
    try:
        rc = subprocess.run([sys.executable, "-m", "xfer.runner", "run", str(params), "--set", seed[0]], cwd=root(),
                            timeout=left, env={**os.environ, "XFER_JOBS": "1"}).returncode
    except subprocess.TimeoutExpired:
        rc = "timed out"
    runs = plan(params, seed).runs  # after the grid ran: which runs it finished
    done = {phase: [sum(is_done(r) for r in rs), len(rs)] for phase, rs in runs.items()}
    result = {"device": bench["device"], "bench": {k: bench[k] for k in ("train_samples_per_second", "ratios", "mfu",
                                                                         "model_tflops_per_second")},
              "grid": {"params": str(params), "seed": grid.seeds[0], "seconds": round(time.perf_counter() - t1),
                       "exit": rc, "done_of_total": done,
                       "finished": all(d == n for d, n in done.values())},
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(out_dir / "gpu-check.json", result)
    print(f"wrote {out_dir / 'gpu-check.json'}: xfer/xtreme-style × {bench['ratios']['xfer/xtreme_style']:.2f}, "
          f"grid {'finished' if result['grid']['finished'] else 'not finished'} in {result['grid']['seconds']} s")
    return result


def main(argv=None) -> int:
    from xfer.paths import root

    ap = argparse.ArgumentParser(prog="python -m xfer.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(root() / "params" / "smoke.yaml"),
                    help="the study whose data the vocabulary is trimmed to")
    ap.add_argument("--out", default=str(root() / "bench"))
    ap.add_argument("--steps", type=int, default=STEPS, help="timed steps per loop (after %d warm-up steps)" % WARMUP)
    ap.add_argument("--gpu-check", action="store_true",
                    help="on a GPU: the bench, then --params' first seed within --budget seconds in all; one JSON")
    ap.add_argument("--budget", type=float, default=600)
    args = ap.parse_args(argv)
    if args.gpu_check:
        gpu_check(Path(args.out), Path(args.params), args.budget)
    else:
        run(args.params, Path(args.out), args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
