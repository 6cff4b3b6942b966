"""The grid runner: validate a params file against the data, expand it into runs, execute each
phase notebook with papermill, and collect the results table the report reads.

Every run lives in `runs/<phase>/<id>/` (params.json, notebook.ipynb, metrics.json, checkpoint/).
`metrics.json` is written last and atomically, with the sha256 of the run's checkpoint files: a
run is done when it verifies (`xfer.record`), and a rerun skips it; a corrupt one is moved aside
to `<id>.corrupt-<UTC time>` and rerun. A failed run keeps its executed notebook (with the
traceback) and error.json; the grid goes on without its downstream runs, the report lists it,
and the command exits 1. Usage:

    python -m xfer.runner plan   params/smoke.yaml   # validate, print the grid, train nothing
    python -m xfer.runner run    params/smoke.yaml   # execute what is not done
    python -m xfer.runner report params/smoke.yaml   # collect results, render HTML + PDF

This module is the command (`main`, one small function per output) and the defaults of a phase
notebook opened by hand (`interactive`): the ways a person starts the grid. The grid itself is
`xfer.grid`: plan (validate and expand), execute (one run), local (the local scheduler), collect
(results and report); `xfer.grid.slurm` is the Slurm executor.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from xfer.config import ConfigError, Grid, Run, split_overrides
from xfer.grid.collect import NoResults, report
from xfer.grid.execute import (GridStopped, checkpoint, classify, is_done, prepare_pretrained, run_dir,
                               without_iri_grammar)
from xfer.grid.local import run_looks
from xfer.grid.plan import PHASES, Plan, plan
from xfer.paths import read_json, runs_dir
from xfer.tasks import get_task


def summary(p: Plan) -> str:
    lines = [f"grid {p.grid.name}: model {p.grid.model.source}:{p.grid.model.name}"]
    for phase in PHASES:
        done = sum(is_done(r) for r in p.runs[phase])
        lines.append(f"  {phase:<12} {len(p.runs[phase]):>4} runs ({done} done)")
    for task, langs in p.data["languages"].items():
        lines.append(f"  zero-shot {task} in {len(langs)} languages: {' '.join(langs)}")
    return "\n".join(lines)


def longest_sentences(runs: dict[str, list[Run]], window: int = 512) -> str:
    """Per tagging evaluation file, its longest sentence among the examples the grid scores, in
    subwords of the grid's tokenizer (in words until its pretrained step has run), one line per
    task, and a line naming each file whose longest exceeds the model's `window`: such a sentence
    is scored in windows (`TaggingTask.windows`), said here before any run."""
    from xfer.data import evaluation_set
    from xfer.models import load_tokenizer

    pre = runs["pretrained"][0]
    tokenizer = load_tokenizer(checkpoint(pre)) if is_done(pre) else None
    unit = "subwords" if tokenizer is not None else "words (subwords counted once the pretrained step has run)"
    lines, seen = [], set()
    for ev in runs["evaluate"]:
        task, split = get_task(ev.params["task"]), ev.params["split"]
        if task.family != "tagging" or task.name in seen:
            continue
        seen.add(task.name)
        if not task.reads_local():  # plan reads no hub data: the run names an over-long sentence in its log
            lines.append(f"  longest {task.name} {split} sentence: not measured (hub data is read by the runs)")
            continue
        longest, over = {}, []
        for lang in ev.params["languages"]:
            words = [ex["tokens"] for ex in evaluation_set(task.load(lang, split), ev.params.get("max_examples"),
                                                           ev.params.get("sample_seed", 0))]
            longest[lang] = max(len(ids) for ids in tokenizer(words, is_split_into_words=True)["input_ids"]) \
                if tokenizer is not None else max(map(len, words))
            if tokenizer is not None and longest[lang] > window:
                over.append(f"  {task.path(lang, split) if task.reads_local() else f'{task.name} {lang} {split}'}: "
                            f"a sentence of {longest[lang]} subwords, over the {window}-subword window: scored in windows")
        lines.append(f"  longest {task.name} {split} sentence in {unit}: "
                     + ", ".join(f"{lang} {n}" for lang, n in longest.items()))
        lines += over
    return "\n".join(lines)


EXAMPLES = """examples:
  xfer init my-study                                   a project folder: the presets, a README of the commands, a Makefile
  xfer plan smoke                                      validate, print runs, GPU hours and the primary test's MDE
  xfer all params/cpu.yaml --set seeds=[1]             run what is not done, then render the report
  xfer run params/study.yaml --executor slurm          submit to Slurm and wait (--detach: return at once)
  xfer status params/study.yaml                        done / running / pending / failed per phase
  xfer tensorboard params/cpu.yaml                     TensorBoard on the grid's training curves
  XFER_DATA_DIR=hub xfer fetch params/study.yaml       download a grid's hub datasets and model (login node)"""


