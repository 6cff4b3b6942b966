"""Slurm's own interruptions on the real single-node cluster: a training job requeued by
`scontrol requeue` (preemption) and one that reaches its time limit both resume from their last
training state and finish, with the results of an uninterrupted run; a phase with more runs than
the cluster's MaxArraySize goes as several arrays; a second submission joins the first; a
submission that fails part-way cancels what it held; `xfer status` names the jobs.

Slurm holds a requeued job for about two minutes (its BeginTime) before it may start again; the
tests set BeginTime=now, as an operator would, so the suite does not wait for it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import time

import pytest
import slurm_cluster

from xfer import runner
from xfer.grid import slurm
from xfer.grid import collect, execute, local, plan
from xfer.paths import read_json

WHY = slurm_cluster.available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no Slurm here: {WHY}")

RESOURCES = ["executor.kind=slurm", "executor.slurm.gpus=0", "executor.slurm.cpus_per_task=1",
             "executor.slurm.mem_gb=2", "executor.slurm.time_min=30"]
ONE_LANGUAGE = ["intermediate.languages=[sw]", "intermediate.train.save_every=2"]


def _cluster(tmp_path, monkeypatch, extra=""):
    c = slurm_cluster.Cluster(tmp_path / "slurm", extra=extra).start()
    monkeypatch.setenv("SLURM_CONF", str(c.conf))
    return c


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    c = _cluster(tmp_path, monkeypatch)
    try:
        yield c
    finally:
        c.stop()


def _job(job: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def _release_requeued(job: str, seen: set) -> None:
    """A requeued job waits ~120 s for its BeginTime; start it now (once per requeue)."""
    info = _job(job)
    restarts = int(info.get("Restarts", 0))
    if restarts and restarts not in seen and info.get("JobState") == "PENDING":
        seen.add(restarts)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)


def _wait_done(planned, job, seen, timeout=900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        _release_requeued(job, seen)
        table = slurm.status(planned)
        if not any(t["running"] or t["pending"] for t in table.values()):
            return table
        time.sleep(2)
    raise TimeoutError(slurm.describe(slurm.status(planned)))


def _steps(text: str) -> list[int]:
    return [int(s) for s in re.findall(r"resuming from step (\d+)", text)]


def test_requeued_by_scontrol_resumes_and_equals_an_uninterrupted_run(cluster, micro_grid, tmp_path, monkeypatch):
    grid_file = micro_grid(steps=60)
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs-local"))
    assert local.run_grid(plan.plan(grid_file, ONE_LANGUAGE))["failed"] == 0
    local_csv = (collect.collect(plan.plan(grid_file, ONE_LANGUAGE)) / "results.csv").read_bytes()

    # (1) preemption: `scontrol requeue` of the running intermediate job once it saved a state
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs-requeue"))
    overrides = ONE_LANGUAGE + RESOURCES
    planned = plan.plan(grid_file, overrides)
    runs = planned.runs
    sw = runs["intermediate"][0]
    submitted = slurm.submit(planned)
    state = execute.run_dir(sw) / "train_state.pt"
    deadline = time.time() + 600
    while not state.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert state.exists(), slurm.describe(slurm.status(planned))
    job = submitted[sw.id]["job"]
    by_id = {r.id: r for rs in runs.values() for r in rs}
    done = {r.id: (execute.run_dir(r) / "metrics.json").stat().st_mtime_ns for r in by_id.values() if execute.is_done(r)}
    assert done  # the pretrained run at least: it must not run again
    subprocess.run(["scontrol", "requeue", job], check=True)
    seen = set()
    table = _wait_done(planned, job, seen)
    assert all(not t["failed"] for t in table.values()), slurm.describe(table)
    assert int(_job(job)["Restarts"]) >= 1
    steps = _steps((execute.run_dir(sw) / "log.txt").read_text())
    print(f"scontrol requeue of job {job}: resumed from step {steps}")
    assert steps and 0 < steps[0] < 60
    requeued_csv = (collect.collect(planned) / "results.csv").read_bytes()
    assert requeued_csv == local_csv
    assert all((execute.run_dir(by_id[i]) / "metrics.json").stat().st_mtime_ns == t for i, t in done.items())


def test_a_job_at_its_time_limit_requeues_itself_and_finishes(cluster, micro_grid, tmp_path, monkeypatch):
    """The intermediate job asks to be signalled 600 s before its limit; once training has saved
    a state its limit is cut to the next whole minute past the run time plus one (`scontrol update
    TimeLimit`, as an operator shortens a job), so the signal is due at once and Slurm sends it at
    its next 30-s check, in training whatever the load of the machine (a limit fixed at submission
    let every attempt be signalled before the kernel had started on 2 busy cores). The job
    requeues itself (srun passes submitit the signal); the requeued attempt gets its 30 minutes
    back and resumes from the last state. 5000 steps: more than the fastest attempt trains in the
    30 s (about 100 steps/s on an idle core)."""
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs-timeout"))
    grid_file = micro_grid(steps=5000, name="long.yaml")
    limit = ["intermediate.languages=[sw]", "intermediate.train.save_every=100", *RESOURCES,
             "executor.phases={intermediate: {signal_s: 600, requeues: 3}}"]
    full = plan.plan(grid_file, limit)
    sw = full.runs["intermediate"][0]
    # the training run and the run it starts from: the phases after it have nothing to do with a time limit
    planned = dataclasses.replace(full, runs={"pretrained": full.runs["pretrained"], "intermediate": [sw],
                                              "target": [], "evaluate": []})
    job = slurm.submit(planned)[sw.id]["job"]
    state = execute.run_dir(sw) / "train_state.pt"
    deadline = time.time() + 600
    while not state.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert state.exists(), slurm.describe(slurm.status(planned))
    ran = _job(job)["RunTime"].replace("-", ":").split(":")
    seconds = sum(int(x) * 60 ** i for i, x in enumerate(reversed(ran)))
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={seconds // 60 + 2}"], check=True)
    t0 = time.time()
    while int(_job(job).get("Restarts", 0)) < 1 and not execute.is_done(sw) and time.time() - t0 < 120:
        time.sleep(0.5)
    print(f"limit cut at {seconds} s of run time; requeued {time.time() - t0:.0f} s later")
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=30"], check=True)
    seen = set()
    table = _wait_done(planned, job, seen, timeout=900)
    assert all(not t["failed"] for t in table.values()), slurm.describe(table)
    restarts = int(_job(job)["Restarts"])
    steps = _steps((execute.run_dir(sw) / "log.txt").read_text())  # every attempt's, appended
    log = "\n".join(p.read_text() for p in (runs_dir_of(tmp_path, "runs-timeout")).rglob(f"{job.split('_')[0]}*_log.*"))
    print(f"job {job} at its time limit: {restarts} requeues, resumed from steps {steps}")
    assert restarts >= 1 and steps and 0 < steps[0] < 5000, log[-2000:]
    assert "timed-out" in log or "USR2" in log, log[-2000:]
    metrics = read_json(execute.run_dir(sw) / "metrics.json")
    assert metrics["steps"] == 5000


def runs_dir_of(tmp_path, name):
    return tmp_path / name / "slurm" / "logs"


def test_phases_split_to_max_array_size_and_a_second_submission_joins(micro_grid, data, tmp_path, monkeypatch,
                                                                      capsys):
    # the grid's data folder: links to the real files, so one can be damaged after the grid ran
    farm = tmp_path / "data" / "xtreme"
    (farm / "panx").mkdir(parents=True)
    (farm / "udpos").symlink_to(data / "xtreme" / "udpos")
    for f in (data / "xtreme" / "panx").iterdir():
        (farm / "panx" / f.name).symlink_to(f)
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path / "data"))
    c = _cluster(tmp_path, monkeypatch, extra="MaxArraySize=2")
    try:
        grid_file = micro_grid(steps=4)
        overrides = ["intermediate.languages=[sw, en]"] + RESOURCES
        planned = plan.plan(grid_file, overrides)
        runs = planned.runs
        assert len(runs["evaluate"]) == 3 and slurm.cluster_limits()["MaxArraySize"] == 2
        assert "--array=0-1%2 + --array=0-0%1" in slurm.describe_plan(planned)
        first = slurm.submit(planned)
        assert slurm.submit(planned) == {}  # joined: nothing submitted twice
        assert "already queued on Slurm: joined" in capsys.readouterr().out
        arrays = {}
        for rid, sub in first.items():
            arrays.setdefault(sub["phase"], set()).add(sub["job"].split("_")[0])
        assert len(arrays["evaluate"]) == 2 and len(arrays["target"]) == 2, arrays
        assert runner.main(["status", str(grid_file), *[a for o in overrides[:1] for a in ("--set", o)]]) == 0
        said = capsys.readouterr().out  # no --executor: the grid has Slurm jobs on record
        assert re.search(r"(pending|running): \w+ \S+ \(Slurm job \d+_\d+\)", said), said
        table = slurm.wait(planned, poll=2, timeout=900)
        assert all(execute.is_done(r) for rs in runs.values() for r in rs), slurm.describe(table)
        # a damaged data file: the grid cannot be planned, its status still shows from the record
        bad = farm / "panx" / "train-sw.tsv"
        bad.unlink()
        bad.write_bytes(b"Sioux\tB-ORG\n\xff\tO\n")
        assert runner.main(["status", str(grid_file), "--set", overrides[0]]) == 0
        said = capsys.readouterr()
        assert "cannot be planned" in said.err and "train-sw.tsv" in said.err, said.err
        assert re.search(r"evaluate\s+3\s+0\s+0\s+0\s+0", said.out), said.out
    finally:
        c.stop()


def test_a_submission_failing_part_way_cancels_what_it_held(cluster, micro_grid, tmp_path):
    """The evaluate phase asks for a partition the cluster lacks: sbatch refuses it after the
    earlier phases went in; they are cancelled and the error says so in one line."""
    grid_file = micro_grid(steps=4)
    overrides = ["intermediate.languages=[sw]", *RESOURCES, "executor.phases={evaluate: {partition: nosuch}}"]
    with pytest.raises(slurm.SubmitError) as e:
        slurm.submit(plan.plan(grid_file, overrides))
    msg = str(e.value)
    print(msg)
    assert "\n" not in msg and "cancelled arrays" in msg and "nosuch" in msg.lower(), msg
    time.sleep(2)
    left = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True).stdout
    assert not left.strip(), left
    grid = plan.plan(grid_file, overrides).grid
    assert not slurm.record_path(grid).exists()
