"""The grid runner end to end on a tiny grid: papermill phases, skip-when-done, and a kill in
the middle of training that a rerun finishes (failures and corrupt runs: tests/test_faults.py)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
from processes import with_env

from xfer import runner
from xfer.grid import collect, execute, local, plan
from xfer.paths import data_dir, read_json, root, runs_dir


def outputs(runs):
    return {r.id: os.stat(execute.run_dir(r) / "metrics.json").st_mtime_ns
            for rs in runs.values() for r in rs if execute.is_done(r)}


def by_id(runs):
    return {r.id: r for rs in runs.values() for r in rs}


def _kernels_of(runner_pid: int) -> list[int]:
    """The runner's kernels: started as ipykernel_launcher, or forked warm (xfer.kernel) from a
    worker's fork server, which shows the server's command line; the server itself counts too."""
    return [pid for pid, line in with_env(f"XFER_RUNNER_PID={runner_pid}").items()
            if "ipykernel_launcher" in line or "multiprocessing.forkserver" in line]


def _serves_the_curves(path, runs) -> None:
    """`xfer tensorboard` (a real TensorBoard) lists the grid's training runs and their loss."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    tb = subprocess.Popen([sys.executable, "-m", "xfer.runner", "tensorboard", str(path)], cwd=root(),
                          env={**os.environ, "XFER_TB_PORT": str(port)}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)
    try:
        assert f"http://localhost:{port}/" in tb.stdout.readline()
        expected = {f"{r.phase}/{r.id}" for r in runs["intermediate"] + runs["target"]}
        deadline, tags = time.time() + 120, {}
        while time.time() < deadline and set(tags) != expected:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = {k.removesuffix("/."): v for k, v in json.load(r).items()}  # "/.": the run's own folder
            except OSError:
                time.sleep(1)
        assert set(tags) == expected, tags
        assert all("train/loss" in t for t in tags.values())
    finally:
        tb.kill()
        tb.wait()


