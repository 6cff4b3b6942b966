import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from xfer.config import ModelConfig
from xfer.loop import set_threads
from xfer.models import build_scratch, load_tokenizer
from xfer.paths import data_dir, root


# one torch thread per run everywhere in the suite: two xdist workers share the cores already, and a
# rerun's weights equal the first run's only at the same thread count (the session's grid runs -j 2)
os.environ["XFER_THREADS"] = "1"
set_threads()  # and in the test processes themselves: two torch threads per worker spin on the other's core

# what runs first (two xdist workers): longest first, so neither worker ends with a long test alone
HEAVY = ("test_install.py", "test_slurm.py", "test_study.py")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite on two xdist workers (`--dist loadgroup`): the tests that share the
    session's finished micro grid go to one worker, so the grid runs once; the installs and Slurm
    clusters (minutes each, mostly waiting) start first, then every other real grid."""
    for item in items:
        if "finished_micro" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("finished_micro"))

    def weight(item):
        names = getattr(item, "fixturenames", ())
        return (0 if item.path.name in HEAVY else 1 if "finished_micro" in names
                else 2 if "micro_grid" in names else 3)

    items.sort(key=weight)  # stable: collection order within each weight


@pytest.fixture(scope="session")
def data():
    """The real benchmark files (the Makefile unpacks ../shared/data into data/raw)."""
    folder = data_dir()
    if folder is None:
        pytest.fail("no data folder: run `make data` or set XFER_DATA_DIR to the unpacked ../shared/data")
    return folder


MICRO = """
name: micro
report_dir: {report}
seeds: [1]
executor: {{jobs: 1}}  # one worker: the suite runs two xdist workers already; a test of several says -j
model:
  source: scratch
  name: tiny
  scratch: {{hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}}
  trim_vocab: true
intermediate:
  task: panx
  languages: [sw]
  sizes: [0, 60]
  train: {{lr: 1.0e-3, batch_size: 16, max_steps: {steps}, max_length: 48, save_every: 2}}
target:
  task: udpos
  language: en
  size: 80
  train: {{lr: 1.0e-3, batch_size: 16, max_steps: 4, max_length: 48, save_every: 2}}
evaluate:
  languages: [en, yo, wo]
  max_examples: 20
"""


@pytest.fixture
def micro_grid(tmp_path, monkeypatch, data):
    """A five-run grid in a private runs folder, for end-to-end runner tests."""
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("XFER_OUTPUT", str(tmp_path))  # its report_dir lies there, outside the project

    def make(steps=4, name="micro.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(MICRO.format(report=tmp_path / "report", steps=steps)))
        return path

    return make


@pytest.fixture(scope="session")
def finished_micro(tmp_path_factory, data):
    """The micro grid run once for the whole session, as a user runs it: `xfer run -j 2` in a process
    of its own, a real papermill grid (two workers, warm kernels). Its folder, params file, runs
    folder and terminal output; tests/test_runner.py checks this run, and tests that change runs
    work on a copy of its runs folder (tests/test_faults.py)."""
    folder = tmp_path_factory.mktemp("finished-micro")
    path = folder / "micro.yaml"
    path.write_text(textwrap.dedent(MICRO.format(report=folder / "report", steps=4)))
    env = dict(os.environ)
    env.update(XFER_RUNS=str(folder / "runs"), XFER_OUTPUT=str(folder))
    proc = subprocess.run([sys.executable, "-m", "xfer.runner", "run", str(path), "-j", "2"], cwd=root(), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout
    return SimpleNamespace(folder=folder, path=path, runs=folder / "runs", stdout=proc.stdout)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A tiny random encoder with the real XLM-R tokenizer."""
    folder = build_scratch(ModelConfig(source="scratch", name="t"), tmp_path_factory.mktemp("m"))
    return folder, load_tokenizer(folder)

