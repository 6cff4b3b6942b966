"""Faults a careful user or a flaky cluster meets, injected into a finished micro grid (issue 11,
runtime half): every corrupt artefact is found, moved aside and rerun to byte-identical results;
a diverged run fails loudly, stops its downstream and makes the exit code non-zero; a full disk
(a real tmpfs) stops the grid in one line with nothing half-written; a copied or moved runs
folder is complete without recomputing; a second worker waits for an upstream another one holds.

One finished grid is shared (the session's, conftest.py); each test works on its own copy of its runs folder."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import MICRO
from processes import descendants, gone_within
from xfer import runner
from xfer.grid import collect, execute, local, plan
from xfer.paths import root


def micro(folder, **replace):
    path = folder / "micro.yaml"
    text = textwrap.dedent(MICRO.format(report=folder / "report", steps=4))
    for old, new in replace.items():
        text = text.replace(old, new)
    path.write_text(text)
    return path


def roles(runs) -> dict:
    """The micro grid's six runs by role."""
    pre, inter = runs["pretrained"][0], runs["intermediate"][0]
    t_inter, t_base = (next(t for t in runs["target"] if t.upstream == u.id) for u in (inter, pre))
    e_inter, e_base = (next(e for e in runs["evaluate"] if e.upstream == t.id) for t in (t_inter, t_base))
    return {"pre": pre, "inter": inter, "t_inter": t_inter, "t_base": t_base, "e_inter": e_inter, "e_base": e_base}


def metrics_mtimes(runs) -> dict:
    return {r.id: os.stat(execute.run_dir(r) / "metrics.json").st_mtime_ns for rs in runs.values() for r in rs}


