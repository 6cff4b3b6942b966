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


# The data as a reproducer of the paper has it: every task from the hub but BUCC, whose hub copy lacks
# the unpaired sentences, so its release files sit alone in the data folder. The BUCC files here are
# the dev ones only, so the paper's BUCC target (index 7) is planned on dev.
BUCC_HERE = {"paper": ["target.7.split=dev"], "study": []}


@pytest.fixture
def hub(data, tmp_path, monkeypatch):
    (tmp_path / "xtreme").mkdir()
    (tmp_path / "xtreme" / "bucc2018").symlink_to(data / "xtreme" / "bucc2018")
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path))


@pytest.mark.parametrize("name", HUB)
def test_hub_presets_expand(name, hub):
    grid, runs = plan(root() / "params" / f"{name}.yaml", BUCC_HERE[name])
    n_targets = len(grid.targets)
    trained = [t for t in grid.targets if t.train is not None]
    inter = len(grid.intermediate.tasks) * len(grid.intermediate.languages) * len(grid.seeds)
    nonzero = [s for s in grid.intermediate.sizes if s != 0]
    if grid.intermediate.oversize == "error":
        assert len(runs["intermediate"]) == inter * len(nonzero)
    assert len(runs["target"]) == (len(runs["intermediate"]) + len(grid.seeds)) * len(trained)
    assert len(runs["evaluate"]) == len(runs["target"]) + (len(runs["intermediate"]) + 1) * (n_targets - len(trained))


def test_paper_grid_is_the_papers(hub):
    grid, runs = plan(root() / "params" / "paper.yaml", BUCC_HERE["paper"])
    tasks = {r.params["task"] for r in runs["intermediate"]}
    assert {"anli", "ccg", "commonsenseqa", "cosmosqa", "hellaswag", "mnli", "qqp", "squad", "sst2"} < tasks
    assert any("+" in t for t in tasks)  # the multi-task mixture
    assert grid.intermediate.train.lr == 1e-5
    assert grid.intermediate.train.batch_size * grid.intermediate.train.grad_accum == 32
    qa = [t for t in grid.targets if t.task in ("xquad", "mlqa", "tydiqa")]
    assert qa and all(t.train.batch_size * t.train.grad_accum == 16 and t.train.max_length == 384 for t in qa)
    assert all(t.train.eval_every for t in grid.targets if t.train)  # early stopping on English dev


def test_dry_run_prints_the_grid(monkeypatch, capsys):
    monkeypatch.setenv("XFER_DATA_DIR", "hub")  # the hub, although data/raw is unpacked here
    assert main(["plan", str(root() / "params" / "study.yaml")]) == 0
    out = capsys.readouterr().out
    assert "intermediate" in out and "GPU hours" in out


@pytest.mark.parametrize("name, field", [("paper", "intermediate.languages"), ("study", "evaluate.split")])
def test_hub_grid_on_the_local_folder_names_the_field_and_the_hub_setting(name, field, data, capsys):
    """The local folder holds CommonsenseQA dev only and PAN-X test without labels: planning the hub
    grids against it fails on the field, and says how to plan them against the hub instead."""
    assert main(["plan", str(root() / "params" / f"{name}.yaml")]) != 0
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}:") and "XFER_DATA_DIR=hub" in err
