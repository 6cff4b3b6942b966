"""Every preset validates and expands without training: the local ones against the files here,
the hub grids (paper, study) against the project's language metadata, as `make plan` shows them."""

import pytest

from xfer.paths import root
from xfer.runner import main, plan

LOCAL = ["smoke", "cpu", "gpu", "demo", "demo_quick", "tasks"]
HUB = ["paper", "study"]


@pytest.mark.parametrize("name", LOCAL)
def test_local_presets_expand(name, data):
    grid, runs = plan(root() / "params" / f"{name}.yaml")
    assert runs["evaluate"], name
    # every target of every grid point is evaluated, and the baseline is there for every seed
    baselines = [r for r in runs["target"] + runs["evaluate"] if r.upstream == runs["pretrained"][0].id]
    assert {r.params.get("seed") for r in baselines if r.phase == "target"} >= set(grid.seeds) or not runs["target"]


@pytest.mark.parametrize("name", HUB)
def test_hub_presets_expand(name, tmp_path, monkeypatch):
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path))  # a data folder without these tasks: the hub
    grid, runs = plan(root() / "params" / f"{name}.yaml")
    n_targets = len(grid.targets)
    trained = [t for t in grid.targets if t.train is not None]
    inter = len(grid.intermediate.tasks) * len(grid.intermediate.languages) * len(grid.seeds)
    nonzero = [s for s in grid.intermediate.sizes if s != 0]
    if grid.intermediate.oversize == "error":
        assert len(runs["intermediate"]) == inter * len(nonzero)
    assert len(runs["target"]) == (len(runs["intermediate"]) + len(grid.seeds)) * len(trained)
    assert len(runs["evaluate"]) == len(runs["target"]) + (len(runs["intermediate"]) + 1) * (n_targets - len(trained))


def test_paper_grid_is_the_papers(tmp_path, monkeypatch):
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path))
    grid, runs = plan(root() / "params" / "paper.yaml")
    tasks = {r.params["task"] for r in runs["intermediate"]}
    assert {"anli", "ccg", "commonsenseqa", "cosmosqa", "hellaswag", "mnli", "qqp", "squad", "sst2"} < tasks
    assert any("+" in t for t in tasks)  # the multi-task mixture
    assert grid.intermediate.train.lr == 1e-5
    assert grid.intermediate.train.batch_size * grid.intermediate.train.grad_accum == 32
    qa = [t for t in grid.targets if t.task in ("xquad", "mlqa", "tydiqa")]
    assert qa and all(t.train.batch_size * t.train.grad_accum == 16 and t.train.max_length == 384 for t in qa)
    assert all(t.train.eval_every for t in grid.targets if t.train)  # early stopping on English dev


def test_dry_run_prints_the_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path))
    assert main(["plan", str(root() / "params" / "study.yaml")]) == 0
    out = capsys.readouterr().out
    assert "intermediate" in out and "GPU hours" in out
