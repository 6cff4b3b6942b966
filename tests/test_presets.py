"""Every preset validates and expands without training: the local ones against the files here,
the hub grids (paper, study) against the project's language metadata, as `make plan` shows them."""

import collections

import pytest

from xfer.paths import root
from xfer.grid.plan import plan
from xfer.runner import main

LOCAL = ["smoke", "cpu", "gpu", "demo", "demo_quick", "tasks", "answer", "template"]
HUB = ["paper", "study"]


@pytest.mark.parametrize("name", LOCAL)
def test_local_presets_expand(name, data):
    planned = plan(root() / "params" / f"{name}.yaml")
    grid, runs = planned.grid, planned.runs
    assert runs["evaluate"], name
    # every target run is evaluated once, and a target without training (retrieval) scores every encoder
    evaluated = collections.Counter(r.upstream for r in runs["evaluate"])
    untrained = sum(t.train is None for t in grid.targets)
    assert [evaluated[r.id] for r in runs["target"]] == [1] * len(runs["target"]), name
    assert [evaluated[r.id] for r in runs["pretrained"] + runs["intermediate"]] == \
        [untrained] * (len(runs["pretrained"]) + len(runs["intermediate"])), name
    assert sum(evaluated.values()) == len(runs["evaluate"])  # nothing evaluated but these
    # the baseline (the pretrained encoder) is trained on every trained target for every seed
    baselines = {(r.params["task"], r.params["seed"]) for r in runs["target"] if r.upstream == runs["pretrained"][0].id}
    assert baselines == {(t.trained_on, s) for t in grid.targets if t.train is not None for s in grid.seeds}, name


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
    planned = plan(root() / "params" / f"{name}.yaml", BUCC_HERE[name])
    grid, runs = planned.grid, planned.runs
    n_targets = len(grid.targets)
    trained = [t for t in grid.targets if t.train is not None]
    inter = sum(len(grid.intermediate.languages_of(t)) for t in grid.intermediate.tasks) * len(grid.seeds)
    nonzero = [s for s in grid.intermediate.sizes if s != 0]
    if grid.intermediate.oversize == "error":
        assert len(runs["intermediate"]) == inter * len(nonzero)
    assert len(runs["target"]) == (len(runs["intermediate"]) + len(grid.seeds)) * len(trained)
    assert len(runs["evaluate"]) == len(runs["target"]) + (len(runs["intermediate"]) + 1) * (n_targets - len(trained))


def test_paper_grid_is_the_papers(hub):
    planned = plan(root() / "params" / "paper.yaml", BUCC_HERE["paper"])
    grid, runs = planned.grid, planned.runs
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


@pytest.mark.parametrize("name, field", [("paper", "intermediate.languages"), ("study", "intermediate.languages")])
def test_hub_grid_on_the_local_folder_names_the_field_and_the_hub_setting(name, field, data, capsys):
    """The local folder holds CommonsenseQA dev only and PAN-X test without labels: planning the hub
    grids against it fails on the field, and says how to plan them against the hub instead."""
    assert main(["plan", str(root() / "params" / f"{name}.yaml")]) != 0
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}:") and "XFER_DATA_DIR=hub" in err


def _decades(sizes) -> float:
    import math

    return math.log10(max(sizes) / min(sizes))


def _design(grid, runs):
    """Per intermediate corpus (task, language): its distinct sizes as run, and the seeds."""
    sizes = {}
    for r in runs["intermediate"]:
        sizes.setdefault((r.params["task"], r.params["language"]), set()).add(r.params["size"])
    return sizes


