"""The project folder is the user's, the package is read-only: `xfer init` writes a starting
project, a preset is found by its name from any folder, and root() picks the folder a user works in."""

import subprocess

import pytest

from xfer.config import ConfigError, load_grid, params_path
from xfer.paths import PACKAGE, checkout, package_file, root
from xfer.project import init
from xfer.runner import main

SHIPPED = sorted(p.name for p in package_file("params").glob("*.yaml"))


def test_notebooks_and_presets_ship_inside_the_package():
    assert {"cpu.yaml", "smoke.yaml", "study.yaml"} <= set(SHIPPED)
    assert sorted(p.name for p in package_file("notebooks").glob("*.ipynb")) == [
        "01_intermediate.ipynb", "02_target.ipynb", "03_evaluate.ipynb", "04_report.ipynb"]
    # a checkout's top-level folders are the same files, not copies that could drift
    assert (checkout() / "notebooks").resolve() == package_file("notebooks").resolve()
    assert (checkout() / "params").resolve() == package_file("params").resolve()


def test_init_writes_a_project_and_keeps_what_is_there(tmp_path, capsys):
    project = tmp_path / "study"
    assert init(project) == 0
    assert sorted(p.name for p in (project / "params").iterdir()) == SHIPPED
    assert (project / "params" / "cpu.yaml").read_text() == package_file("params", "cpu.yaml").read_text()
    assert "xfer plan cpu" in (project / "README.md").read_text()
    make = subprocess.run(["make", "-n", "-C", str(project), "report", "plan", "PARAMS=smoke"], capture_output=True,
                          text=True, check=True).stdout.splitlines()
    assert [f'xfer all "smoke" --root "{project}"', f'xfer plan "smoke" --root "{project}"'] == \
        [line for line in make if line.startswith("xfer")]
    assert "runs/" in (project / ".gitignore").read_text()
    assert f"wrote {len(SHIPPED) + 3} files\n" in capsys.readouterr().out
    (project / "params" / "cpu.yaml").write_text("name: mine\n")
    (project / "params" / "smoke.yaml").unlink()
    assert main(["init", str(project)]) == 0
    assert (project / "params" / "cpu.yaml").read_text() == "name: mine\n"  # the user's edit stays
    assert (project / "params" / "smoke.yaml").exists()
    assert f"wrote 1 files, kept {len(SHIPPED) + 2} already there" in capsys.readouterr().out
    assert not list(project.rglob(".*.tmp"))


def test_init_refuses_the_package_folder(capsys):
    assert init(PACKAGE / "params") == 2
    assert f"inside the xfer package ({PACKAGE})" in capsys.readouterr().err


def test_a_preset_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XFER_ROOT", str(tmp_path))
    shipped = package_file("params", "cpu.yaml")
    assert params_path("cpu") == params_path("cpu.yaml") == params_path("params/cpu.yaml") == shipped
    assert load_grid("demo_quick").name == "demo_quick"  # its `extends: demo.yaml` is found beside it
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "cpu.yaml").write_text("name: mine\n")
    assert params_path("cpu") == tmp_path / "params" / "cpu.yaml"  # the project's own copy wins
    with pytest.raises(ConfigError, match=r"params file nosuch does not exist; allowed: a YAML file, or a preset: "
                                          r"answer, cpu, demo, demo_quick, gpu, paper, smoke, study, tasks, template$"):
        load_grid("nosuch")


def test_root_is_the_folder_the_user_works_in(tmp_path, monkeypatch):
    monkeypatch.delenv("XFER_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert root() == checkout()  # a checkout (this test's) keeps its own folder, as before
    (tmp_path / "params").mkdir()
    assert root() == tmp_path  # a project folder: the one with params/
    monkeypatch.chdir(package_file("params").parent)
    assert root() == checkout()  # never the package itself, though it holds params/
    monkeypatch.setenv("XFER_ROOT", str(tmp_path / "elsewhere"))
    assert root() == tmp_path / "elsewhere"


def test_root_option_must_name_a_folder(tmp_path, capsys):
    assert main(["plan", "smoke", "--root", str(tmp_path / "no")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --root: {tmp_path / 'no'} is not a folder; allowed: an existing project folder (`xfer init DIR` writes one)"]
    with pytest.raises(SystemExit, match="2"):
        main(["plan"])
    assert "the following arguments are required: params" in capsys.readouterr().err
