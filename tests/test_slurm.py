"""The grid on a real single-node Slurm (Debian's slurmctld/slurmd/munge, started by the test as
root): job arrays per phase, each job after its own upstream job, the same results as the local
executor, nothing resubmitted that is done, a cancelled training job resumed from its state, and
only the cancelled run's own downstream lost. The cluster is stopped even when a test fails."""

import shutil
import subprocess
import time

import pytest
import slurm_cluster

from xfer.grid import slurm
from xfer.grid import collect, execute, local, plan
from xfer.paths import read_json, runs_dir

WHY = slurm_cluster.available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no Slurm here: {WHY}")

# one CPU and 2 GB per job so that two jobs run side by side on the 2-core node; no GPU
RESOURCES = ["executor.kind=slurm", "executor.slurm.gpus=0", "executor.slurm.cpus_per_task=1",
             "executor.slurm.mem_gb=2", "executor.slurm.time_min=30"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster.running(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def _squeue() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%E"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines())


def test_grid_on_slurm_equals_local_and_resumes_a_cancelled_job(cluster, micro_grid, tmp_path, monkeypatch):
    grid_file = micro_grid(steps=40)
    langs = ["intermediate.languages=[sw,en]", "intermediate.train.save_every=2"]
    overrides = langs + RESOURCES

    # the local executor's results, in a runs folder of their own
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs-local"))
    assert local.run_grid(plan.plan(grid_file, langs))["failed"] == 0
    local_csv = (collect.collect(plan.plan(grid_file, langs)) / "results.csv").read_bytes()

    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs-slurm"))
    planned = plan.plan(grid_file, overrides)
    runs = planned.runs
    submitted = slurm.submit(planned)
    assert len(submitted) == sum(len(v) for v in runs.values())
    # one array per phase, and each job held on its own upstream job (read back from Slurm)
    by_phase = {}
    for run_id, sub in submitted.items():
        by_phase.setdefault(sub["phase"], set()).add(sub["job"].split("_")[0])
    assert all(len(arrays) == 1 for arrays in by_phase.values()), by_phase
    deps = _squeue()
    by_id = {r.id: r for rs in runs.values() for r in rs}
    for run_id, sub in submitted.items():
        up = by_id[run_id].upstream
        if sub["phase"] in ("intermediate", "target", "evaluate") and sub["job"] in deps:
            assert deps[sub["job"]].startswith(f"afterok:{submitted[up]['job']}"), (sub, deps[sub["job"]])

    # cancel the Swahili intermediate job once it has saved a training state
    sw = next(r for r in runs["intermediate"] if r.params["language"] == "sw")
    state = execute.run_dir(sw) / "train_state.pt"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert state.exists(), slurm.describe(slurm.status(planned))
    subprocess.run(["scancel", submitted[sw.id]["job"]], check=True)
    table = slurm.wait(planned, poll=2, timeout=600)
    failed = {run_id for t in table.values() for run_id, _, _ in t["failed"]}
    downstream = {r.id for r in runs["target"] if r.upstream == sw.id}
    downstream |= {r.id for r in runs["evaluate"] if r.upstream in downstream}
    assert failed == {sw.id} | downstream  # only the cancelled run and what is built on it
    assert "CANCELLED" in read_json(execute.run_dir(sw) / "error.json")["error"]
    failures = read_json(collect.collect(planned) / "grid.json")["failures"]
    assert {f["run_id"] for f in failures} == failed

    # resubmit: only what is not done goes back, the cancelled run resumes from its state
    done_before = {r.id: (execute.run_dir(r) / "metrics.json").stat().st_mtime_ns
                   for rs in runs.values() for r in rs if execute.is_done(r)}
    again = slurm.submit(planned)
    assert set(again) == failed
    slurm.wait(planned, poll=2, timeout=600)
    assert all(execute.is_done(r) for rs in runs.values() for r in rs)
    assert "resuming from step" in (execute.run_dir(sw) / "notebook.ipynb").read_text()
    assert all((execute.run_dir(by_id[i]) / "metrics.json").stat().st_mtime_ns == t for i, t in done_before.items())
    assert slurm.submit(planned) == {}  # a third submission submits nothing
    assert (collect.collect(planned) / "results.csv").read_bytes() == local_csv
    shutil.rmtree(runs_dir() / "slurm" / "logs", ignore_errors=True)
