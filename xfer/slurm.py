"""The grid on a Slurm cluster, through submitit: each phase's runs that are not done as one job
array, each job held until its own upstream job has succeeded (`afterok`, with
`--kill-on-invalid-dep=yes`), so a failed run cancels only what is built on it.

A job runs exactly what the local runner runs (`runner.take`: the same papermill notebook in
the same run folder); only where it runs differs. Jobs are requeued on preemption or timeout
(submitit's checkpointing) and resume from the run's training state. The submission is recorded
in `runs/slurm/<grid>.json`; `status` reads it with the run folders and Slurm's own view of each
job (`sacct` where the cluster keeps accounting, else `scontrol`, which remembers a finished job
for `MinJobAge`), and writes `error.json` for a job Slurm killed (scancel, time limit, OOM) so
the report lists it like any failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import submitit

from xfer.paths import read_json, runs_dir, write_json

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}


class RunJob(submitit.helpers.Checkpointable):
    """One run in a Slurm job, given as the validated objects the submitter planned (the job does
    not re-read the grid's data). Checkpointable: on preemption or timeout submitit requeues the
    same call, and the run picks up its training state."""

    def __call__(self, grid, run, upstream, registration=None) -> str:
        from xfer import runner

        os.environ["XFER_RUNNER_PID"] = str(os.getpid())  # the notebook kernel stops if this job dies
        label = f"{run.phase} {run.id} (Slurm job {os.environ.get('SLURM_JOB_ID', '?')})"
        outcome, err = runner.take(grid, run, upstream, label, full=True, registration=registration)
        if outcome == "busy":  # a local worker or a duplicate job has it: its result is ours
            runner.Lock(runner.run_dir(run)).wait(runner.lock_timeout())
        if not runner.is_done(run):  # a failed job: Slurm then cancels the jobs built on this run
            raise RuntimeError(f"{run.phase} run {run.id} failed: {(err or {}).get('error') or runner.state(run)}")
        return run.id


def record_path(grid) -> Path:
    return runs_dir() / "slurm" / f"{grid.name}.json"


def _scontrol(*args: str) -> str:
    out = subprocess.run(["scontrol", *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"scontrol {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def _executor(grid, phase: str):
    res = grid.executor.resources(phase)
    ex = submitit.AutoExecutor(folder=runs_dir() / "slurm" / "logs" / "%j", cluster="slurm")
    extra = {"hold": True, "kill-on-invalid-dep": "yes", "requeue": True, **res.sbatch}
    if res.gpus:
        extra["gres"] = f"gpu:{res.gpus}"
    ex.update_parameters(timeout_min=res.time_min, cpus_per_task=res.cpus_per_task, mem_gb=res.mem_gb,
                         slurm_partition=res.partition, slurm_account=res.account, slurm_qos=res.qos,
                         slurm_array_parallelism=grid.executor.array_parallelism, slurm_job_name=f"xfer-{phase}",
                         slurm_additional_parameters=extra, slurm_use_srun=False)
    return ex


def submit(params: str | Path, overrides: list[str] = ()) -> dict[str, dict]:
    """Submit every run of the grid that is not done; returns {run id: {phase, job}}. What is done
    is decided here, before submitting, from the run folders: a second call submits nothing."""
    from xfer import runner
    from xfer.report import preregister

    grid, runs = runner.plan(params, overrides)
    # the analysis plan, fixed before the first job starts (as the local runner does)
    reg = preregister(grid, runs["pretrained"][0].id, sum(runner.is_done(r) for r in runs["evaluate"]),
                      len(runs["evaluate"]))
    registration = None if "problem" in reg else {"hash": reg["hash"], "time": reg["time"]}
    by_id = {r.id: r for rs in runs.values() for r in rs}
    todo = {phase: [r for r in runs[phase] if not runner.is_done(r)] for phase in runner.PHASES}
    jobs = {}
    for phase, pending in todo.items():
        if not pending:
            continue
        ex = _executor(grid, phase)
        with ex.batch():
            submitted = [ex.submit(RunJob(), grid, r, by_id.get(r.upstream), registration) for r in pending]
        jobs.update({r.id: j.job_id for r, j in zip(pending, submitted)})
    for run_id, job in jobs.items():  # each job waits for its own upstream job only
        upstream = by_id[run_id].upstream
        if upstream in jobs:
            _scontrol("update", f"JobId={job}", f"Dependency=afterok:{jobs[upstream]}")
    if jobs:
        _scontrol("release", ",".join(sorted({j.split("_")[0] for j in jobs.values()})))
    record = read_json(record_path(grid)) if record_path(grid).exists() else {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    record.update({rid: {"phase": by_id[rid].phase, "job": job, "submitted": now} for rid, job in jobs.items()})
    write_json(record_path(grid), record)
    return {rid: record[rid] for rid in jobs}


def job_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Slurm's state and reason of each job: `sacct` where accounting runs, else `scontrol`."""
    if not job_ids:
        return {}
    states = {}
    if shutil.which("sacct"):
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,Reason", "-j", ",".join(job_ids)],
                             capture_output=True, text=True)
        if out.returncode == 0:
            for line in out.stdout.splitlines():
                jid, state, reason = (line.split("|") + ["", ""])[:3]
                states[jid] = (state.split()[0] if state else "UNKNOWN", reason)
    for jid in job_ids:
        if jid in states:
            continue
        out = subprocess.run(["scontrol", "show", "job", "-o", jid], capture_output=True, text=True)
        fields = dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)
        states[jid] = (fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""))
    return states