def status_table(grid: Grid, runs: dict[str, list[Run]]) -> str:
    """Per phase, how many runs are done, failed, or still to run, and where each failure's notebook is."""
    lines = [f"  {'phase':<12} {'done':>5} {'failed':>7} {'to run':>7}"]
    failed = []
    for phase in PHASES:
        states = [classify(r) for r in runs[phase]]  # the rule `make status` on Slurm applies too
        failed += [(phase, r) for r, s in zip(runs[phase], states) if s == "failed"]
        lines.append(f"  {phase:<12} {states.count('done'):>5} {states.count('failed'):>7} {states.count('to run'):>7}")
    lines += [f"  failed: {p} {r.id}: {run_dir(r) / 'notebook.ipynb'}" for p, r in failed]
    return "\n".join(lines)


def tensorboard_logdirs(runs: dict[str, list[Run]]) -> str:
    """TensorBoard's --logdir_spec for a grid: each training run's `tb/` under the name
    `<phase>/<run id>`, so a grid's curves sit side by side and no other grid's appear."""
    return ",".join(f"{phase}/{r.id}:{run_dir(r) / 'tb'}" for phase in ("intermediate", "target")
                    for r in runs[phase] if (run_dir(r) / "tb").is_dir())


def fetch(p: Plan) -> None:
    """Download every hub dataset and the hub model a grid reads into the Hugging Face cache, so
    compute nodes without internet (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1) find them there."""
    grid = p.grid
    for task_name, lang, split in p.data["files"]:
        task = get_task(task_name)
        where = "local file" if task.reads_local() else "hub"
        print(f"  {task_name} {lang} {split}: {len(task.load(lang, split))} examples ({where})", flush=True)
    if grid.model.source == "hub":
        from transformers import AutoModel, AutoTokenizer

        AutoTokenizer.from_pretrained(grid.model.name)
        AutoModel.from_pretrained(grid.model.name)
        print(f"  model {grid.model.name}: in the cache", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="xfer", description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["plan", "run", "report", "all", "status", "fetch", "tensorboard", "init"],
                    help="plan: validate and print; run: execute what is not done; report: render; all: run then "
                         "report; status: progress per phase; fetch: download hub data and model; tensorboard: "
                         "serve the grid's training curves (port XFER_TB_PORT, default 6006); init [DIR]: write a "
                         "starting project (presets, README, Makefile) into DIR (default: here)")
    ap.add_argument("params", nargs="?", help="a params file (params/my.yaml) or a preset's name (cpu, smoke, ...)")
    ap.add_argument("--root", metavar="DIR", help="the project folder: params/, runs/, report/, .cache/ (default: "
                    "XFER_ROOT, else the current folder; in a checkout, the checkout)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set intermediate.sizes=[0,100] --set seeds=[1] (YAML values); "
                         "the environment's XFER_SET holds more, blank-separated: 'seeds=[1, 2] target.size=50'")
    ap.add_argument("--executor", choices=["local", "slurm"], default=os.environ.get("XFER_EXECUTOR") or None,
                    help="where runs execute (default: the grid's executor.kind; make: EXECUTOR=slurm)")
    ap.add_argument("-j", "--jobs", default=os.environ.get("XFER_JOBS") or None, metavar="N",
                    help="local executor: runs at once, 1-64 or auto (default: the grid's executor.jobs, auto: one "
                         "per core up to 4 on a CPU machine, one with a GPU; make: JOBS=N)")
    ap.add_argument("--detach", action="store_true", default=bool(os.environ.get("XFER_DETACH")),
                    help="with the slurm executor: return right after submitting (make: DETACH=1)")
    args = ap.parse_args(argv)
    without_iri_grammar()  # the report, status and every other command that reads a notebook
    if args.command == "init":
        from xfer.project import init

        return init(args.params or ".")
    if args.params is None:
        ap.error("the following arguments are required: params")
    if args.root:
        if not Path(args.root).is_dir():
            print(f"error: --root: {args.root} is not a folder; allowed: an existing project folder "
                  "(`xfer init DIR` writes one)", file=sys.stderr)
            return 2
        os.environ["XFER_ROOT"] = str(Path(args.root).resolve())  # the notebook kernels and Slurm jobs inherit it
    # `make ... SET=...` passes its overrides here, in the environment: no shell parses them again
    args.overrides = split_overrides(os.environ.get("XFER_SET", "")) + args.overrides
    if args.executor:
        args.overrides.append(f"executor.kind={args.executor}")
    if args.jobs:
        args.overrides.append(f"executor.jobs={args.jobs}")
    try:
        if args.command == "status" and args.executor != "local":
            from xfer.grid import slurm as cluster

            if cluster.on_record(args.params, args.overrides):  # Slurm jobs on record: no EXECUTOR flag needed
                try:
                    table = cluster.status(plan(args.params, args.overrides))
                except ConfigError as e:  # a damaged data file: the runs on record, with a note
                    table = cluster.status_on_record(args.params, args.overrides, e)
                print(cluster.describe(table))
                return 0
        planned = plan(args.params, args.overrides)  # once: every step below takes it
        grid, runs = planned.grid, planned.runs
    except ConfigError as e:
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr)
        return 2
    slurm = grid.executor.kind == "slurm"
    if args.command == "status":
        print(status_table(grid, runs))
        return 0
    if args.command == "tensorboard":
        logdirs = tensorboard_logdirs(runs)
        if not logdirs:
            print(f"no training curves yet for grid {grid.name}: run `make run PARAMS={args.params}`", file=sys.stderr)
            return 1
        port = os.environ.get("XFER_TB_PORT", "6006")
        print(f"TensorBoard for grid {grid.name} ({logdirs.count(',') + 1} runs): http://localhost:{port}/", flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "tensorboard.main", "--logdir_spec", logdirs,
                                  "--port", port, "--bind_all" if os.environ.get("XFER_TB_BIND_ALL") else "--host=localhost"])
    print(summary(planned), flush=True)
    if args.command == "fetch":
        fetch(planned)
        return 0
    if args.command == "plan":
        from xfer.bench import describe_estimate, estimate_gpu_hours, gpu_samples_per_second
        from xfer.stats import plan_lines

        hours = None
        try:
            print(describe_estimate(grid, runs), flush=True)
            hours = estimate_gpu_hours(runs, gpu_samples_per_second(grid.model)[0])["total"]
        except Exception as e:  # noqa: BLE001 - corpus sizes of hub data need the hub
            print(f"  GPU hours: not estimated ({type(e).__name__}: {str(e)[:200]})", flush=True)
        print(plan_lines(grid, runs, hours), flush=True)
        if longest := longest_sentences(runs):
            print(longest, flush=True)
        if slurm:
            from xfer.grid.slurm import describe_plan

            print(describe_plan(planned), flush=True)
    error = None
    if args.command in ("run", "all") and slurm:
        from xfer.grid import slurm as cluster

        try:
            submitted = cluster.submit(planned)
        except cluster.SubmitError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"submitted {len(submitted)} runs to Slurm; `make status PARAMS={args.params}` shows them", flush=True)
        if args.detach:
            return 0
        table = cluster.wait(planned)
        print(cluster.describe(table), flush=True)
        failed = sum(len(t["failed"]) for t in table.values())
        if failed:
            error = f"{failed} runs failed on Slurm; the report lists them"
    elif args.command in ("run", "all"):
        try:
            counts = run_looks(planned)
        except GridStopped as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; every finished run is kept
            finished = sum(is_done(r) for p in PHASES for r in runs[p])
            print(f"\ninterrupted: {finished} of {sum(map(len, runs.values()))} runs finished; the same command "
                  "resumes the grid, skipping them", file=sys.stderr)
            return 130
        if counts["failed"] + counts["skipped"]:
            error = f"{counts['failed']} runs failed and {counts['skipped']} were skipped; the report lists them"
    if args.command in ("report", "all"):  # the report renders whatever failed, then the exit code says so
        try:
            failures = read_json(report(planned) / "grid.json")["failures"]
        except NoResults as e:
            failures, error = [], "; ".join(filter(None, (error, str(e))))
        except OSError as e:  # a full disk or a read-only report folder: which file, and why
            print(f"error: {e.filename or ''}: {e.strerror or e}; the report was not replaced", file=sys.stderr)
            return 1
        if failures and not error:
            error = f"{len(failures)} runs failed or did not run; the report lists them"
    if error:
        print(f"error: {error}", file=sys.stderr)
    return 1 if error else 0


