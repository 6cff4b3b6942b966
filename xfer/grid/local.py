"""The local executor: a grid's runs in plan order, several at once in worker processes (each
forks its notebook kernels warm on a CPU machine, `xfer.kernel`), a run starting once its upstream
run is done, with progress and an ETA on the terminal; a sequential design look by look
(`run_looks`). Each run is executed by `xfer.grid.execute.take`, as on Slurm."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from xfer.config import Run
from xfer.grid import execute
from xfer.grid.collect import collect
from xfer.grid.execute import Lock, is_done, lock_timeout, run_dir, say, take
from xfer.grid.plan import PHASES, Plan
from xfer.paths import runs_dir


def run_grid(plan: Plan, phases=PHASES, jobs: int | None = None, seeds: list[int] | None = None) -> dict:
    """Run what is not done, in plan order, `jobs` runs at once (default: the grid's
    `executor.jobs`): a run starts once its upstream run is done. Runs execute in `jobs` worker
    processes (a run's log.txt takes its worker's stderr; with several jobs, cores // jobs torch
    threads each), which fork their notebook kernels warm (`xfer.kernel`) on a CPU machine.
    `seeds`: only the runs those seeds need (one look of a sequential design)."""
    if seeds is not None:
        plan = plan.seeds(seeds)
    grid, runs, by_id = plan.grid, plan.runs, plan.by_id
    from xfer.report import preregister

    # the analysis plan, fixed before the first run (in the runs folder, whatever the report_dir)
    reg = preregister(grid, plan.pretrained.id, sum(is_done(r) for r in runs["evaluate"]), len(runs["evaluate"]))
    registration = None if "problem" in reg else {"hash": reg["hash"], "time": reg["time"]}
    os.environ["XFER_RUNNER_PID"] = str(os.getpid())  # the kernels it starts stop if it is killed
    jobs = jobs or grid.executor.local_jobs()
    if jobs > 1 and not os.environ.get("XFER_THREADS"):
        os.environ["XFER_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))  # the kernels inherit it
    failed: dict[str, dict] = {}
    counts = {"done": 0, "ran": 0, "failed": 0, "skipped": 0}
    total = sum(len(runs[p]) for p in phases)
    wait_s = lock_timeout()
    # a run about to serve as an upstream is verified in full: its next phase reads it all anyway
    feeds = {r.upstream for p in phases for r in runs[p] if r.upstream and not is_done(r)}
    busy = []
    started, took = time.time(), measured(runs, phases)  # the ETA starts from the grid's finished runs
    left = {p: sum(not is_done(r) for r in runs[p]) for p in phases}  # runs still to run, for the ETA
    print(f"each run's full output: {runs_dir()}/<phase>/<run id>/log.txt (`tail -f` one to follow it)"
          + (f"; {jobs} runs at once, {os.environ['XFER_THREADS']} torch threads each" if jobs > 1 else ""), flush=True)
    pending = [(i, phase, run) for i, (phase, run) in enumerate(((p, r) for p in phases for r in runs[p]), 1)]
    import torch

    # warm kernels on CPU machines: forking CUDA-capable kernels from the server is untested here, and a
    # GPU run's minutes dwarf the seconds of imports it would save
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init,
                               initargs=(not torch.cuda.is_available(), os.getpid()))
    # every worker now, before the pool's own threads exist: while SIGINT is ignored process-wide for a
    # worker to inherit, a Ctrl-C falling on another thread (one that does not block it) is lost
    with ctrl_c_ignored():
        for _ in range(jobs):
            pool._adjust_process_count()  # what submit would do for its first `jobs` runs
    running: dict = {}  # future -> (i, phase, run, start time)
    todo = {run.id for _, _, run in pending}  # pending or running: a run waits while its upstream is here

    def finish(i, phase, run, t, outcome, err):
        todo.discard(run.id)
        left[phase] -= outcome != "done"
        if outcome == "ran":
            took.setdefault(phase, []).append(time.time() - t)
        if outcome == "busy":
            busy.append((run, f"[{i}/{total}] {phase} {run.id}"))
            return
        counts[outcome] += 1
        if err:
            failed[run.id] = err

    try:
        while pending or running:
            for item in list(pending):
                if len(running) >= jobs:
                    break
                i, phase, run = item
                up = by_id.get(run.upstream)
                if up is not None and up.id in todo:
                    continue  # its upstream is still ours to run: it starts when that one is done
                pending.remove(item)
                label = f"[{i}/{total}] {phase} {run.id}"
                why = f"upstream run {run.upstream} did not finish"
                if up is not None and up.id not in failed and not is_done(up) and not Lock(run_dir(up)).wait(0):
                    say(f"{label}: waiting for another worker to finish upstream {up.id} "
                        f"(up to {wait_s:.0f}s, XFER_LOCK_TIMEOUT)")
                    if not Lock(run_dir(up)).wait(wait_s):
                        why = f"upstream run {up.id} still held by another worker after {wait_s:.0f}s (XFER_LOCK_TIMEOUT)"
                if up is not None and (up.id in failed or not is_done(up)):
                    failed[run.id] = {"phase": phase, "run_id": run.id, "error": why}
                    counts["skipped"] += 1
                    left[phase] -= 1
                    todo.discard(run.id)
                    say(f"{label}: skipped, {why}")
                    continue
                note = progress(counts["done"] + counts["ran"] + counts["failed"] + counts["skipped"], total,
                                started, took, left, jobs)
                future = pool.submit(take, grid, run, up, label, run.id in feeds, note, registration)
                running[future] = (i, phase, run, time.time())
            if running:
                done_now, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done_now:
                    finish(*running.pop(future), *future.result())
    except KeyboardInterrupt:  # stop the runs going now (and their kernels); they are rerun next time
        for process in list(pool._processes.values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for run, label in busy:  # the other worker's runs are part of this grid too: it is done when they are
        say(f"{label}: waiting for the other worker (up to {wait_s:.0f}s, XFER_LOCK_TIMEOUT)")
        Lock(run_dir(run)).wait(wait_s)
        counts["done" if is_done(run) else "failed" if (run_dir(run) / "error.json").exists() else "skipped"] += 1
    print(f"grid {grid.name}: {counts}", flush=True)
    return counts


def run_looks(plan: Plan) -> dict:
    """Run the grid; with `analysis.sequential`, look by look: the first look's seeds, then the
    primary test on the finished seeds (`xfer.stats.primary`, the report's own rule), and the next
    look's seeds only while some target is undecided. A rerun recomputes each look's
    decision from the finished runs, so it stops where the first run stopped."""
    grid = plan.grid
    seq = grid.analysis.sequential
    if seq is None:
        return run_grid(plan)
    counts: dict = {}
    for k, n in enumerate(seq.looks):
        print(f"look {k + 1} of {len(seq.looks)}: seeds {', '.join(map(str, grid.seeds[:n]))}", flush=True)
        done = run_grid(plan, seeds=grid.seeds[:n])
        counts = {key: counts.get(key, 0) + v for key, v in done.items()}
        if done["failed"] + done["skipped"]:
            print(f"look {k + 1}: runs failed; the sequential test stops here (the report says so)", flush=True)
            break
        line, decided = look_decision(plan)
        print(line, flush=True)
        if decided:
            break
    return counts


def look_decision(plan: Plan) -> tuple[str, bool]:
    """The primary test on the runs finished so far, as one line per target, and whether every
    target has decided (an effect, equivalence or futility): the rule the report applies."""
    from xfer import analysis as A
    from xfer import stats

    out = collect(plan)
    results, info = A.load_results(out)
    if results.empty:
        return "no results yet", False
    res = stats.analyse(A.degradation(results), info, A.load_training(out), exploratory=False)
    table = res["primary"]
    words = []
    for row in table.itertuples():
        what = row.decision if row.status == "tested" else f"untestable ({row.why})"
        est = (f": slope {row.estimate:+.2f} per decade (repeated CI {row.rci_low:+.2f} to {row.rci_high:+.2f}), "
               f"p {row.p:.3g} against the look's boundary {row.boundary_p:.3g}" if row.status == "tested" else "")
        words.append(f"  {row.target_task}: {what}{est}")
    decided = bool(len(table)) and table["decision"].isin(["effect", "equivalent", "futile", "untestable"]).all()
    return "\n".join([f"sequential test after {int(table['n_seeds'].max()) if len(table) else 0} seeds:"] + words), decided


@contextlib.contextmanager
def ctrl_c_ignored():
    """Around starting a worker process: it starts with SIGINT ignored (Python then installs no
    KeyboardInterrupt for it), so a Ctrl-C in the terminal, which reaches every process of the
    foreground group, interrupts the runner alone, and the runner stops the workers; otherwise each
    worker prints a traceback from wherever the signal found it. SIGINT is blocked meanwhile, so
    a Ctrl-C at that instant reaches the runner just after."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers are the main thread's
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def worker_init(warm: bool = True, runner: int | None = None) -> None:
    """A worker process of `run_grid` goes when the runner goes (Linux: killed with it), so a
    killed runner leaves no worker training on; its notebook kernel then stops too (ipykernel
    exits when its parent does). The signal is armed first, then the parent checked: a runner
    killed while this worker was still starting (importing, before it could arm it) is already
    gone, and the worker exits before it takes a run. With `warm`, its kernels are forked warm."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: XFER_RUNNER_PID's check in the kernel still stops the run
        pass
    if runner is not None and os.getppid() != runner:
        os._exit(1)  # not sys.exit: nothing of the pool's machinery may run on for a dead runner
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited so; also for a worker the pool starts to replace one
    import tqdm

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by ctrl_c_ignored; still ignored
    # tqdm's default lock is a multiprocessing one, whose semaphore a worker stopped after a Ctrl-C
    # leaves registered: the resource tracker then warns of it as leaked. Its bars go to the run's log.
    tqdm.tqdm.set_lock(threading.RLock())
    if warm:
        execute.KERNEL_MANAGER = execute.WARM  # read by execute.execute


def measured(runs: dict[str, list[Run]], phases=PHASES) -> dict[str, list[float]]:
    """Seconds each finished run of the grid took, per phase (params.json is written as a run
    starts, metrics.json as it ends): a rerun that adds seeds or sizes starts its ETA from them."""
    took = {}
    for phase in phases:
        for run in runs[phase]:
            start, end = run_dir(run) / "params.json", run_dir(run) / "metrics.json"
            if is_done(run) and start.exists() and end.exists() and end.stat().st_mtime >= start.stat().st_mtime:
                took.setdefault(phase, []).append(end.stat().st_mtime - start.stat().st_mtime)
    return took


def progress(finished: int, total: int, started: float, took: dict, left: dict, jobs: int = 1) -> str:
    """' · 3/6 finished, 0:01:10 elapsed, ETA 0:02:20': the runs still to run (this one included)
    times the mean duration measured in their phase (this grid's runs, finished earlier or now);
    until theirs has one, the mean over the training and evaluation phases measured (the pretrained
    encoder's one-off preparation only when nothing else is), shared among the `jobs` runs at once."""
    def hms(s: float) -> str:
        s = round(s)  # whole seconds first: 59.6 s is 0:01:00, not 0:00:60
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

    line = f" · {finished}/{total} finished, {hms(time.time() - started)} elapsed"
    every = [s for p, v in took.items() if p != "pretrained" for s in v] or [s for v in took.values() for s in v]
    if every:
        line += f", ETA {hms(sum(n * sum(took.get(p, every)) / len(took.get(p, every)) for p, n in left.items()) / jobs)}"
    return line
