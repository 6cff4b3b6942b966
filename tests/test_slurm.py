"""The grid on a real single-node Slurm (Debian's slurmctld/slurmd/munge, started by the test as
root), with every interruption a cluster deals out, in one grid: job arrays per phase, split at
the cluster's MaxArraySize, each job after its own upstream job; a second submission joins the
first; `xfer status` names the jobs, and still shows them when a data file is damaged; a training
job requeued by `scontrol requeue` (preemption) and one at its time limit resume from their last
training state; a cancelled job loses only its own downstream and resumes when submitted again;
the results equal the local executor's; a submission that fails part-way cancels what it held.
The cluster is stopped even when a test fails.

Slurm holds a requeued job for about two minutes (its BeginTime) before it may start again; the
tests set BeginTime=now, as an operator would, so the suite does not wait for it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import slurm_cluster
from processes import gone_within, with_env

from xfer import runner
from xfer.grid import collect, execute, local, plan, slurm
from xfer.paths import read_json, runs_dir

WHY = slurm_cluster.available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no Slurm here: {WHY}")

# one CPU and 2 GB per job so that two jobs run side by side on the 2-core node; no GPU
RESOURCES = ["executor.kind=slurm", "executor.slurm.gpus=0", "executor.slurm.cpus_per_task=1",
             "executor.slurm.mem_gb=2", "executor.slurm.time_min=30"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module's tests on a worker; MaxArraySize=2, so a phase of three runs
    goes as two arrays."""
    with slurm_cluster.running(tmp_path_factory.mktemp("slurm"), extra="MaxArraySize=2") as c:
        yield c


def _squeue() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%E"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines())


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


def _wait_done(planned, job, timeout=900):
    """Slurm's table of the grid once no job of it is running or pending, releasing `job` at once
    whenever it is requeued."""
    deadline, seen = time.time() + timeout, set()
    while time.time() < deadline:
        _release_requeued(job, seen)
        table = slurm.status(planned)
        if not any(t["running"] or t["pending"] for t in table.values()):
            return table
        time.sleep(2)
    raise TimeoutError(slurm.describe(slurm.status(planned)))


def _steps(text: str) -> list[int]:
    return [int(s) for s in re.findall(r"resuming from step (\d+)", text)]


def _data_farm(data, tmp_path):
    """The grid's data folder: links to the real files, so one can be damaged after the grid ran."""
    farm = tmp_path / "data" / "xtreme"
    (farm / "panx").mkdir(parents=True)
    (farm / "udpos").symlink_to(data / "xtreme" / "udpos")
    for f in (data / "xtreme" / "panx").iterdir():
        (farm / "panx" / f.name).symlink_to(f)
    return farm