@pytest.fixture(autouse=True, scope="module")
def output_in_tmp(tmp_path_factory):
    """These grids write their reports in pytest's folders, outside the project: allow that."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XFER_OUTPUT", str(tmp_path_factory.getbasetemp()))
        yield


@pytest.fixture(scope="module")
def baseline(finished_micro):
    """The micro grid as it finished undisturbed (the session's real run, conftest.py): its runs
    folder and its results.csv bytes. Tests change only their own copies of it (`grid`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XFER_RUNS", str(finished_micro.runs))
        results = (collect.collect(plan.plan(finished_micro.path)) / "results.csv").read_bytes()
    return finished_micro.runs, results


@pytest.fixture
def grid(baseline, tmp_path, monkeypatch):
    """A private copy of the finished grid (mtimes kept): its params file and its runs by role."""
    shutil.copytree(baseline[0], tmp_path / "runs")
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs"))
    path = micro(tmp_path)
    return path, roles(plan.plan(path).runs)


def zero(path, n, keep_mtime=False):
    """n zero bytes written over the middle of a file, in place (its size unchanged)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 3)
        f.write(bytes(n))
    if keep_mtime:  # bit rot: the file changed, its size and mtime did not
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def test_every_corrupt_artefact_is_moved_aside_and_rerun(grid, baseline, capfd):  # capfd: runs going at once print from worker processes
    path, r = grid
    d = {k: execute.run_dir(run) for k, run in r.items()}
    # the faults, one per run
    zero(d["pre"] / "checkpoint" / "model.safetensors", 4096, keep_mtime=True)
    zero(d["t_base"] / "checkpoint" / "model.safetensors", 1 << 20)  # 1 MB zeroed in a finished target checkpoint
    truncate(d["t_inter"] / "checkpoint" / "model.safetensors")
    truncate(d["e_base"] / "metrics.json")
    (d["e_inter"] / "metrics.json").write_text("")
    # the intermediate run was killed mid-training, leaving a truncated training state
    (d["inter"] / "metrics.json").unlink()
    buf = io.BytesIO()
    torch.save({"step": 2, "losses": [2.0, 1.9], "model": {"w": torch.zeros(1000)}}, buf)
    (d["inter"] / "train_state.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    recorded = json.loads((baseline[0] / "intermediate" / r["inter"].id / "metrics.json").read_text())["artefacts"]

    # the cheap check trusts an unchanged size and mtime; the full one, run on an upstream about to be used, does not
    assert execute.is_done(r["pre"]) and not execute.is_done(r["pre"], full=True)
    counts = local.run_grid(plan.plan(path))
    out = capfd.readouterr().out
    assert counts == {"done": 0, "ran": 6, "failed": 0, "skipped": 0}, out
    expected = {"pre": ("checkpoint/model.safetensors", "sha256 differs from the one"),
                "t_base": ("checkpoint/model.safetensors", "sha256 differs from the one"),
                "t_inter": ("checkpoint/model.safetensors", " bytes, "),
                "e_base": ("metrics.json", "not valid JSON"), "e_inter": ("metrics.json", "not valid JSON")}
    for role, (name, reason) in expected.items():
        folder = d[role]
        lines = [line for line in out.splitlines() if f"{folder.name}: corrupt (" in line]
        assert len(lines) == 1, (role, out)  # one line: what, which file, where it went
        assert f"{folder / name}: " in lines[0] and reason in lines[0], lines[0]
        aside = [p for p in folder.parent.iterdir() if p.name.startswith(f"{folder.name}.corrupt-")]
        assert len(aside) == 1 and aside[0].name in lines[0], role
    assert "corrupt" not in " ".join(line for line in out.splitlines() if r["inter"].id + ":" in line)
    nb = (d["inter"] / "notebook.ipynb").read_text()
    assert "unreadable training state" in nb and "restarting this run from step 0" in nb
    assert not (d["inter"] / "train_state.pt").exists()
    # restarted from step 0, the intermediate run left exactly the checkpoint of the undisturbed run
    assert json.loads((d["inter"] / "metrics.json").read_text())["artefacts"] == recorded
    assert (collect.collect(plan.plan(path)) / "results.csv").read_bytes() == baseline[1]


def test_diverged_training_fails_loudly_and_stops_its_downstream(tmp_path, monkeypatch, data, capfd):
    """A real non-finite loss (a NaN weight in the local checkpoint the grid starts from, so no
    setting has to be out of bounds): both training runs fail at step 1, naming it; their
    evaluations never start; the report's failures list all four; `run` exits 1."""
    from safetensors.torch import load_file, save_file

    from xfer.config import ModelConfig
    from xfer.models import build_scratch

    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs"))
    src = build_scratch(ModelConfig(source="scratch", name="t", scratch={"hidden_size": 32, "num_layers": 1,
                                                                        "num_heads": 2, "intermediate_size": 64}),
                        tmp_path / "broken-model")
    weights = load_file(src / "model.safetensors")
    key = next(k for k in weights if k.endswith("LayerNorm.weight"))
    weights[key][0] = float("nan")
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    path = micro(tmp_path, **{"source: scratch": "source: local", "name: tiny": f"name: {src}"})

    assert runner.main(["run", str(path)]) == 1
    out, err = capfd.readouterr()
    assert "error: 2 runs failed and 3 were skipped" in err
    r = roles(plan.plan(path).runs)
    for role in ("inter", "t_base"):  # the baseline target still ran after the intermediate failed
        folder = execute.run_dir(r[role])
        error = json.loads((folder / "error.json").read_text())["error"]
        assert "FloatingPointError: training diverged at step 1/4: loss nan" in error, error
        assert "diverged at step 1/4" in (folder / "notebook.ipynb").read_text()  # with its traceback
        assert not (folder / "metrics.json").exists() and not execute.is_done(r[role])
    for role in ("t_inter", "e_base", "e_inter"):  # downstream of a failure: not started
        assert not execute.run_dir(r[role]).exists(), role
    failures = {f["run_id"]: f["error"] for f in json.loads((collect.collect(plan.plan(path)) / "grid.json").read_text())["failures"]}
    assert set(failures) == {r[k].id for k in ("inter", "t_base", "t_inter", "e_base", "e_inter")}
    assert failures[r["e_base"].id] == f"not run: upstream run {r['t_base'].id} did not finish"


def test_disk_full_while_a_run_fails_stops_the_grid_in_one_line(baseline, tmp_path):
    """A real full disk: a tmpfs (in a user and mount namespace, so no root is needed) holding the
    runs folder, filled up before the intermediate run starts. Writing its params fails, then its
    error record fails: one line naming the folder and the free space, exit 1, nothing half-written.
    Then, with 600 KB free, the run fails inside its notebook (training state, notebook saves): it
    is recorded as failed, and again no file is left half-written."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode:
        pytest.skip("no user/mount namespaces here to mount a small tmpfs")
    runs, _ = baseline
    disk, after = tmp_path / "disk", tmp_path / "after"
    disk.mkdir()
    path = micro(tmp_path)
    pre = next(p for p in (runs / "pretrained").iterdir() if p.is_dir()).name
    run = f"XFER_RUNS={disk}/runs {sys.executable} -m xfer.runner run {path}"
    script = textwrap.dedent(f"""\
        mount -t tmpfs -o size=32m tmpfs {disk} || exit 99
        mkdir -p {disk}/runs/pretrained && cp -a {runs}/pretrained/{pre} {disk}/runs/pretrained/
        dd if=/dev/zero of={disk}/filler bs=64k 2>/dev/null  # fails when the disk is full
        {run} >{tmp_path}/stdout 2>{tmp_path}/stderr
        echo $? >{tmp_path}/rc
        cp -a {disk}/runs {after}
        truncate -s -600K {disk}/filler
        {run} --set 'intermediate.sizes=[60]' >{tmp_path}/stdout2 2>{tmp_path}/stderr2  # one training run
        echo $? >{tmp_path}/rc2
        cp -a {disk}/runs {after}2
        """)
    subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=root(), check=True)
    stderr = (tmp_path / "stderr").read_text()
    assert (tmp_path / "rc").read_text().strip() == "1", stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    # the intermediate run and the baseline's target run are both ready at once: with two workers
    # (`jobs: auto` on 2 cores) either may be the one whose error record fails first
    assert re.search(rf"{disk}/runs/(intermediate|target)/", errors[0]) and "No space left on device" in errors[0]
    assert "MiB free there); the grid stops" in errors[0]
    started = [p for phase in ("intermediate", "target") if (after / phase).is_dir()
               for p in (after / phase).iterdir() if p.is_dir()]
    # no params, no error record, no notebook: only the run's log, which could not get a byte either
    assert started and all([q.name for q in p.iterdir()] in ([], ["log.txt"]) for p in started), started

    stderr2, stdout2 = (tmp_path / "stderr2").read_text(), (tmp_path / "stdout2").read_text()
    assert (tmp_path / "rc2").read_text().strip() == "1" and "Traceback" not in stderr2, stderr2
    assert len([line for line in stderr2.splitlines() if line.startswith("error:")]) == 1, stderr2
    assert "No space left on device" in stdout2 + stderr2
    for folder in (after, tmp_path / "after2"):
        for p in (p for p in folder.rglob("*") if p.is_file()):  # every JSON and notebook parses, no temp file
            if p.suffix in (".json", ".ipynb"):
                json.loads(p.read_text())
            assert not p.name.endswith(".tmp") and (not p.name.startswith(".") or p.name == ".verified.json"
                                                    or p.name.endswith(".lock")), p


def test_copied_and_moved_runs_folder_is_complete_without_recomputing(baseline, tmp_path, monkeypatch):
    runs, results = baseline
    original, copy, moved = tmp_path / "original", tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(runs, original)
    shutil.copytree(original, copy, copy_function=shutil.copy)  # mtimes not kept: each file is hashed once
    original.rename(tmp_path / "gone")  # whatever still read the original would now fail
    path = micro(tmp_path)
    for folder in (copy, moved):
        if folder == moved:
            copy.rename(moved)
        monkeypatch.setenv("XFER_RUNS", str(folder))
        planned = plan.plan(path)
        runs_ = planned.runs
        before = metrics_mtimes(runs_)
        assert local.run_grid(planned) == {"done": 6, "ran": 0, "failed": 0, "skipped": 0}
        assert metrics_mtimes(runs_) == before  # nothing recomputed
        r = roles(runs_)
        for role in ("pre", "inter", "t_inter", "t_base"):
            assert execute.checkpoint(r[role]) == str(execute.run_dir(r[role]) / "checkpoint")
        assert (collect.collect(planned) / "results.csv").read_bytes() == results
    # a record written before paths were relative (absolute checkpoint, no artefacts) still counts
    # as done, and is read from this runs folder, not from where it was written
    m = execute.run_dir(r["inter"]) / "metrics.json"
    legacy = {k: v for k, v in json.loads(m.read_text()).items() if k != "artefacts"}
    legacy["checkpoint"] = str(tmp_path / "gone" / "intermediate" / r["inter"].id / "checkpoint")
    m.write_text(json.dumps(legacy))
    assert execute.is_done(r["inter"]) and execute.checkpoint(r["inter"]) == str(execute.run_dir(r["inter"]) / "checkpoint")


HOLD = """
import shutil, sys
from pathlib import Path
from xfer.grid.execute import Lock
folder, finished = Path(sys.argv[1]), Path(sys.argv[2])
lock = Lock(folder)
assert lock.acquire()
print("holding", flush=True)
sys.stdin.readline()  # until the test says so
shutil.move(finished, folder)  # the run finishes as worker A's training would leave it
lock.release()
"""


def test_second_worker_waits_for_an_upstream_another_worker_holds(grid, baseline, tmp_path):
    """Worker A holds the target run on the intermediate (not finished yet, its evaluation not
    started). Worker B waits for it, with a message, then runs the evaluation; with a short
    XFER_LOCK_TIMEOUT it gives up on that evaluation instead, says why and exits 1."""
    path, r = grid
    t, e = execute.run_dir(r["t_inter"]), execute.run_dir(r["e_inter"])
    shutil.move(t, tmp_path / "finished")
    shutil.rmtree(e)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(t), str(tmp_path / "finished")], cwd=root(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        cmd = [sys.executable, "-m", "xfer.runner", "run", str(path)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        impatient = subprocess.run(cmd, cwd=root(), env=dict(env, XFER_LOCK_TIMEOUT="2"), capture_output=True,
                                   text=True, timeout=300)
        assert impatient.returncode == 1, impatient.stdout + impatient.stderr
        assert f"skipped, upstream run {r['t_inter'].id} still held by another worker after 2s" in impatient.stdout
        assert not e.exists()
        worker = subprocess.Popen(cmd, cwd=root(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        for line in worker.stdout:
            seen.append(line)
            if f"waiting for another worker to finish upstream {r['t_inter'].id}" in line:
                holder.stdin.write("go\n")
                holder.stdin.flush()
        assert worker.wait(timeout=300) == 0, "".join(seen)
    finally:
        holder.kill()
    out = "".join(seen)
    assert f"{r['t_inter'].id}: another worker holds it" in out
    assert "{'done': 5, 'ran': 1, 'failed': 0, 'skipped': 0}" in out  # the evaluation ran, nothing else
    assert (collect.collect(plan.plan(path)) / "results.csv").read_bytes() == baseline[1]


def test_a_kill_between_metrics_and_state_cleanup_leaves_a_done_run(grid):
    """train_state.pt goes only after metrics.json is written: a run killed in between is done
    (not retrained from step 0), and the rerun removes the leftover state."""
    path, r = grid
    state = execute.run_dir(r["inter"]) / "train_state.pt"
    state.write_bytes(b"left by a kill")
    assert local.run_grid(plan.plan(path)) == {"done": 6, "ran": 0, "failed": 0, "skipped": 0}
    assert not state.exists()


def test_write_json_leaves_no_temp_file_when_writing_fails(tmp_path):
    from xfer.paths import write_json

    target = tmp_path / "metrics.json"
    write_json(target, {"score": 1.0})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(target, {"score": 2.0, "bad": object()})  # fails halfway through the dump
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert json.loads(target.read_text()) == {"score": 1.0}  # the old file, whole


def test_a_lock_whose_holder_was_killed_is_free_at_once(grid, tmp_path):
    """The OS drops a dead worker's lock: no stale lock file to take over, no race on reading it."""
    path, r = grid
    folder = execute.run_dir(r["inter"])
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(tmp_path / "unused")], cwd=root(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    assert not execute.Lock(folder).acquire()
    holder.kill()
    holder.wait()
    lock = execute.Lock(folder)
    assert lock.acquire()
    lock.release()


# ----------------------------------------------------------------------------- issue 23: trust the record


def registration_text(path, overrides=()):
    """The first page's pre-registration line for the grid as `collect` records it in grid.json."""
    from xfer import report

    grid_json = json.loads((collect.collect(plan.plan(path, list(overrides))) / "grid.json").read_text())
    return report.registered(None, grid_json), grid_json["preregistration"]


def test_preregistration_is_bound_to_the_runs(grid, tmp_path):
    """The record is the runs' (written when the first run started), not the report folder's: a
    new report_dir finds it; a deleted, rewritten or corrupt one is said to be so, never 'before
    the first run', and collecting the report still works."""
    path, r = grid
    text, reg = registration_text(path)
    assert reg["finished"] == 0 and "before the first run" in text and "are those registered" in text
    for role in ("e_base", "e_inter"):  # each evaluation records the plan it was started under
        assert json.loads((execute.run_dir(r[role]) / "params.json").read_text())["preregistration"] == {
            "hash": reg["hash"], "time": reg["time"]}
    # a changed plan under a new report folder: no file edited, nothing deleted
    changed = [f"report_dir={tmp_path / 'fresh-report'}", "low_resource=either", "analysis.primary.smallest_effect=1"]
    text, again = registration_text(path, changed)
    assert again == reg and "changed after the runs began" in text and "low_resource, analysis" in text
    # the record deleted after every run finished, then the plan changed
    record = Path(reg["path"])
    record.unlink()
    text, new = registration_text(path, changed)
    assert new["finished"] == 2 and new["time"] >= reg["time"], new
    assert "deleted or rewritten after the runs began" in text and "differs from the runs' one" in text
    assert "before the first run" not in text
    # ... and with the runs' own record gone too (runs from before it was kept): the count says it
    for role in ("e_base", "e_inter"):
        p = execute.run_dir(r[role]) / "params.json"
        p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "preregistration"}))
    text, _ = registration_text(path, changed)
    assert "after 2 of the grid's 2 evaluation runs had finished" in text and "before the first run" not in text
    # a corrupt record: one sentence, the report still collected, the damaged file left for inspection
    record.write_text('{"hash": "abc", "ti')
    text, bad = registration_text(path)
    assert "no usable record" in text and "not valid JSON" in text and "before the first run" not in text
    assert record.read_text() == '{"hash": "abc", "ti'


