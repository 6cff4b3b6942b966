"""The phase notebooks run as a user opens them in JupyterLab: no injected parameters, cwd the
notebooks folder, 01 -> 02 -> 03 in order on the defaults (the first grid point of smoke.yaml)."""

import json

import papermill as pm

from xfer.paths import root


def test_phase_notebooks_run_with_their_defaults(tmp_path, monkeypatch, data):
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs"))
    for name in ("01_intermediate", "02_target", "03_evaluate"):
        pm.execute_notebook(str(root() / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                            kernel_name="python3", cwd=str(root() / "notebooks"), progress_bar=False)
    scratch = tmp_path / "runs" / "interactive"
    assert (scratch / "intermediate" / "checkpoint").is_dir() and (scratch / "target" / "checkpoint").is_dir()
    scores = json.loads((scratch / "evaluate" / "metrics.json").read_text())["scores"]
    assert {"en", "yo", "wo"} <= set(scores) and all(0 <= s["score"] <= 100 for s in scores.values())
    # 02 started from the encoder 01 left, not from the pretrained one
    nb = json.loads((tmp_path / "02_target.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    assert "starting from" in printed and "interactive/intermediate/checkpoint" in printed


def test_notebooks_open_unmodified_with_the_installed_kernel():
    """JupyterLab marks a notebook modified when its stored kernelspec differs from the kernel it
    starts: each notebook names the installed `python3` kernel exactly; the report notebook opened
    by hand shows the default preset's report (the Makefile's PARAMS)."""
    import re

    import nbformat
    import yaml
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    for path in sorted((root() / "notebooks").glob("*.ipynb")):
        stored = nbformat.read(path, as_version=4).metadata["kernelspec"]
        assert stored == {"name": "python3", "display_name": spec.display_name, "language": spec.language}, path
    default = re.search(r"^PARAMS \?= (\S+)", (root() / "Makefile").read_text(), re.M).group(1)
    report_dir = yaml.safe_load((root() / default).read_text())["report_dir"]
    cell = nbformat.read(root() / "notebooks" / "04_report.ipynb", as_version=4).cells[0]
    assert "parameters" in cell.metadata["tags"] and f'results_dir: str = "{report_dir}"' in cell.source
