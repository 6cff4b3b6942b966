"""The grid on a Slurm cluster, through submitit: each phase's runs that are not done as one job
array, each job held until its own upstream jobs have succeeded (`afterok`, with
`--kill-on-invalid-dep=yes`), so a failed run cancels only what is built on it. A job runs one
run, or `runs_per_job` of them one after another (a cluster schedules a thousand one-minute
evaluations badly, and each job pays a fresh process); a failed run then also cancels what is
built on the other runs of its job.

A job runs exactly what the local runner runs (`xfer.grid.execute.take`: the same papermill
notebook in the same run folder); only where it runs differs. Jobs are requeued on preemption or timeout
(submitit's checkpointing: the job runs under `srun`, which passes on the signal Slurm sends
`signal_s` seconds before the time limit) and resume from the run's training state. A phase with
more runs than the cluster's `MaxArraySize` goes as several arrays; a submission that fails
part-way cancels what it submitted; a grid submitted again while its jobs are queued joins them
(one submitter at a time per grid, under a file lock). The submission is recorded
in `runs/slurm/<grid>.json`; `status` reads it with the run folders and Slurm's own view of each
job (`sacct` where the cluster keeps accounting, else `scontrol`, which remembers a finished job
for `MinJobAge`), and writes `error.json` for a job Slurm killed (scancel, time limit, OOM) so
the report lists it like any failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import submitit
from filelock import FileLock

from xfer.grid import execute
from xfer.paths import read_json, runs_dir, write_json

if TYPE_CHECKING:  # a job's own process unpickles RunJob from here: planning (tasks, torch) stays out of it
    from xfer.grid.plan import Plan

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}


class RunJob(submitit.helpers.Checkpointable):
    """Runs of one phase in a Slurm job, one after another (`runs_per_job`; one by default), given
    as the validated objects the submitter planned (the job does not re-read the grid's data).
    With several, the job's notebook kernels are forked from one warm server (`xfer.kernel`) as a
    local grid's workers do: each run then skips the seconds of a fresh kernel's imports.
    Checkpointable: on preemption or timeout submitit requeues the same call; what is done is
    skipped, and a run picks up its training state."""

    def __call__(self, grid, runs, upstreams, registration=None) -> list[str]:
        os.environ["XFER_RUNNER_PID"] = str(os.getpid())  # the notebook kernels stop if this job dies
        if os.environ.get("SLURM_CPUS_PER_TASK") and not os.environ.get("XFER_THREADS"):
            # torch threads = the job's CPUs, not every core of the node: where Slurm does not bind
            # a job to its CPUs (task/none), jobs sharing a node otherwise oversubscribe it
            os.environ["XFER_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]
        if len(runs) > 1:
            import torch

            if not torch.cuda.is_available():  # as run_grid's workers: warm kernels on CPU nodes only
                execute.KERNEL_MANAGER = execute.WARM
        failed = []
        for run, upstream in zip(runs, upstreams):
            label = f"{run.phase} {run.id} (Slurm job {os.environ.get('SLURM_JOB_ID', '?')})"
            outcome, err = execute.take(grid, run, upstream, label, full=True, registration=registration)
            if outcome == "busy":  # a local worker or a duplicate job has it: its result is ours
                execute.Lock(execute.run_dir(run)).wait(execute.lock_timeout())
            if not execute.is_done(run):  # the job fails: Slurm then cancels the jobs built on it
                failed.append(f"{run.phase} run {run.id} failed: {(err or {}).get('error') or execute.state(run)}")
        if failed:
            raise RuntimeError("; ".join(failed))
        return [r.id for r in runs]


def record_path(grid) -> Path:
    return runs_dir() / "slurm" / f"{grid.name}.json"


def read_record(grid) -> dict:
    """{run id: {phase, job, submitted}} of what was submitted for the grid ({} before its first submission)."""
    return read_json(record_path(grid)) if record_path(grid).exists() else {}


def _scontrol(*args: str) -> str:
    out = subprocess.run(["scontrol", *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"scontrol {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def _executor(grid, phase: str):
    res = grid.executor.resources(phase)
    ex = submitit.AutoExecutor(folder=runs_dir() / "slurm" / "logs" / "%j", cluster="slurm",
                               slurm_max_num_timeout=res.requeues)
    extra = {"hold": True, "kill-on-invalid-dep": "yes", "requeue": True, **res.sbatch}
    if res.gpus:
        extra["gres"] = f"gpu:{res.gpus}"
    ex.update_parameters(timeout_min=res.time_min, cpus_per_task=res.cpus_per_task, mem_gb=res.mem_gb,
                         slurm_partition=res.partition, slurm_account=res.account, slurm_qos=res.qos,
                         slurm_array_parallelism=grid.executor.array_parallelism, slurm_job_name=f"xfer-{phase}",
                         slurm_additional_parameters=extra, slurm_signal_delay_s=res.signal_s)
    return ex


class SubmitError(RuntimeError):
    """A submission that could not go through; the message is one line and says what was undone."""


def cluster_limits() -> dict[str, int]:
    """`MaxArraySize` and `MaxJobCount` from `scontrol show config` (Slurm's defaults if unsaid)."""
    conf = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", _scontrol("show", "config"), re.M))
    return {"MaxArraySize": int(conf.get("MaxArraySize", 1001)), "MaxJobCount": int(conf.get("MaxJobCount", 10000))}


def chunks(items: list, size: int) -> list[list]:
    """`items` in order, `size` at a time: a phase's runs as jobs (`runs_per_job` each), and its jobs
    as arrays Slurm accepts (indices 0..n-1 need n <= MaxArraySize)."""
    size = max(1, size)
    return [items[i:i + size] for i in range(0, len(items), size)]


def _queued() -> int:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True)
    return len(out.stdout.split()) if out.returncode == 0 else 0


def submit(p: Plan) -> dict[str, dict]:
    """Submit every run of the grid that is neither done nor queued; returns {run id: {phase, job}}
    of what it submitted. What is done is decided here, before submitting, from the run folders;
    a run whose recorded job is still pending or running is joined, not submitted again (its
    downstream jobs wait on that job), so a second call submits nothing."""
    from xfer.report import preregister

    grid, runs, by_id = p.grid, p.runs, p.by_id
    # the analysis plan, fixed before the first job starts (as the local runner does)
    reg = preregister(grid, p.pretrained.id, sum(execute.is_done(r) for r in runs["evaluate"]), len(runs["evaluate"]))
    registration = None if "problem" in reg else {"hash": reg["hash"], "time": reg["time"]}
    record_path(grid).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(record_path(grid).with_suffix(".lock"))):  # two `make run` of one grid: one at a time
        record = read_record(grid)
        states = job_states([v["job"] for v in record.values()])
        queued = {rid: v["job"] for rid, v in record.items() if states.get(v["job"], ("",))[0] in ACTIVE}
        todo = {phase: [r for r in runs[phase] if r.id not in queued and not execute.is_done(r)]
                for phase in execute.PHASES}
        limits = cluster_limits()
        todo = {phase: chunks(pending, grid.executor.resources(phase).runs_per_job) for phase, pending in todo.items()}
        n = sum(map(len, todo.values()))
        if n and _queued() + n > limits["MaxJobCount"]:
            raise SubmitError(f"{n} jobs to submit and {_queued()} in the queue exceed the cluster's MaxJobCount "
                              f"{limits['MaxJobCount']}; nothing submitted (submit part of the grid, e.g. fewer seeds)")
        jobs, arrays, held = {}, [], []
        try:
            for phase, pending in todo.items():
                for part in chunks(pending, limits["MaxArraySize"]):
                    ex = _executor(grid, phase)
                    with ex.batch():
                        submitted = [ex.submit(RunJob(), grid, pack, [by_id.get(r.upstream) for r in pack],
                                               registration) for pack in part]
                    arrays.append(submitted[0].job_id.split("_")[0])
                    held += [(j.job_id, pack) for pack, j in zip(part, submitted)]
                    jobs.update({r.id: j.job_id for pack, j in zip(part, submitted) for r in pack})
            after = {**queued, **jobs}
            for job, pack in held:  # each job waits for the jobs of its own runs' upstream runs only
                upstream = sorted({after[r.upstream] for r in pack if r.upstream in after})
                if upstream:
                    _scontrol("update", f"JobId={job}", f"Dependency=afterok:{':'.join(upstream)}")
            if arrays:
                _scontrol("release", ",".join(arrays))
        except Exception as e:  # noqa: BLE001 - whatever failed, the held jobs must not stay behind
            if arrays:
                subprocess.run(["scancel", *arrays], capture_output=True)
            what = f"{type(e).__name__}: {' '.join(str(e).split())}"[:400]
            raise SubmitError(f"Slurm submission of grid {grid.name} failed after {len(jobs)} jobs in "
                              f"{len(arrays)} arrays ({what}); cancelled "
                              f"{'arrays ' + ','.join(arrays) if arrays else 'nothing (none was submitted)'}") from None
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        record.update({rid: {"phase": by_id[rid].phase, "job": job, "submitted": now} for rid, job in jobs.items()})
        write_json(record_path(grid), record)
    if queued:
        print(f"{len(queued)} runs of grid {grid.name} are already queued on Slurm: joined, not submitted again",
              flush=True)
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


