"""params/study.yaml itself, in miniature, end to end: through the hub loaders (a real Hugging Face
cache laid out offline from the real files, `tests/hub_cache.py`; XFER_DATA_DIR=hub,
HF_HUB_OFFLINE=1) and every phase on the real single-node Slurm of the suite, then the report.

Only sizes, steps, seeds and the evaluation sample change, with `--set` as `make report SET=...`
does; the model, its classes, the six intermediate languages, the six targets of five families,
grad_accum, max_length and the hub splits (validation as dev, XNLI's row-aligned train) are the
study's. Two further settings say where results go and what a job asks of the 2-core test node
(report_dir, executor.slurm.*), and the evaluation takes every language but Thai: the local
release has no labelled PAN-X Thai to lay out as the hub's (see hub_cache)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import slurm_cluster

import hub_cache
from xfer import runner, slurm
from xfer.grid import execute, plan
from xfer.paths import read_json, root, runs_dir

WHY = slurm_cluster.available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no Slurm here: {WHY}")

STUDY = root() / "params" / "study.yaml"
EVAL_LANGS = ("af ar az bg bn de el en es et eu fa fi fr gu he hi ht hu id it ja jv ka kk ko lt ml mr ms my nl pa pl "
              "pt qu ro ru sw ta te tl tr uk ur vi wo yo zh").split()  # every target language the hub has, but th
MINIATURE = ["seeds=[1]", "intermediate.sizes=[0, 32]", "intermediate.train.max_steps=2",
             "intermediate.train.save_every=1", "intermediate.train.eval_every=1", "target.size=16",
             *[f"target.{i}.train.{k}={v}" for i in range(5) for k, v in (("epochs", 1), ("eval_every", 1))],
             "evaluate.max_examples=4", f"evaluate.languages=[{', '.join(EVAL_LANGS)}]"]
RESOURCES = ["executor.slurm.gpus=0", "executor.slurm.cpus_per_task=1", "executor.slurm.mem_gb=2",
             "executor.slurm.time_min=30", "executor.array_parallelism=4"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster.running(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture
def hub(tmp_path, monkeypatch, data):
    """The study's hub datasets and model in an offline cache in this test's folder."""
    monkeypatch.setenv("XFER_DATA_DIR", str(data))  # the real files the cache is written from
    t0 = time.time()
    home = hub_cache.build_once(tmp_path / "hf", hub_cache.hub_files(STUDY, MINIATURE))
    print(f"hub cache laid out in {time.time() - t0:.0f}s")
    for k, v in {**hub_cache.environ(home), "XFER_DATA_DIR": "hub"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("XFER_OUTPUT", str(tmp_path))
    return home


@pytest.mark.long
def test_study_in_miniature_on_slurm_through_the_hub(cluster, hub, tmp_path, capsys):
    sets = MINIATURE + RESOURCES + [f"report_dir={tmp_path / 'report'}"]
    args = [a for s in sets for a in ("--set", s)]
    grid, runs = plan.plan(STUDY, sets + ["executor.kind=slurm"])
    assert grid.model.source == "hub" and grid.model.name == "FacebookAI/xlm-roberta-large"
    assert len(grid.intermediate.languages_of("xnli")) == 6 and len(grid.targets) == 6
    assert {r.params["train"]["grad_accum"] for r in runs["target"]} == {4}
    t0 = time.time()
    rc = runner.main(["all", str(STUDY), "--executor", "slurm", *args])  # make report EXECUTOR=slurm SET=...
    out = capsys.readouterr().out
    print(out[-3000:], f"\nthe grid on Slurm and its report took {time.time() - t0:.0f}s")
    assert rc == 0, out[-3000:]
    assert all(execute.is_done(r) for rs in runs.values() for r in rs)
    record = read_json(slurm.record_path(grid))
    assert {v["phase"] for v in record.values()} == {"pretrained", "intermediate", "target", "evaluate"}
    # through the hub: the cache's revisions were recorded, XNLI's hub dev selected the model
    pre = read_json(execute.run_dir(runs["pretrained"][0]) / "metrics.json")["hub_revisions"]
    assert pre["dataset facebook/xnli"] == hub_cache._sha("facebook/xnli")
    assert pre["model FacebookAI/xlm-roberta-large"] == hub_cache._sha("FacebookAI/xlm-roberta-large")
    sw = next(r for r in runs["intermediate"] if r.params["language"] == "sw")
    assert read_json(execute.run_dir(sw) / "metrics.json").get("dev_score") is not None
    report = grid.report_path()
    assert (report / "report.html").is_file() and (report / "report.pdf").is_file()
    text = (report / "report.html").read_text()
    assert "The primary test, one row per target: the slope of D per tenfold" in text  # on its units
    results = (report / "results.csv").read_text()
    for task in ("udpos", "panx", "pawsx", "xcopa", "xquad", "tatoeba"):
        assert f",{task}," in results, task
    assert read_json(report / "grid.json")["failures"] == []
    shutil.rmtree(runs_dir() / "slurm" / "logs", ignore_errors=True)
