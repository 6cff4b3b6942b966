"""params/study.yaml itself, in miniature, end to end: through the hub loaders (a real Hugging Face
cache laid out offline from the real files, `tests/hub_cache.py`; XFER_DATA_DIR=hub,
HF_HUB_OFFLINE=1) and every phase on the real single-node Slurm of the suite, then the report.

Only sizes, steps, seeds and the evaluation sample change, with `--set` as `make report SET=...`
does; the model, its classes, the six intermediate languages, the six targets of five families,
grad_accum, max_length and the hub splits (validation as dev, XNLI's row-aligned train) are the
study's. Two further settings say where results go and what a job asks of the 2-core test node
(report_dir, executor.slurm.* and executor.phases: one CPU a job, and the 84 short runs packed
into 7 jobs, `runs_per_job`). The evaluation sample is eight languages (EVAL_LANGS), each loaded
through the hub as any of the 47 would be. One seed has no sequential looks (a look needs two
seeds or more), so the miniature's primary test is the fixed design's.

It is `long`: `make test-long` runs it, and `.ci/run` calls that after `make test`. On 2 quiet
cores it took 4:47 (419 CPU-seconds): the hub cache 14 s, the grid on Slurm and its report 252 s.
Before, with 46 evaluation languages, the tokenizer loaded in every run and torch imported in every
job's own process, it took 17.5 min at load 10-13 (each evaluation spent half its time in offline
`load_dataset` reading every cached config's dataset_info.json: 47 x 131 reads for one PAN-X run)."""

from __future__ import annotations

import shutil
import time

import pytest
import slurm_cluster

import hub_cache
from xfer import runner
from xfer.grid import slurm
from xfer.grid import execute, plan
from xfer.paths import read_json, root, runs_dir

WHY = slurm_cluster.available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no Slurm here: {WHY}")

STUDY = root() / "params" / "study.yaml"
# the evaluation sample: eight languages, so every target has some (XCOPA has no English), high
# resource and low (sw, yo), five scripts; each is loaded from the hub as any of the 47 would be
EVAL_LANGS = "ar de en hi sw tr yo zh".split()
MINIATURE = ["seeds=[1]", "intermediate.sizes=[0, 32]", "intermediate.train.max_steps=2",
             "intermediate.train.save_every=1", "intermediate.train.eval_every=1", "target.size=16",
             *[f"target.{i}.train.{k}={v}" for i in range(5) for k, v in (("epochs", 1), ("eval_every", 1))],
             "evaluate.max_examples=4", f"evaluate.languages=[{', '.join(EVAL_LANGS)}]",
             "analysis.sequential=null"]  # one seed has no sequential looks (a look needs two or more)
# a job a CPU of the 2-core node; short runs packed into few jobs, as a cluster wants them
RESOURCES = ["executor.slurm.gpus=0", "executor.slurm.cpus_per_task=1", "executor.slurm.mem_gb=2",
             "executor.slurm.time_min=30", "executor.array_parallelism=4",
             "executor.phases={intermediate: {runs_per_job: 3}, target: {runs_per_job: 18}, "
             "evaluate: {runs_per_job: 21}}"]


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
    planned = plan.plan(STUDY, sets + ["executor.kind=slurm"])
    grid, runs = planned.grid, planned.runs
    assert grid.model.source == "hub" and grid.model.name == "FacebookAI/xlm-roberta-large"
    assert len(grid.intermediate.languages_of("xnli")) == 6 and len(grid.targets) == 6
    assert {r.params["train"]["grad_accum"] for r in runs["target"]} == {4}
    assert "evaluate        2 jobs (42 runs, 21 per job)" in slurm.describe_plan(planned)
    t0 = time.time()
    rc = runner.main(["all", str(STUDY), "--executor", "slurm", *args])  # make report EXECUTOR=slurm SET=...
    out = capsys.readouterr().out
    print(out[-3000:], f"\nthe grid on Slurm and its report took {time.time() - t0:.0f}s")
    assert rc == 0, out[-3000:]
    assert all(execute.is_done(r) for rs in runs.values() for r in rs)
    record = read_json(slurm.record_path(grid))
    assert {v["phase"] for v in record.values()} == {"pretrained", "intermediate", "target", "evaluate"}
    jobs = {p: {v["job"] for v in record.values() if v["phase"] == p} for p in ("intermediate", "target", "evaluate")}
    assert {p: len(j) for p, j in jobs.items()} == {"intermediate": 2, "target": 2, "evaluate": 2}, jobs
    # through the hub: the cache's revisions were recorded, XNLI's hub dev selected the model
    pre = read_json(execute.run_dir(runs["pretrained"][0]) / "metrics.json")["hub_revisions"]
    assert pre["dataset facebook/xnli"] == hub_cache._sha("facebook/xnli")
    assert pre["model FacebookAI/xlm-roberta-large"] == hub_cache._sha("FacebookAI/xlm-roberta-large")
    sw = next(r for r in runs["intermediate"] if r.params["language"] == "sw")
    assert read_json(execute.run_dir(sw) / "metrics.json").get("dev_score") is not None
    report = grid.report_path()
    assert (report / "index.html").is_file() and (report / "report.pdf").is_file()
    text = (report / "index.html").read_text()
    assert "The primary test, one column per target: the decision, the slope of D per tenfold" in text
    results = (report / "results.csv").read_text()
    for task in ("udpos", "panx", "pawsx", "xcopa", "xquad", "tatoeba"):
        assert f",{task}," in results, task
    assert read_json(report / "grid.json")["failures"] == []
    # one intermediate size besides the baseline: D has no slope on size yet, and the report says so
    assert "udpos: untestable (size does not vary within a seed)" in out, out[-3000:]
    shutil.rmtree(runs_dir() / "slurm" / "logs", ignore_errors=True)