def test_runner_killed_while_its_worker_starts_leaves_no_process_and_no_false_error(grid):
    """SIGKILL of the runner while its worker is still importing (before it could arm its
    parent-death signal): the worker exits instead of taking the run; no error.json is written."""
    path, r = grid
    shutil.rmtree(execute.run_dir(r["e_base"]))  # one run to do
    proc = subprocess.Popen([sys.executable, "-m", "xfer.runner", "run", str(path)], cwd=root(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, kids = time.time() + 120, set()
    while time.time() < deadline and not kids:
        kids = {k for k in descendants(proc.pid) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()}
        time.sleep(0.05)
    assert kids, "the runner started no worker"
    everyone = descendants(proc.pid)
    proc.kill()
    proc.wait()
    assert gone_within(everyone, 30) == set()
    folder = execute.run_dir(r["e_base"])
    assert not (folder / "error.json").exists() and not (folder / "metrics.json").exists()


def test_long_evaluation_sentence_is_scored_in_windows(data, tmp_path):
    """A 20,000-word sentence in a real UD-POS file (its Yoruba words repeated): scored in windows
    of at most the model's length, every word read (none scored as 'not encoded')."""
    from xfer.config import ModelConfig
    from xfer.models import build_scratch, load_tokenizer
    from xfer.tasks import get_task
    from xfer.tasks.tagging import read_conll

    task = get_task("udpos")
    real = (data / "xtreme" / "udpos" / "test-yo.tsv").read_text()
    words = [line for line in real.splitlines() if line.strip()]
    long_file = tmp_path / "test-yo.tsv"
    long_file.write_text(real.rstrip("\n") + "\n\n" + "\n".join(words[i % len(words)] for i in range(20_000)) + "\n")
    examples = read_conll(long_file, labels=task.labels)
    assert len(examples[-1]["tokens"]) == 20_000
    model_dir = build_scratch(ModelConfig(source="scratch", name="t", scratch={
        "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}), tmp_path / "m")
    tokenizer = load_tokenizer(model_dir)
    pieces, spans = task.windows(examples, tokenizer, 512)
    cut = [p for p, (i, _) in zip(pieces, spans) if i == len(examples) - 1]
    assert len(cut) > 20 and [w for p in cut for w in p["tokens"]] == examples[-1]["tokens"]
    assert max(len(tokenizer(p["tokens"], is_split_into_words=True)["input_ids"]) for p in cut) <= 512
    scores = task.evaluate(task.build_model(model_dir), examples[-3:], tokenizer, 512, 64)
    assert scores["words_not_encoded"] == 0 and scores["sentences_in_windows"] == 1  # 19,761+ unread before
    assert scores["tokens"] == sum(len(ex["tokens"]) for ex in examples[-3:])


def test_words_not_encoded_reach_terminal_table_and_report(grid, tmp_path, capfd):
    """Words a model never read (here recorded by hand in a real finished run: a word of nothing
    but zero-width characters gets no subword) show in the run's terminal line, results.csv, the
    per-language table and a warning on the report's first page."""
    from xfer import analysis, report

    path, r = grid
    with execute.RunLog(tmp_path / "run") as log:
        log.write("yo: f1 3.3 (n=20, 19761 words not encoded)\nen: f1 40.0 (n=20)\n")
    out = capfd.readouterr().out
    assert "run f1: yo 3.3 (19761 words not encoded), en 40.0" in out
    assert "19761 words not encoded" in (tmp_path / "run" / "log.txt").read_text()
    m = execute.run_dir(r["e_base"]) / "metrics.json"
    metrics = json.loads(m.read_text())
    metrics["scores"]["yo"]["words_not_encoded"] = 7
    m.write_text(json.dumps(metrics))
    (m.parent / ".verified.json").unlink(missing_ok=True)
    out_dir = collect.collect(plan.plan(path))
    results, grid_json = analysis.load_results(out_dir)
    assert sorted(results.loc[results["eval_lang"] == "yo", "words_not_encoded"]) == [0, 7]
    deg = analysis.degradation(results)
    table = analysis.per_language_table(deg, "joshi_le2")
    unread = table["words not encoded (most in a run)"]
    assert unread.loc[("udpos", "yo")] == 7 and unread.loc[("udpos", "en")] == 0
    assert "udpos yo (7)" in report.header(grid_json, deg, "joshi_le2", out_dir)


def one_error_line(proc) -> str:
    """The single `error:` line of a finished command, after checking there is no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stdout + proc.stderr
    return errors[0]


def xfer(args, env=None, prefix=(), **kw):
    return subprocess.run([*prefix, sys.executable, "-m", "xfer.runner", *args], cwd=root(), capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600, **kw)


def test_bad_settings_stop_at_once_in_one_line(grid, tmp_path, capsys, monkeypatch):
    """A setting from the environment, an overlong folder name and a grid too large to plan:
    one line naming the setting and what is allowed, exit 2, before any data is read. In this
    process (`runner.main`, as the `xfer` command calls it): what is checked is the message, not
    the process."""
    path, _ = grid

    def xfer_plan(*args, env=None):
        with monkeypatch.context() as mp:
            for k, v in (env or {}).items():
                mp.setenv(k, v)
            code = runner.main(["plan", str(path), *args])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    bad = xfer_plan(env={"XFER_LOCK_TIMEOUT": "abc"})
    assert bad.returncode == 2 and "XFER_LOCK_TIMEOUT='abc' is not a number" in one_error_line(bad)
    bad = xfer_plan("--set", f"report_dir={tmp_path / ('r' * 300)}")
    assert bad.returncode == 2 and "is 300 bytes long; allowed: names of at most 255" in one_error_line(bad)
    t0 = time.time()
    bad = xfer_plan("--set", f"seeds=[{', '.join(map(str, range(1, 10_001)))}]")
    assert bad.returncode == 2 and "runs (10000 seeds); allowed: at most 20,000" in one_error_line(bad)
    assert time.time() - t0 < 60  # the parse of 10,000 seeds; 12 min before


def without_dac(cmd: str) -> list[str]:
    """`cmd` as root without the capabilities that ignore file permissions (as an ordinary user)."""
    return ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search",
            "sh", "-c", cmd]


@pytest.fixture
def no_dac():
    if shutil.which("setpriv") is None or subprocess.run(without_dac("true")).returncode:
        pytest.skip("setpriv cannot drop the file-permission capabilities here")
    if os.getuid() != 0:
        pytest.skip("runs as root without DAC override; as an ordinary user the permissions apply anyway")


def test_permission_faults_stop_in_one_line(grid, data, tmp_path, no_dac):
    """An unreadable data file and a folder in a data file's place stop `plan` with one line and
    exit 2; a runs folder whose locks cannot be made stops `run` with one line naming the lock."""
    path, r = grid
    private = tmp_path / "data"
    subprocess.run(["cp", "-rs", str(data), str(private)], check=True)  # links to the real files
    yo = private / "xtreme" / "udpos" / "test-yo.tsv"
    yo.unlink()
    shutil.copyfile(data / "xtreme" / "udpos" / "test-yo.tsv", yo)
    yo.chmod(0)
    cmd = f"{sys.executable} -m xfer.runner plan {path}"
    bad = subprocess.run(without_dac(cmd), cwd=root(), capture_output=True, text=True,
                         env={**os.environ, "XFER_DATA_DIR": str(private)})
    line = one_error_line(bad)
    assert bad.returncode == 2 and f"{yo}: Permission denied; allowed: a readable file" in line, line
    yo.unlink()
    yo.mkdir()
    bad = xfer(["plan", str(path)], {"XFER_DATA_DIR": str(private)})
    line = one_error_line(bad)
    assert bad.returncode == 2 and f"{yo}: Is a directory" in line, line

    folder = execute.run_dir(r["e_base"])
    shutil.rmtree(folder)  # one run to do, in a folder this user cannot write (its old lock file still there)
    evaluate = folder.parent
    evaluate.chmod(0o555)
    try:
        run = without_dac(f"{sys.executable} -m xfer.runner run {path}")
        bad = subprocess.run(run, cwd=root(), capture_output=True, text=True)
        line = one_error_line(bad)
        assert bad.returncode == 1 and f"cannot be written to {folder} (Permission denied); the grid stops" in line
        (evaluate / f".{folder.name}.lock").unlink()  # as `chattr +i`: not even a lock can be made there
        bad = subprocess.run(run, cwd=root(), capture_output=True, text=True)
    finally:
        evaluate.chmod(0o755)
    line = one_error_line(bad)
    assert bad.returncode == 1 and f"{evaluate}/.{folder.name}.lock: cannot take the run's lock (Permission denied)" \
        in line, line
    assert not folder.exists() and execute.is_done(r["e_inter"])  # nothing else of the grid touched


def test_a_file_or_an_outside_link_in_place_of_a_run_folder_is_moved_aside(grid, baseline, tmp_path, capfd):
    """A plain file where a run folder should be, and a run folder that is a link to a folder
    outside the runs folder: each is moved aside (kept) and its run redone inside; nothing is
    written outside, and recorded paths stay relative."""
    path, r = grid
    e_base, t_inter = execute.run_dir(r["e_base"]), execute.run_dir(r["t_inter"])
    shutil.rmtree(e_base)
    e_base.write_text("not a folder")
    outside = tmp_path / "elsewhere"
    shutil.move(t_inter, outside)
    t_inter.symlink_to(outside)
    shutil.rmtree(execute.run_dir(r["e_inter"]))  # its evaluation still to do: it would read the link
    before = sorted(p.name for p in outside.rglob("*"))
    assert local.run_grid(plan.plan(path)) == {"done": 3, "ran": 3, "failed": 0, "skipped": 0}
    out = capfd.readouterr().out
    assert f"{e_base}: not a folder" in out and f"{t_inter}: a link to {outside}, outside the runs folder" in out
    assert e_base.is_dir() and t_inter.is_dir() and not t_inter.is_symlink()
    assert sorted(p.name for p in outside.rglob("*")) == before
    recorded = json.loads((execute.run_dir(r["e_inter"]) / "params.json").read_text())["upstream_checkpoint"]
    assert recorded == f"target/{r['t_inter'].id}/checkpoint"
    assert (collect.collect(plan.plan(path)) / "results.csv").read_bytes() == baseline[1]


def test_reports_at_once_from_a_read_only_runs_folder_and_a_kill_while_printing(grid, tmp_path):
    """Two `all` at once on a finished grid whose runs folder is a read-only mount (a published
    copy), with a training state left beside a done run and the pre-registration record damaged:
    both exit 0 (no shared temp folder), the report is rendered, its first page says the record is
    unusable. Then a render killed (-9) while chromium prints leaves the last good PDF and HTML in
    place and no chromium process; its temp folder lies in the report folder, and the next render
    clears it. The killed one renders the executed report notebook (`publish.render`, the last step
    of `xfer report`). Without user namespaces the two run on the writable folder."""
    from xfer import publish

    path, r = grid
    runs = execute.run_dir(r["pre"]).parent.parent
    (execute.run_dir(r["inter"]) / "train_state.pt").write_bytes(b"left by a kill")
    record = next((runs / ".preregistration").iterdir())
    record.write_text("{")
    read_only = shutil.which("unshare") is not None and subprocess.run(["unshare", "-rm", "true"]).returncode == 0
    both = "".join(f"({sys.executable} -m xfer.runner all {path} >{tmp_path}/stdout{i} 2>{tmp_path}/stderr{i}; "
                   f"echo $? >{tmp_path}/rc{i}) &\n" for i in (1, 2))
    script = (f"mount --bind {runs} {runs} && mount -o remount,ro,bind {runs} || exit 99\n"
              f"touch {runs}/probe 2>/dev/null && exit 98\n" if read_only else "") + both + "wait\n"
    subprocess.run(["unshare", "-rm", "sh", "-c", script] if read_only else ["sh", "-c", script], cwd=root(),
                   check=True, timeout=900)
    for i in (1, 2):
        stderr = (tmp_path / f"stderr{i}").read_text()
        assert (tmp_path / f"rc{i}").read_text().strip() == "0" and "Traceback" not in stderr, stderr
    out = tmp_path / "report"
    assert "no usable record" in (out / "index.html").read_text()
    assert not list(out.glob(".runs.partial*")) and not list(out.glob(".pdf-*"))
    if read_only:
        assert (execute.run_dir(r["inter"]) / "train_state.pt").exists()  # untouched: it could not be removed
    if publish._chromium()[1]:
        return  # no chromium here to print the PDF
    pdf, index = (out / "report.pdf").read_bytes(), (out / "index.html").read_bytes()
    assert pdf.startswith(b"%PDF")
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True).stdout
        assert "no usable record" in " ".join(text.split())

    render = "import sys; from pathlib import Path; from xfer import publish; publish.render(*map(Path, sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", render, str(out / "report.ipynb"), str(out)], cwd=root(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, printing = time.time() + 600, set()
    while time.time() < deadline and not printing and proc.poll() is None:
        printing = {k for k in descendants(proc.pid) if str(out / ".pdf-") in Path(f"/proc/{k}/cmdline").read_text()}
        time.sleep(0.05)
    assert printing, "chromium never started"
    group = os.getpgid(next(iter(printing)))
    assert group != os.getpgid(proc.pid)  # a process group of its own
    everyone = descendants(proc.pid)
    proc.kill()
    proc.wait()
    assert gone_within(everyone, 30) == set()
    assert (out / "report.pdf").read_bytes() == pdf and (out / "index.html").read_bytes() == index
    assert [p.name for p in out.glob(".pdf-*")] == [f".pdf-{proc.pid}"]  # in the report folder, not in /tmp
    publish.render(out / "report.ipynb", out)  # the next render clears what the killed one left
    assert not list(out.glob(".pdf-*")) and (out / "report.pdf").read_bytes().startswith(b"%PDF")


def test_plan_names_the_longest_evaluation_sentence_per_file(grid, data):
    """`make plan` prints, per tagging evaluation file, its longest scored sentence in subwords,
    and names each file with a sentence over the model's window (a small window here, so the real
    files have some)."""
    path, r = grid
    planned = plan.plan(path)
    runs = planned.runs
    lines = runner.longest_sentences(runs).splitlines()
    assert lines[0].startswith("  longest udpos test sentence in subwords: en ") and " yo " in lines[0]
    longest = {kv.split()[0]: int(kv.split()[1]) for kv in lines[0].split(": ", 1)[1].split(", ")}
    window = min(longest.values())  # at least one file is over it, unless all are equal
    over = runner.longest_sentences(runs, window).splitlines()[1:]
    assert over and all(f"over the {window}-subword window: scored in windows" in line for line in over)
    assert {Path(line.split(":")[0].strip()).name for line in over} == {
        f"test-{lang}.tsv" for lang, n in longest.items() if n > window}
