"""Warm kernels (xfer.kernel): a notebook run in a kernel forked from the preloaded server gives
what a fresh kernel gives, in the environment, folder and log the worker handed it."""

import os

import nbformat
import papermill as pm

from xfer import kernel

CELLS = [
    "import os, sys\nwarm = 'torch' in sys.modules  # preloaded by the server, or not yet imported\n"
    "print(os.getcwd(), os.environ.get('XFER_KERNEL_TEST'), os.getpid() != int(os.environ['WORKER']))",
    "os.write(2, b'kernel fd 2: ' + os.environ['XFER_KERNEL_TEST'].encode() + b'\\n')",
    "import torch\ntorch.manual_seed(0)\nprint([round(x, 6) for x in torch.randn(3).tolist()])",
    "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
    "warm",
]


def _run(tmp_path, name, **kw):
    out = tmp_path / f"{name}.ipynb"
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(out), kernel_name="python3", cwd=str(tmp_path),
                        progress_bar=False, **kw)
    return nbformat.read(out, as_version=4)


def _outputs(nb):
    """Each cell's outputs, with what differs between any two kernels (counts, figure bytes) left out."""
    return [[(o.output_type, o.get("text") or sorted(o.get("data", {}))) for o in c.outputs] for c in nb.cells[:-1]]


def test_a_warm_kernel_runs_a_notebook_as_a_fresh_one_does(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    monkeypatch.setenv("WORKER", str(os.getpid()))
    log = tmp_path / "log.txt"
    saved = os.dup(2)
    try:
        with open(log, "a") as f:  # as RunLog does: the worker's stderr is the run's log
            os.dup2(f.fileno(), 2)
            monkeypatch.setenv("XFER_KERNEL_TEST", "cold")
            cold = _run(tmp_path, "cold")
            runs = []
            for i in range(2):  # the first starts the server, the second is a plain fork
                monkeypatch.setenv("XFER_KERNEL_TEST", f"warm{i}")  # set after the server started: still seen
                runs.append(_run(tmp_path, f"warm{i}", kernel_manager_class=kernel.WarmKernelManager))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    assert cold.cells[-1].outputs[0]["data"]["text/plain"] == "False"  # a fresh kernel imports torch itself
    for i, warm in enumerate(runs):
        assert warm.cells[-1].outputs[0]["data"]["text/plain"] == "True"  # forked with torch already in
        assert warm.cells[0].outputs[0]["text"] == f"{tmp_path} warm{i} True\n"
        assert _outputs(warm)[1:] == _outputs(cold)[1:]  # same numbers, an inline figure
    assert ("display_data", ["image/png", "text/plain"]) in _outputs(runs[1])[3]
    text = log.read_text()
    assert all(f"kernel fd 2: {name}\n" in text for name in ("cold", "warm0", "warm1")), text