def on_record(params: str | Path, overrides: list[str] = ()) -> bool:
    """Whether `status` should ask Slurm: the grid's executor is slurm, or it has jobs on record."""
    from xfer.config import load_grid

    grid = load_grid(params, overrides)  # the params file only: no data file is read
    return grid.executor.kind == "slurm" or record_path(grid).exists()


def status(p: Plan) -> dict[str, dict[str, list]]:
    """Per phase: (run id, job, notebook) done / running / pending / failed / not submitted. A run
    whose job ended without finishing it gets the job, its state and Slurm's reason in its
    error.json (beside the run's own error, if it left one: a scancel shows as "Kernel died" from
    inside), so `make report` lists it with the cause."""
    return _table(read_record(p.grid), [r for phase in execute.PHASES for r in p.runs[phase]])


def status_on_record(params: str | Path, overrides: list[str], why: Exception) -> dict[str, dict[str, list]]:
    """`status` when the grid cannot be planned (a data file is damaged): the runs on record,
    from their folders and Slurm, with a note; `why` again when nothing is on record."""
    from types import SimpleNamespace

    from xfer.config import load_grid

    grid = load_grid(params, overrides)
    record = read_record(grid)
    if not record:
        raise why
    print(f"note: the grid cannot be planned ({' '.join(str(why).split())[:300]}); showing the "
          f"{len(record)} runs on record in {record_path(grid)}", file=sys.stderr, flush=True)
    return _table(record, [SimpleNamespace(phase=v["phase"], id=rid) for rid, v in record.items()])