def test_grid_runs_once_then_skips(finished_micro, monkeypatch):
    """The suite's one end-to-end papermill grid, run once per session (`finished_micro`) and checked
    here; later tests copy its runs folder instead of running the grid again."""
    path = finished_micro.path
    monkeypatch.setenv("XFER_RUNS", str(finished_micro.runs))
    monkeypatch.setenv("XFER_OUTPUT", str(finished_micro.folder))
    # as a user runs it, so the terminal is the one a user sees: per run a start line (grid progress,
    # an ETA once a duration is known) and an end line, one line of scores per evaluation run; the rest (kernel
    # warnings, load reports, bars) in the run's log.txt
    # two runs at once (`-j 2`), each in a worker process of its own with one torch thread
    stdout = finished_micro.stdout
    assert "; 2 runs at once, 1 torch threads each" in stdout
    lines = stdout.splitlines()
    at = {}  # where each phase's first start and first end line is
    for i, line in enumerate(lines):
        at.setdefault(re.sub(r"^\[\d+/6\] (\w+) .*?: (running|done).*", r"\1 \2", line), i)
    # once the pretrained run is done, the intermediate run and the baseline target run side by side
    assert at["target running"] < at["intermediate done"] and at["intermediate running"] < at["target done"], lines
    # pretrained, 1 intermediate, 2 targets, 2 evals
    assert stdout.splitlines()[-1] == "grid micro: {'done': 0, 'ran': 6, 'failed': 0, 'skipped': 0}"
    planned = plan.plan(path)
    runs = planned.runs
    terminal = stdout.splitlines()
    assert len(terminal) <= 6 + 2 + 4 * 6, stdout  # the plan's summary, log hint and counts; 4 a run
    starts = [line for line in terminal if ": running · " in line]
    assert len(starts) == 6 and "0/6 finished" in starts[0] and "ETA" not in starts[0]
    assert all(re.search(r"\d/6 finished, \d+:\d\d:\d\d elapsed, ETA \d+:\d\d:\d\d$", s) for s in starts[1:]), starts
    assert not [line for line in terminal if "WARNING" in line or "LOAD REPORT" in line or "it/s]" in line]
    for run in (r for rs in runs.values() for r in rs):
        log = (execute.run_dir(run) / "log.txt").read_text()
        if run.phase in ("intermediate", "target"):
            assert f"starting from {execute.checkpoint(by_id(runs)[run.upstream])}" in log
        if run.phase == "evaluate":
            scores = json.loads((execute.run_dir(run) / "metrics.json").read_text())["scores"]
            for lang, s in scores.items():
                assert f"{lang}: f1 {s['score']:.1f} (n={s['n_examples']})" in log
            # the terminal: one line of the run's scores, every language in it
            assert f"    {run.id} f1: " + ", ".join(f"{lang} {scores[lang]['score']:.1f}"
                                             for lang in run.params["languages"]) in terminal
    ev = runs["evaluate"][0]
    nb = json.loads((execute.run_dir(ev) / "notebook.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    before = outputs(runs)
    again = local.run_grid(planned, jobs=1)
    assert again["ran"] == 0 and again["done"] == 6
    assert outputs(runs) == before
    out = collect.collect(planned)
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 2 * 3 and set(df["eval_lang"]) == {"en", "yo", "wo"}
    assert set(df["inter_size"]) == {0, 60} and df["score"].between(0, 100).all()
    assert json.loads((out / "grid.json").read_text())["model"]["from_scratch"] is True
    # local data and a scratch encoder: nothing from the hub, and the record says so (xfer.hub)
    assert json.loads((out / "grid.json").read_text())["provenance"]["hub_revisions"] == {}
    assert json.loads((execute.run_dir(ev) / "params.json").read_text())["hub_revisions"] == {}
    train = pd.read_csv(out / "training.csv").set_index("phase")
    assert list(train.index) == ["intermediate", "target", "target"]
    assert (train["steps"] == 4).all() and train["loss_start"].gt(0).all()
    assert sorted(train.loc["target", "upstream"]) == ["panx-sw-60", "pretrained"]
    # every training run logs its curve per step: train_log.csv, and TensorBoard serves the grid's
    for run in runs["intermediate"] + runs["target"]:
        rows = pd.read_csv(execute.run_dir(run) / "train_log.csv")
        assert list(rows["step"]) == [1, 2, 3, 4] and rows[["loss", "lr", "grad_norm"]].gt(0).all().all()
    _serves_the_curves(path, runs)
    # `xfer report` without chromium: exit 0, the HTML, the earlier PDF kept, one line of advice
    # and nothing else on stderr (the report kernel's warnings go to <report_dir>/log.txt)
    (out / "report.pdf").write_bytes(b"%PDF an earlier one")
    rep = subprocess.run([sys.executable, "-m", "xfer.runner", "report", str(path)], cwd=root(), text=True,
                         env={**os.environ, "XFER_CHROMIUM": "no-such-chromium"}, capture_output=True, timeout=600)
    assert rep.returncode == 0, rep.stderr
    assert (out / "index.html").exists() and (out / "report.pdf").read_bytes() == b"%PDF an earlier one"
    assert len(rep.stderr.splitlines()) == 1 and "apt-get install chromium libjs-mathjax" in rep.stderr
    # the report's numbers link into a copy of the runs behind them, inside the report folder
    copy = out / "runs" / "evaluate" / ev.id
    lang, s = next(iter(json.loads((copy / "metrics.json").read_text())["scores"].items()))
    assert f"{lang}: f1 {s['score']:.1f} (n={s['n_examples']})" in (copy / "notebook.html").read_text()
    assert (copy / "metrics.json").read_bytes() == (execute.run_dir(ev) / "metrics.json").read_bytes()
    assert f'href="runs/evaluate/{ev.id}/notebook.html"' in (out / "index.html").read_text()
    assert not list((out / "runs").rglob("checkpoint"))
    # the terminal ends with the report's bottom line
    from xfer.publish import bottom_line

    assert bottom_line(out / "report.ipynb") and rep.stdout.rstrip().endswith(bottom_line(out / "report.ipynb"))
    # the folder moves and publishes as it is: no path of this machine's project, runs or data in any
    # file (run notebooks and params.json copies included), every file world-readable
    machine = {str(p) for p in (root(), root().resolve(), runs_dir(), runs_dir().resolve(), data_dir())}
    files = [f for f in out.rglob("*") if f.is_file()]
    assert len(files) > 10 and any(f.name == "notebook.html" for f in files)
    for f in files:
        text = f.read_bytes().decode(errors="replace")
        assert not [m for m in machine if m in text], (f, [m for m in machine if m in text])
        assert f.stat().st_mode & 0o444 == 0o444, (f, oct(f.stat().st_mode))
    # a later grid's ETA starts from these runs' measured times
    took = local.measured(runs)
    assert {len(took[p]) for p in ("intermediate", "target", "evaluate")} == {1, 2} and \
        all(s > 0 for v in took.values() for s in v)


def test_kill_during_training_then_rerun_finishes_without_redoing(micro_grid):
    path = micro_grid(steps=80)  # long enough to be killed mid-training
    planned = plan.plan(path)
    runs = planned.runs
    inter = runs["intermediate"][0]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "xfer.runner", "run", str(path)], cwd=root(), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = execute.run_dir(inter) / "train_state.pt"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert state.exists(), "training never wrote a resumable state"
    assert _kernels_of(proc.pid), "the runner's notebook kernel should be visible while it trains"
    os.kill(proc.pid, signal.SIGKILL)  # the runner alone, the harder case: its kernel is not told
    proc.wait()
    # the notebook kernel notices and stops instead of training on as an orphan (within a second or two;
    # a worker's fork server still importing its preloads when the runner died goes once it has, so
    # the test gives a loaded machine half a minute)
    deadline = time.time() + 30
    while _kernels_of(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    orphans = _kernels_of(proc.pid)
    for p in orphans:
        os.kill(p, signal.SIGKILL)
    assert not orphans, "an orphan kernel trains on"
    pretrained_done = outputs(runs)
    assert runs["pretrained"][0].id in pretrained_done and inter.id not in pretrained_done
    counts = local.run_grid(planned)
    # what finished before the kill (the pretrained run, and the baseline's target run when its worker was
    # quicker than the intermediate run's first training state) is kept as it was; the rest runs now
    assert counts["failed"] == 0 and counts["done"] == len(pretrained_done) and counts["done"] + counts["ran"] == 6
    after = outputs(runs)
    assert all(after[rid] == files for rid, files in pretrained_done.items())
    nb = (execute.run_dir(inter) / "notebook.ipynb").read_text()
    assert "resuming from step" in nb


FAMILIES = """
extends: micro.yaml
name: families
intermediate.sizes: [0]
intermediate.train: {lr: 1.0e-3, batch_size: 16, max_steps: 2, max_length: 48}
target:
  - {task: xnli, train_task: xnli_derived, language: en, size: 32, split: dev,
     train: {lr: 1.0e-3, batch_size: 16, max_steps: 2, max_length: 64}}
  - {task: xcopa, train_task: copa, language: en, size: 32, split: test,
     train: {lr: 1.0e-3, batch_size: 16, max_steps: 2, max_length: 48}}
  - {task: xquad, train_task: tydiqa, language: en, size: 16, split: test,
     train: {lr: 1.0e-3, batch_size: 8, max_steps: 2, max_length: 128}}
  - {task: tatoeba, split: test}
evaluate: {languages: [de, sw, zh], max_examples: 12}
"""


def test_every_family_through_the_phase_notebooks(micro_grid, tmp_path):
    """NLI, multiple choice, QA and retrieval targets through papermill, into one results table
    (tagging is the micro grid's own target above)."""
    micro_grid()  # the micro grid's model and intermediate corpus, other targets
    path = tmp_path / "families.yaml"
    path.write_text(FAMILIES)
    counts = local.run_grid(plan.plan(path))
    assert counts["failed"] == 0, counts
    df = pd.read_csv(collect.collect(plan.plan(path)) / "results.csv")
    assert set(df["eval_task"]) == {"xnli", "xcopa", "xquad", "tatoeba"}
    for task, langs in {"xnli": {"de", "sw", "zh"}, "xcopa": {"sw", "zh"}, "xquad": {"de", "zh"},
                        "tatoeba": {"de", "sw", "zh"}}.items():
        assert set(df.loc[df["eval_task"] == task, "eval_lang"]) == langs, task
    assert df["score"].between(0, 100).all()
    retrieval = df[df["eval_task"] == "tatoeba"]
    assert (retrieval["target_run"].fillna("") == "").all()  # scored on the encoder, no target training


def test_random_init_control_gets_random_weights(micro_grid, tmp_path):
    """The control's checkpoint has the architecture of the study's encoder and none of its weights."""
    import torch
    from transformers import AutoModel

    path = micro_grid()
    text = path.read_text().replace("name: micro", "name: micro\nrandom_init_control: true")
    text = text.replace("source: scratch", "source: e5\n  num_layers: 1")  # a pretrained source
    path.write_text(text)
    planned = plan.plan(path)
    grid, runs = planned.grid, planned.runs
    main, control = runs["pretrained"]
    for run in (main, control):
        execute.prepare_pretrained(grid, run)
    a, b = (AutoModel.from_pretrained(execute.checkpoint(r)) for r in (main, control))
    assert a.config.to_dict() | {"_name_or_path": ""} == b.config.to_dict() | {"_name_or_path": ""}
    wa, wb = a.state_dict(), b.state_dict()
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert any("encoder.layer.0.attention" in k for k in differ), "the control kept the pretrained weights"
    from xfer.models import e5  # num_layers: 1 keeps the source's first layer, as it was

    source = AutoModel.from_pretrained(e5.checkpoint(), add_pooling_layer=False).state_dict()
    assert a.config.num_hidden_layers == 1 and not any("encoder.layer.1." in k for k in wa)
    key = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(wa[key], source[key])


def test_report_before_any_run_says_what_to_do(micro_grid, capfd):
    """No evaluation finished: one line naming the next step, not pandas' EmptyDataError."""
    code = runner.main(["report", str(micro_grid())])
    out, err = capfd.readouterr()
    assert code == 1
    assert err.splitlines() == ["error: no results yet: run `make run` (or `xfer run <params>`) first"]
    assert "Traceback" not in out + err


def test_a_sequential_grid_stops_at_the_look_that_decides(micro_grid, capsys, monkeypatch):
    """Looks after 2 and 3 seeds; a smallest effect of interest so wide that the first look already
    shows equivalence: the runner stops there, seed 3 never runs, and the report lists no failure.
    The HTML is checked; the PDF is left out (printing it is tested in test_report.py and test_faults.py)."""
    monkeypatch.setenv("XFER_CHROMIUM", "no-such-chromium")
    path = micro_grid()
    path.write_text(path.read_text().replace("seeds: [1]", "seeds: [1, 2, 3]")
                    .replace("sizes: [0, 60]", "sizes: [0, 30, 60]")
                    .replace("languages: [en, yo, wo]", "languages: [en, yo, fr]")  # a low and an other language
                    + "analysis:\n  primary: {smallest_effect: 100}\n  sequential: {looks: [2, 3]}\n")
    assert runner.main(["all", str(path)]) == 0
    out = capsys.readouterr().out
    assert "look 1 of 2: seeds 1, 2" in out and "udpos: equivalent" in out and "look 2 of 2" not in out
    planned = plan.plan(path)
    grid, runs = planned.grid, planned.runs
    assert {r.params["seed"] for r in runs["intermediate"] if execute.is_done(r)} == {1, 2}
    assert not any(execute.run_dir(r).exists() for r in runs["intermediate"] if r.params["seed"] == 3)
    report = read_json(grid.report_path() / "grid.json")
    assert report["failures"] == []
    html = (grid.report_path() / "index.html").read_text()
    assert "equivalent after 2 seeds" in html and "The sequential test look by look" in html
    assert "Seeds finished" in html  # the look table in labelled rows


def test_eta_uses_each_phase_s_own_time_and_not_the_one_off_conversion():
    """With intermediate runs timed at 10 s and the pretrained conversion at 100 s, six runs left
    in unmeasured phases take 6 × 10 s, not 6 × the mean of both; by phase once each is measured."""
    start = time.time()
    left = {"intermediate": 2, "target": 2, "evaluate": 2}
    assert local.progress(1, 7, start, {"pretrained": [100.0], "intermediate": [10.0]}, left).endswith("ETA 0:01:00")
    took = {"pretrained": [100.0], "intermediate": [10.0], "target": [5.0], "evaluate": [2.0]}
    assert local.progress(1, 7, start, took, left, jobs=2).endswith("ETA 0:00:17")
    assert local.progress(1, 7, start, {"pretrained": [100.0]}, left).endswith("ETA 0:10:00")  # nothing else yet


def test_xfers_processes_skip_jsonschemas_iri_grammar_and_importing_xfer_does_not():
    """A process of xfer's own (`without_iri_grammar`, then papermill) imports neither
    rfc3987_syntax nor its parser library, and every shipped notebook still validates; a
    researcher's `import xfer` followed by nbformat leaves jsonschema as installed."""
    import importlib.util

    notebooks = sorted(str(p) for p in (root() / "notebooks").glob("*.ipynb"))
    probe = ("import sys; {}; import papermill, nbformat; [nbformat.validate(nbformat.read(p, as_version=4)) "
             "for p in sys.argv[1:]]; print(sys.modules.get('rfc3987_syntax') is not None, 'lark' in sys.modules)")
    ours = subprocess.run([sys.executable, "-c", probe.format(
        "from xfer.grid.execute import without_iri_grammar; without_iri_grammar()"), *notebooks],
        capture_output=True, text=True, check=True)
    assert ours.stdout.split() == ["False", "False"], ours.stderr
    if importlib.util.find_spec("rfc3987_syntax") is None:
        return  # nothing to leave whole
    theirs = subprocess.run([sys.executable, "-c", probe.format("import xfer.grid.execute"), *notebooks],
                            capture_output=True, text=True, check=True)
    assert theirs.stdout.split() == ["True", "True"], theirs.stderr
