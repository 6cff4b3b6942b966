"""Faults a careful user or a flaky cluster meets, injected into a finished micro grid (issue 11,
runtime half): every corrupt artefact is found, moved aside and rerun to byte-identical results;
a diverged run fails loudly, stops its downstream and makes the exit code non-zero; a full disk
(a real tmpfs) stops the grid in one line with nothing half-written; a copied or moved runs
folder is complete without recomputing; a second worker waits for an upstream another one holds.

One finished grid is shared (module fixture); each test works on its own copy of its runs folder."""

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import MICRO
from xfer import runner
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
    return {r.id: os.stat(runner.run_dir(r) / "metrics.json").st_mtime_ns for rs in runs.values() for r in rs}


@pytest.fixture(autouse=True, scope="module")
def output_in_tmp(tmp_path_factory):
    """These grids write their reports in pytest's folders, outside the project: allow that."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XFER_OUTPUT", str(tmp_path_factory.getbasetemp()))
        yield


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, data):
    """The micro grid run once, undisturbed: its runs folder and its results.csv bytes."""
    folder = tmp_path_factory.mktemp("baseline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XFER_RUNS", str(folder / "runs"))
        path = micro(folder)
        counts = runner.run_grid(path)
        assert counts == {"done": 0, "ran": 6, "failed": 0, "skipped": 0}
        results = (runner.collect(path) / "results.csv").read_bytes()
    return folder / "runs", results


@pytest.fixture
def grid(baseline, tmp_path, monkeypatch):
    """A private copy of the finished grid (mtimes kept): its params file and its runs by role."""
    shutil.copytree(baseline[0], tmp_path / "runs")
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs"))
    path = micro(tmp_path)
    return path, roles(runner.plan(path)[1])


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
    d = {k: runner.run_dir(run) for k, run in r.items()}
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
    assert runner.is_done(r["pre"]) and not runner.is_done(r["pre"], full=True)
    counts = runner.run_grid(path)
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
    assert (runner.collect(path) / "results.csv").read_bytes() == baseline[1]


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
    r = roles(runner.plan(path)[1])
    for role in ("inter", "t_base"):  # the baseline target still ran after the intermediate failed
        folder = runner.run_dir(r[role])
        error = json.loads((folder / "error.json").read_text())["error"]
        assert "FloatingPointError: training diverged at step 1/4: loss nan" in error, error
        assert "diverged at step 1/4" in (folder / "notebook.ipynb").read_text()  # with its traceback
        assert not (folder / "metrics.json").exists() and not runner.is_done(r[role])
    for role in ("t_inter", "e_base", "e_inter"):  # downstream of a failure: not started
        assert not runner.run_dir(r[role]).exists(), role
    failures = {f["run_id"]: f["error"] for f in json.loads((runner.collect(path) / "grid.json").read_text())["failures"]}
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
    assert f"{disk}/runs/intermediate/" in errors[0] and "No space left on device" in errors[0]
    assert "MiB free there); the grid stops" in errors[0]
    inter = [p for p in (after / "intermediate").iterdir() if p.is_dir()]
    # no params, no error record, no notebook: only the run's log, which could not get a byte either
    assert len(inter) == 1 and [p.name for p in inter[0].iterdir()] in ([], ["log.txt"])

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
        grid, runs_ = runner.plan(path)
        before = metrics_mtimes(runs_)
        assert runner.run_grid(path) == {"done": 6, "ran": 0, "failed": 0, "skipped": 0}
        assert metrics_mtimes(runs_) == before  # nothing recomputed
        r = roles(runs_)
        for role in ("pre", "inter", "t_inter", "t_base"):
            assert runner.checkpoint(r[role]) == str(runner.run_dir(r[role]) / "checkpoint")
        assert (runner.collect(path) / "results.csv").read_bytes() == results
    # a record written before paths were relative (absolute checkpoint, no artefacts) still counts
    # as done, and is read from this runs folder, not from where it was written
    m = runner.run_dir(r["inter"]) / "metrics.json"
    legacy = {k: v for k, v in json.loads(m.read_text()).items() if k != "artefacts"}
    legacy["checkpoint"] = str(tmp_path / "gone" / "intermediate" / r["inter"].id / "checkpoint")
    m.write_text(json.dumps(legacy))
    assert runner.is_done(r["inter"]) and runner.checkpoint(r["inter"]) == str(runner.run_dir(r["inter"]) / "checkpoint")


HOLD = """
import shutil, sys
from pathlib import Path
from xfer.runner import Lock
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
    t, e = runner.run_dir(r["t_inter"]), runner.run_dir(r["e_inter"])
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
    assert (runner.collect(path) / "results.csv").read_bytes() == baseline[1]


def test_a_kill_between_metrics_and_state_cleanup_leaves_a_done_run(grid):
    """train_state.pt goes only after metrics.json is written: a run killed in between is done
    (not retrained from step 0), and the rerun removes the leftover state."""
    path, r = grid
    state = runner.run_dir(r["inter"]) / "train_state.pt"
    state.write_bytes(b"left by a kill")
    assert runner.run_grid(path) == {"done": 6, "ran": 0, "failed": 0, "skipped": 0}
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
    folder = runner.run_dir(r["inter"])
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(tmp_path / "unused")], cwd=root(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    assert not runner.Lock(folder).acquire()
    holder.kill()
    holder.wait()
    lock = runner.Lock(folder)
    assert lock.acquire()
    lock.release()