def test_grid_on_slurm_through_requeue_and_cancel_equals_local(cluster, micro_grid, data, tmp_path, monkeypatch,
                                                               capsys):
    farm = _data_farm(data, tmp_path)
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path / "data"))
    steps = 200  # with a state every 2 steps: seconds of training, time to requeue and to cancel it
    grid_file = micro_grid(steps=steps)
    langs = ["intermediate.languages=[sw,en]", "intermediate.train.save_every=2"]
    overrides = langs + RESOURCES
    status_args = ["status", str(grid_file), *[a for o in langs for a in ("--set", o)]]  # no --executor: on record

    # the local executor's results, in a runs folder of their own
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs-local"))
    assert local.run_grid(plan.plan(grid_file, langs))["failed"] == 0
    local_csv = (collect.collect(plan.plan(grid_file, langs)) / "results.csv").read_bytes()

    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs-slurm"))
    planned = plan.plan(grid_file, overrides)
    runs, by_id = planned.runs, planned.by_id
    assert len(runs["target"]) == len(runs["evaluate"]) == 3 and slurm.cluster_limits()["MaxArraySize"] == 2
    assert "--array=0-1%2 + --array=0-0%1" in slurm.describe_plan(planned)
    submitted = slurm.submit(planned)
    assert len(submitted) == sum(len(v) for v in runs.values())
    assert slurm.submit(planned) == {}  # joined: nothing submitted twice
    assert "already queued on Slurm: joined" in capsys.readouterr().out
    # three runs of a phase go as two arrays; each job held on its own upstream job (read back from Slurm)
    arrays = {}
    for sub in submitted.values():
        arrays.setdefault(sub["phase"], set()).add(sub["job"].split("_")[0])
    assert {p: len(a) for p, a in arrays.items()} == {"pretrained": 1, "intermediate": 1, "target": 2, "evaluate": 2}
    deps = _squeue()
    for run_id, sub in submitted.items():
        up = by_id[run_id].upstream
        if sub["phase"] != "pretrained" and sub["job"] in deps:
            assert deps[sub["job"]].startswith(f"afterok:{submitted[up]['job']}"), (sub, deps[sub["job"]])
    assert runner.main(status_args) == 0
    said = capsys.readouterr().out
    assert re.search(r"(pending|running): \w+ \S+ \(Slurm job \d+_\d+\)", said), said

    # as each intermediate job saves its first training state: sw is requeued (preemption), en cancelled
    sw, en = (next(r for r in runs["intermediate"] if r.params["language"] == lang) for lang in ("sw", "en"))
    jobs = {sw.id: submitted[sw.id]["job"], en.id: submitted[en.id]["job"]}
    act = {sw.id: ["scontrol", "requeue", jobs[sw.id]], en.id: ["scancel", jobs[en.id]]}
    deadline = time.time() + 600
    while act and time.time() < deadline:
        for rid in [rid for rid in act if (execute.run_dir(by_id[rid]) / "train_state.pt").exists()]:
            done = {r.id: (execute.run_dir(r) / "metrics.json").stat().st_mtime_ns
                    for r in by_id.values() if execute.is_done(r)}
            assert rid not in done, f"{rid} finished before it could be interrupted"
            subprocess.run(act.pop(rid), check=True)
        time.sleep(0.1)
    assert not act, slurm.describe(slurm.status(planned))
    table = _wait_done(planned, jobs[sw.id])
    failed = {run_id for t in table.values() for run_id, _, _ in t["failed"]}
    downstream = {r.id for r in runs["target"] if r.upstream == en.id}
    downstream |= {r.id for r in runs["evaluate"] if r.upstream in downstream}
    assert failed == {en.id} | downstream  # only the cancelled run and what is built on it
    assert "CANCELLED" in read_json(execute.run_dir(en) / "error.json")["error"]
    assert {f["run_id"] for f in read_json(collect.collect(planned) / "grid.json")["failures"]} == failed
    # the requeued job came back by itself and went on from its last state
    assert int(_job(jobs[sw.id])["Restarts"]) >= 1
    resumed = _steps((execute.run_dir(sw) / "log.txt").read_text())
    print(f"scontrol requeue of job {jobs[sw.id]}: resumed from step {resumed}")
    assert resumed and 0 < resumed[0] < steps

    # resubmit: only what is not done goes back, the cancelled run resumes from its state
    done_before = {r.id: (execute.run_dir(r) / "metrics.json").stat().st_mtime_ns
                   for r in by_id.values() if execute.is_done(r)}
    assert slurm.submit(planned).keys() == failed
    _wait_done(planned, jobs[sw.id])
    assert all(execute.is_done(r) for r in by_id.values())
    assert "resuming from step" in (execute.run_dir(en) / "notebook.ipynb").read_text()
    assert all((execute.run_dir(by_id[i]) / "metrics.json").stat().st_mtime_ns == t for i, t in done_before.items())
    assert slurm.submit(planned) == {}  # a third submission submits nothing
    assert (collect.collect(planned) / "results.csv").read_bytes() == local_csv

    # a damaged data file: the grid cannot be planned, its status still shows from the record
    bad = farm / "panx" / "train-sw.tsv"
    bad.unlink()
    bad.write_bytes(b"Sioux\tB-ORG\n\xff\tO\n")
    assert runner.main(status_args) == 0
    said = capsys.readouterr()
    assert "cannot be planned" in said.err and "train-sw.tsv" in said.err, said.err
    assert re.search(r"evaluate\s+3\s+0\s+0\s+0\s+0", said.out), said.out
    shutil.rmtree(runs_dir() / "slurm" / "logs", ignore_errors=True)