def _table(record: dict, planned: list) -> dict[str, dict[str, list]]:
    states = job_states([v["job"] for v in record.values()])
    table = {phase: {k: [] for k in ("done", "running", "pending", "failed", "not submitted")}
             for phase in execute.PHASES}
    for run in planned:
        folder, sub = runs_dir() / run.phase / run.id, record.get(run.id)
        state, reason = states.get(sub["job"], ("UNKNOWN", "")) if sub else ("", "")
        job = None if not sub else "running" if state == "RUNNING" else "pending" if state in ACTIVE else "ended"
        key = execute.classify(run, job)
        if key == "failed" and sub:  # its job ended and the run is not done: a failure, in Slurm's words too
            _record_failure(run, folder, sub["job"], state, reason)
        key = "not submitted" if key == "to run" else key
        table[run.phase][key].append((run.id, sub["job"] if sub else "", str(folder / "notebook.ipynb")))
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


def describe(table: dict, limit: int = 20) -> str:
    lines = [f"  {'phase':<12} {'done':>5} {'running':>8} {'pending':>8} {'failed':>7} {'not submitted':>14}"]
    for phase, t in table.items():
        lines.append(f"  {phase:<12} {len(t['done']):>5} {len(t['running']):>8} {len(t['pending']):>8} "
                     f"{len(t['failed']):>7} {len(t['not submitted']):>14}")
    for key in ("running", "pending"):  # the job ids, to follow one (`scontrol show job ID`, its log)
        for phase, t in table.items():
            for run_id, job, _ in t[key][:limit]:
                lines.append(f"  {key}: {phase} {run_id} (Slurm job {job})")
            if len(t[key]) > limit:
                arrays = sorted({job.split("_")[0] for _, job, _ in t[key][limit:]})
                lines.append(f"  {key}: {phase} and {len(t[key]) - limit} more (Slurm arrays {', '.join(arrays)})")
    for phase, t in table.items():
        for run_id, job, notebook in t["failed"]:
            lines.append(f"  failed: {phase} {run_id} (Slurm job {job or '-'}): {notebook}")
    return "\n".join(lines)