def interactive(phase: str, params: dict | None, upstream: str | None, folder: str | None,
                preset: str = "params/smoke.yaml") -> tuple[dict, str, Path]:
    """Defaults for a phase notebook opened by hand: the first run of that phase in `preset`,
    starting from the checkpoint the previous notebook left in runs/interactive/ (or the
    pretrained encoder), writing to runs/interactive/<phase>/. The runner always passes all three."""
    if params is not None and upstream is not None and folder is not None:
        return params, upstream, Path(folder)
    planned = plan(preset)
    grid, runs, pre = planned.grid, planned.runs, planned.pretrained
    if not is_done(pre):
        prepare_pretrained(grid, pre)
    scratch = runs_dir() / "interactive"
    previous = {"intermediate": None, "target": scratch / "intermediate", "evaluate": scratch / "target"}[phase]
    if upstream is None:
        if previous is not None and (previous / "checkpoint").exists():
            upstream = str(previous / "checkpoint")
        elif phase == "evaluate":
            raise FileNotFoundError("no target model yet: run notebooks/02_target.ipynb first (or pass `upstream`)")
        else:
            upstream = checkpoint(pre)
    return params or runs[phase][0].params, upstream, Path(folder or scratch / phase)


if __name__ == "__main__":
    sys.exit(main())
