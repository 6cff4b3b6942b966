"""The GPU-hour arithmetic of `xfer.bench` (no timing here: speed lives in `make bench`)."""

from __future__ import annotations

import json
import textwrap

import pytest

from xfer.bench import DEFAULT_SAMPLES_PER_SECOND, EVAL_SPEEDUP, estimate_gpu_hours, gpu_samples_per_second
from xfer.config import expand, load_grid

GRID = """
name: estimate
seeds: [1, 2]
model: {source: e5, name: multilingual-e5-small, trim_vocab: true}
intermediate:
  task: panx
  languages: [sw, en]
  sizes: [0, 100, full]
  train: {batch_size: 32, epochs: 2}
target:
  task: udpos
  language: en
  size: 2000
  train: {batch_size: 16, grad_accum: 2, epochs: 2}
evaluate: {languages: [en, de], max_examples: 200}
"""
CORPUS = {("panx", "sw", "train"): 1000, ("panx", "en", "train"): 20000,
          ("udpos", "en", "test"): 500, ("udpos", "de", "test"): 150}


@pytest.fixture
def runs(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(GRID))
    return expand(load_grid(path))


def count(task, lang, split):
    return CORPUS[task, lang, split]


def test_hours_per_phase(runs):
    h = estimate_gpu_hours(runs, 100.0, count)
    # per seed: size 100 -> 2 epochs × 4 steps × 32; full sw -> 2 × 32 × 32; full en -> 2 × 625 × 32
    inter = 2 * (2 * 4 * 32 + 2 * 32 * 32 + 2 * 4 * 32 + 2 * 625 * 32)
    # 5 target runs per seed (the baseline and one per intermediate run), 2 epochs × 63 steps × 32
    target = 2 * 5 * (2 * 63 * 32)
    evaluate = 2 * 5 * (200 + 150)  # max_examples caps en, de has fewer
    assert len(runs["intermediate"]) == 8 and len(runs["target"]) == len(runs["evaluate"]) == 10
    assert h["intermediate"] == pytest.approx(inter / 100 / 3600)
    assert h["target"] == pytest.approx(target / 100 / 3600)
    assert h["evaluate"] == pytest.approx(evaluate / (EVAL_SPEEDUP * 100) / 3600)
    assert h["pretrained"] == 0 and h["total"] == pytest.approx(h["intermediate"] + h["target"] + h["evaluate"])
    assert estimate_gpu_hours(runs, 100.0, count, eval_samples_per_second=50)["evaluate"] == pytest.approx(evaluate / 50 / 3600)


def test_max_steps_ignores_corpus_size(runs):
    for r in runs["intermediate"]:
        r.params["train"] = {**r.params["train"], "epochs": None, "max_steps": 10}
    h = estimate_gpu_hours({"intermediate": runs["intermediate"]}, 320.0, count)
    assert h["intermediate"] == pytest.approx(8 * 10 * 32 / 320 / 3600)
    assert h["target"] == h["evaluate"] == 0


def test_rate_from_a_cuda_bench_file_else_the_notes_default(tmp_path, runs):
    grid = load_grid(tmp_path / "grid.yaml")
    assert gpu_samples_per_second(grid.model, tmp_path)[0] == DEFAULT_SAMPLES_PER_SECOND
    (tmp_path / "bench-cpu.json").write_text(json.dumps({"device_type": "cpu", "train_samples_per_second": {"trimmed": 9.0}}))
    assert gpu_samples_per_second(grid.model, tmp_path)[0] == DEFAULT_SAMPLES_PER_SECOND  # CPU speed is no GPU hour
    (tmp_path / "bench-nvidia-h200.json").write_text(json.dumps(
        {"device_type": "cuda", "train_samples_per_second": {"xtreme_style": 300.0, "xfer": 1200.0}}))
    rate, source = gpu_samples_per_second(grid.model, tmp_path)
    assert rate == 1200.0 and "bench-nvidia-h200.json" in source


def test_multi_task_full_counts_every_task(runs):
    run = runs["intermediate"][0].model_copy(deep=True)
    run.params.update(task="panx+udpos", language="en", size="full")
    corpus = {("panx", "en", "train"): 300, ("udpos", "en", "train"): 340}
    h = estimate_gpu_hours({"intermediate": [run]}, 1.0, lambda t, l, s: corpus[t, l, s])
    assert h["intermediate"] * 3600 == pytest.approx(2 * 20 * 32)  # 2 epochs × ceil(640 / 32) steps × 32


def test_every_loop_of_the_bench_steps_on_the_cpu(tmp_path, data):
    """Each configuration the bench compares (the CUDA ones too, but torch.compile, which needs a
    GPU-sized budget to be worth timing) takes real steps on real UD-POS batches here; the
    xtreme-style loop pads every batch to MAX_LENGTH while xfer's pads to the batch's longest."""
    import torch

    from xfer.bench import CPU_LOOPS, CUDA_LOOPS, MAX_LENGTH, WARMUP, Loop, flops_per_token, interleave, pad_to
    from xfer.config import ModelConfig
    from xfer.data import training_set
    from xfer.models import build_scratch, load_tokenizer
    from xfer.tasks import get_task

    ckpt = build_scratch(ModelConfig(source="scratch", name="t", scratch={"hidden_size": 32, "num_layers": 1,
                                                                          "num_heads": 2, "intermediate_size": 64}),
                         tmp_path / "m")
    task, tok = get_task("udpos"), load_tokenizer(ckpt)
    feats = task.encode(training_set("udpos", "en", 64, seed=0), tok, MAX_LENGTH)
    batch = pad_to(task.collate(feats[:4], tok.pad_token_id), MAX_LENGTH, tok.pad_token_id)
    assert batch["input_ids"].shape[1] == batch["labels"].shape[1] == MAX_LENGTH
    assert (batch["labels"][:, -1] == -100).all() and batch["attention_mask"].sum() == sum(len(f["input_ids"]) for f in feats[:4])
    knobs = {**{f"cpu {k}": v for k, v in CPU_LOOPS.items()},
             **{f"cuda {k}": v for k, v in CUDA_LOOPS.items() if not v.get("compile")}}
    loops = {}
    for name, k in knobs.items():
        torch.manual_seed(0)
        model = task.build_model(ckpt)
        loops[name] = Loop(model, feats, tok.pad_token_id, 8, **k)
    rates = interleave(loops, steps=2)
    assert all(r["samples_per_second"] > 0 and r["tokens_per_second"] > 0 for r in rates.values())
    assert all(len(loop.seconds) == WARMUP + 2 for loop in loops.values())
    # xfer's loop trains only the data's embedding rows, the baseline all of them
    assert type(loops["cpu xfer"].model.get_input_embeddings()).__name__ == "RowsEmbedding"
    assert type(loops["cpu xtreme_style"].model.get_input_embeddings()) is torch.nn.Embedding
    assert flops_per_token(loops["cpu xfer"].model.config, 128) == 6 * (4 * 32 * 32 + 2 * 32 * 64) + 12 * 32 * 128