def wait(p: Plan, poll: float = 10.0, timeout: float | None = None) -> dict:
    """Poll until no job of the grid is pending or running, with one progress bar over the grid."""
    from tqdm.auto import tqdm

    t0 = time.time()
    with tqdm(desc="grid on Slurm", unit="run", file=sys.stdout) as bar:
        while True:
            table = status(p)
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


def describe_plan(p: Plan) -> str:
    """What `submit` would send: one array per phase (runs not done), its resources and its
    dependency, as `make plan` prints it for a grid whose executor is slurm."""
    grid, runs, by_id = p.grid, p.runs, p.by_id
    try:
        limits, said = cluster_limits(), "this cluster's"
    except (OSError, RuntimeError):  # no Slurm client here: Slurm's default
        limits, said = {"MaxArraySize": 1001}, "Slurm's default"
    lines = ["  Slurm submission (job arrays per phase of at most MaxArraySize "
             f"{limits['MaxArraySize']}, {said}; each job afterok its own upstream jobs):"]
    for phase in execute.PHASES:
        pending = [r for r in runs[phase] if not execute.is_done(r)]
        if not pending:
            continue
        res = grid.executor.resources(phase)
        sizes = [len(c) for c in chunks(chunks(pending, res.runs_per_job), limits["MaxArraySize"])]
        arrays = " + ".join(f"--array=0-{n - 1}%{min(n, grid.executor.array_parallelism)}" for n in sizes)
        flags = [arrays, f"--time={res.time_min}", f"--signal=USR2@{res.signal_s}",
                 f"--cpus-per-task={res.cpus_per_task}", f"--mem={res.mem_gb:g}G"]
        flags += [f"--gres=gpu:{res.gpus}"] if res.gpus else []
        flags += [f"--{k}={v}" for k, v in (("partition", res.partition), ("account", res.account),
                                            ("qos", res.qos)) if v]
        flags += [f"--{k}" if v is True else f"--{k}={v}" for k, v in res.sbatch.items()]
        after = sorted({by_id[r.upstream].phase for r in pending if r.upstream in by_id})
        per = f" ({len(pending)} runs, {res.runs_per_job} per job)" if res.runs_per_job > 1 else ""
        lines.append(f"    {phase:<12} {sum(sizes):>4} jobs{per}  {' '.join(flags)}"
                     + (f"  (each after its {'/'.join(after)} job{'s' if per else ''})" if after else ""))
    return "\n".join(lines)