def test_a_job_at_its_time_limit_requeues_itself_and_finishes(cluster, micro_grid, tmp_path, monkeypatch):
    """The intermediate job asks to be signalled 600 s before its limit. Once training has saved a
    state its kernel is paused (SIGSTOP, as a long step holds it), so the job is still in training
    when the signal comes without spending the cores the rest of the suite needs (a job training
    on for the 30 s took 100 CPU-seconds), and its limit is cut to the next whole minute past the
    run time plus one (`scontrol update TimeLimit`, as an operator shortens a job): the signal is
    then due at once and Slurm sends it at its next 30-s check, whatever the load of the machine
    (a limit fixed at submission let every attempt be signalled before the kernel had started on
    2 busy cores). The job requeues itself (srun passes submitit the signal); the requeued attempt
    gets its 30 minutes back and resumes from the last state."""
    runs = tmp_path / "runs-timeout"
    monkeypatch.setenv("XFER_RUNS", str(runs))
    grid_file = micro_grid(steps=300, name="long.yaml")
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
        time.sleep(0.1)
    assert state.exists(), slurm.describe(slurm.status(planned))
    paused = list(with_env(f"XFER_RUNS={runs}", "ipykernel_launcher"))
    assert len(paused) == 1, paused
    os.kill(paused[0], signal.SIGSTOP)
    ran = _job(job)["RunTime"].replace("-", ":").split(":")
    seconds = sum(int(x) * 60 ** i for i, x in enumerate(reversed(ran)))
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={seconds // 60 + 2}"], check=True)
    t0 = time.time()
    while int(_job(job).get("Restarts", 0)) < 1 and not execute.is_done(sw) and time.time() - t0 < 120:
        time.sleep(0.5)
    print(f"limit cut at {seconds} s of run time; requeued {time.time() - t0:.0f} s later")
    with contextlib.suppress(ProcessLookupError):  # Slurm killed it with its job; else it stops on its own
        os.kill(paused[0], signal.SIGCONT)
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=30"], check=True)
    table = _wait_done(planned, job, timeout=900)
    assert all(not t["failed"] for t in table.values()), slurm.describe(table)
    restarts = int(_job(job)["Restarts"])
    steps = _steps((execute.run_dir(sw) / "log.txt").read_text())  # every attempt's, appended
    log = "\n".join(p.read_text() for p in (runs / "slurm" / "logs").rglob(f"{job.split('_')[0]}*_log.*"))
    print(f"job {job} at its time limit: {restarts} requeues, resumed from steps {steps}")
    assert restarts >= 1 and steps and 0 < steps[0] < 300, log[-2000:]
    assert "timed-out" in log or "USR2" in log, log[-2000:]
    metrics = read_json(execute.run_dir(sw) / "metrics.json")
    assert metrics["steps"] == 300
    assert gone_within(paused, 60) == set(), "the paused kernel of the first attempt is still there"


def test_a_submission_failing_part_way_cancels_what_it_held(cluster, micro_grid, tmp_path):
    """The evaluate phase asks for a partition the cluster lacks: sbatch refuses it after the
    earlier phases went in; they are cancelled and the error says so in one line."""
    grid_file = micro_grid(steps=4)
    overrides = ["intermediate.languages=[sw]", *RESOURCES, "executor.phases={evaluate: {partition: nosuch}}"]
    before = set(_squeue())  # the module's cluster: an earlier test's job may still be ending
    with pytest.raises(slurm.SubmitError) as e:
        slurm.submit(plan.plan(grid_file, overrides))
    msg = str(e.value)
    print(msg)
    assert "\n" not in msg and "cancelled arrays" in msg and "nosuch" in msg.lower(), msg
    time.sleep(2)
    left = {job: why for job, why in _squeue().items() if job not in before}
    assert not left, left
    grid = plan.plan(grid_file, overrides).grid
    assert not slurm.record_path(grid).exists()
