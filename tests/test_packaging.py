"""The package installs as declared and its three dependency files agree; the notebooks are what
papermill and git expect (typed, documented parameters; no outputs committed)."""

import json
import re
import tomllib

import papermill as pm
import yaml

from xfer.paths import root


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, sep, version = line.partition("==")
            assert sep, f"not pinned exactly: {line!r}"
            out[_name(name)] = version
    return out


def test_environment_yml_pins_equal_requirements():
    reqs = _pins((root() / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((root() / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip) == reqs
    assert "-e ." in pip, "environment.yml installs xfer itself, as make setup does"
    assert not any(isinstance(d, str) and _name(d) in reqs for d in env["dependencies"]), \
        "a package pinned in requirements.txt also comes from a conda channel"


def test_pyproject_declares_every_pinned_package_and_the_console_script():
    meta = tomllib.loads((root() / "pyproject.toml").read_text())["project"]
    declared = {_name(d) for d in meta["dependencies"]}
    extras = {_name(d) for ds in meta["optional-dependencies"].values() for d in ds}
    pinned = set(_pins((root() / "requirements.txt").read_text().splitlines()))
    assert declared <= pinned, f"declared but not pinned: {declared - pinned}"
    assert pinned <= declared | extras, f"pinned but not declared: {pinned - declared - extras}"
    assert meta["scripts"]["xfer"] == "xfer.runner:main"


def test_notebooks_carry_no_outputs():
    for path in sorted((root() / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} has outputs"
    assert "filter=nbstripout" in (root() / ".gitattributes").read_text()


def test_papermill_infers_every_parameter_with_type_and_help():
    for path in sorted((root() / "notebooks").glob("*.ipynb")):
        params = pm.inspect_notebook(str(path))
        assert params, f"papermill infers no parameter in {path.name}"
        for name, p in params.items():
            assert p["inferred_type_name"] != "None" and p["help"], f"{path.name}: {name} has no type or help"


def test_make_uses_an_active_conda_environment_and_leaves_it_as_it_is():
    """`conda activate xfer && make report` runs in that environment (checked, never installed
    into), not in a .venv of its own; with base or no conda environment, the .venv."""
    import os
    import subprocess

    def dry(**env) -> str:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONDA")}
        return subprocess.run(["make", "-n", "report", "XFER_DATA_DIR=/nowhere"], cwd=root(), env={**base, **env},
                              capture_output=True, text=True, check=True).stdout

    conda = dry(CONDA_DEFAULT_ENV="xfer", CONDA_PREFIX="/opt/conda/envs/xfer")
    assert "/opt/conda/envs/xfer/bin/python -m xfer.runner all" in conda
    assert "venv" not in conda.replace("to use .venv", "") and "pip install" not in conda
    for plain in (dry(), dry(CONDA_DEFAULT_ENV="base", CONDA_PREFIX="/opt/conda")):
        assert ".venv/bin/python -m xfer.runner all" in plain and "/opt/conda" not in plain