def test_demo_is_the_parallel_nli_design(data):
    """English and ≥ 4 other languages of one 15-way parallel corpus (so only the language
    differs), the SST-2 en/pt pair beside it, nested sizes, ≥ 3 seeds, fixed steps, and targets
    UD-POS, PAN-X and XCOPA (XNLI is the intermediate task's benchmark, so not a target)."""
    from xfer.tasks import get_task

    planned = plan(root() / "params" / "demo.yaml")
    grid, runs = planned.grid, planned.runs
    nli = grid.intermediate.languages_of("xnli_derived")
    assert "en" in nli and len(set(nli) - {"en"}) >= 4 and get_task("xnli_derived").content() == ("xnli_derived", True)
    assert {"sst2", "sst2_pt"} <= set(grid.intermediate.tasks) and get_task("sst2_pt").content() == ("sst2", True)
    assert len(grid.seeds) >= 3 and grid.intermediate.fixed_steps and grid.intermediate.train.patience is None
    assert {t.task for t in grid.targets} == {"udpos", "panx", "xcopa"}
    sizes = _design(grid, runs)
    assert all(len(s) >= 4 for s in sizes.values())
    assert all(r.params["train"]["max_steps"] == grid.intermediate.train.max_steps and r.params["train"]["keep"] == "last"
               for r in runs["intermediate"])


def test_demo_quick_is_the_demo_scaled_down(data):
    planned = plan(root() / "params" / "demo_quick.yaml")
    grid, runs = planned.grid, planned.runs
    assert len(grid.seeds) >= 2 and grid.intermediate.fixed_steps
    langs = grid.intermediate.languages_of("xnli_derived")
    assert "en" in langs and len(langs) >= 2
    assert all(len(s) >= 2 for s in _design(grid, runs).values())


@pytest.mark.parametrize("name", ["cpu", "answer"])
def test_cpu_studies_train_an_equal_dose_of_at_least_one_pass(name, data):
    """A budget in examples, the same at every size (full batches: no short last batch moves it),
    at least one pass over the largest corpus, so size means more distinct examples at equal dose."""
    planned = plan(root() / "params" / f"{name}.yaml")
    grid, runs = planned.grid, planned.runs
    t = grid.intermediate.train
    assert grid.intermediate.fixed_steps and t.max_steps and t.epochs is None
    assert grid.intermediate.budget() >= max(s for s in grid.intermediate.sizes if s != "full")
    assert all(r.params["train"]["full_batches"] for r in runs["intermediate"])


def test_answer_is_a_sequential_study_that_can_decide(data):
    """The CPU study: the parallel NLI corpus in English and two other languages of different resource
    level, 2-3 nested sizes spanning >= 1.3 decades, up to >= 12 seeds added by looks."""
    from xfer import analysis as A

    grid = plan(root() / "params" / "answer.yaml").grid
    langs = grid.intermediate.languages_of("xnli_derived")
    low = A.low_resource(A.load_languages(), grid.low_resource)
    assert "en" in langs and {bool(low[x]) for x in langs if x != "en"} == {True, False}
    sizes = sorted(s for s in grid.intermediate.sizes if s)
    assert 2 <= len(sizes) <= 3 and _decades(sizes) >= 1.3
    assert grid.analysis.sequential.looks[-1] == len(grid.seeds) >= 12


def test_study_has_the_power_design(hub):
    """The facebook/xnli train corpus (row-aligned MNLI translations) in English and ≥ 4 other
    languages, ≥ 6 sizes over ≥ 2.5 decades with no size repeated (392,702 in every language),
    ≥ 5 seeds, fixed steps, and targets in every family of the task registry."""
    from xfer.bench import PUBLISHED
    from xfer.tasks import TASKS, get_task

    planned = plan(root() / "params" / "study.yaml")
    grid, runs = planned.grid, planned.runs
    assert grid.intermediate.tasks == ["xnli"] and get_task("xnli").content() == ("xnli", True)
    langs = grid.intermediate.languages_of("xnli")
    assert "en" in langs and len(set(langs) - {"en"}) >= 4
    assert len(grid.seeds) >= 5 and grid.intermediate.fixed_steps and grid.intermediate.train.patience is None
    n = PUBLISHED[("xnli", "train")]
    for sizes in _design(grid, runs).values():
        resolved = sorted(n if s == "full" else s for s in sizes)
        assert len(resolved) >= 6 and len(set(resolved)) == len(resolved) and _decades(resolved) >= 2.5
    families = {get_task(t.task).family for t in grid.targets}
    assert families == {t.family for t in TASKS.values()}
    assert "xnli" not in {t.task for t in grid.targets}