def status(params: str | Path, overrides: list[str] = ()) -> dict[str, dict[str, list]]:
    """Per phase: run ids done / running / pending / failed / not submitted. A run whose job ended
    without finishing it gets the job, its state and Slurm's reason in its error.json (beside the
    run's own error, if it left one: a scancel shows as "Kernel died" from inside), so `make
    report` lists it with the cause."""
    from xfer import runner

    grid, runs = runner.plan(params, overrides)
    record = read_json(record_path(grid)) if record_path(grid).exists() else {}
    states = job_states([v["job"] for v in record.values()])
    table = {phase: {k: [] for k in ("done", "running", "pending", "failed", "not submitted")}
             for phase in runner.PHASES}
    for phase in runner.PHASES:
        for run in runs[phase]:
            folder, sub = runner.run_dir(run), record.get(run.id)
            state, reason = states.get(sub["job"], ("UNKNOWN", "")) if sub else ("", "")
            if runner.is_done(run):
                key = "done"
            elif state in ACTIVE:
                key = "running" if state == "RUNNING" else "pending"
            elif sub:  # its job ended and the run is not done: a failure, in Slurm's words too
                key = "failed"
                _record_failure(run, folder, sub["job"], state, reason)
            elif (folder / "error.json").exists():
                key = "failed"
            else:
                key = "not submitted"
            table[phase][key].append((run.id, sub["job"] if sub else "", str(folder / "notebook.ipynb")))
    return table


def _record_failure(run, folder: Path, job: str, state: str, reason: str) -> None:
    """error.json for a run whose job ended without finishing it: Slurm's state and reason (time
    limit, scancel, out of memory, a cancelled upstream), with the run's own error if it left one."""
    path = folder / "error.json"
    err = read_json(path) if path.exists() else {}
    if err.get("slurm_job") == job:
        return
    said = f"Slurm job {job} ended {state}" + (f" ({reason})" if reason and reason != "None" else "")
    err.update(phase=run.phase, run_id=run.id, notebook=str(folder / "notebook.ipynb"), slurm_job=job,
               slurm_state=state, error=said + (f": {err['error']}" if err.get("error") else " before the run finished"))
    write_json(path, err)


def describe(table: dict) -> str:
    lines = [f"  {'phase':<12} {'done':>5} {'running':>8} {'pending':>8} {'failed':>7} {'not submitted':>14}"]
    for phase, t in table.items():
        lines.append(f"  {phase:<12} {len(t['done']):>5} {len(t['running']):>8} {len(t['pending']):>8} "
                     f"{len(t['failed']):>7} {len(t['not submitted']):>14}")
    for phase, t in table.items():
        for run_id, job, notebook in t["failed"]:
            lines.append(f"  failed: {phase} {run_id} (Slurm job {job or '-'}): {notebook}")
    return "\n".join(lines)


def wait(params: str | Path, overrides: list[str] = (), poll: float = 10.0, timeout: float | None = None) -> dict:
    """Poll until no job of the grid is pending or running, with one progress bar over the grid."""
    from tqdm.auto import tqdm

    t0 = time.time()
    with tqdm(desc="grid on Slurm", unit="run", file=sys.stdout) as bar:
        while True:
            table = status(params, overrides)
            total = sum(len(v) for t in table.values() for v in t.values())
            finished = sum(len(t["done"]) + len(t["failed"]) for t in table.values())
            bar.total, bar.n = total, finished
            bar.set_postfix(running=sum(len(t["running"]) for t in table.values()),
                            pending=sum(len(t["pending"]) for t in table.values()))
            bar.refresh()
            if not any(t["running"] or t["pending"] for t in table.values()):
                return table
            if timeout is not None and time.time() - t0 > timeout:
                raise TimeoutError(f"grid still running after {timeout:.0f} s:\n{describe(table)}")
            time.sleep(poll)


def describe_plan(grid, runs: dict) -> str:
    """What `submit` would send: one array per phase (runs not done), its resources and its
    dependency, as `make plan` prints it for a grid whose executor is slurm."""
    from xfer import runner

    by_id = {r.id: r for rs in runs.values() for r in rs}
    lines = ["  Slurm submission (one job array per phase, each job afterok its own upstream job):"]
    for phase in runner.PHASES:
        pending = [r for r in runs[phase] if not runner.is_done(r)]
        if not pending:
            continue
        res = grid.executor.resources(phase)
        flags = [f"--array=0-{len(pending) - 1}%{min(len(pending), grid.executor.array_parallelism)}",
                 f"--time={res.time_min}", f"--cpus-per-task={res.cpus_per_task}", f"--mem={res.mem_gb:g}G"]
        flags += [f"--gres=gpu:{res.gpus}"] if res.gpus else []
        flags += [f"--{k}={v}" for k, v in (("partition", res.partition), ("account", res.account),
                                            ("qos", res.qos)) if v]
        flags += [f"--{k}" if v is True else f"--{k}={v}" for k, v in res.sbatch.items()]
        after = sorted({by_id[r.upstream].phase for r in pending if r.upstream in by_id})
        lines.append(f"    {phase:<12} {len(pending):>4} jobs  {' '.join(flags)}"
                     + (f"  (each after its {'/'.join(after)} job)" if after else ""))
    return "\n".join(lines)
